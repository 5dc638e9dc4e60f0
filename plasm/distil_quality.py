"""Inputs, quality report and CLI glue of `plasm distil`.

Unlabeled text: a text file (one per line), a Label Studio JSON export, a CSV column, or a live LS project. The
quality report follows the paper's Figure 3: fine-tune student, teacher and an unrelated model (default MPNet)
on the same small labeled set (1% of a labeled CSV, or the project's gold labels), score a pool sample with
least confidence, compare the Spearman correlations student~teacher and teacher~unrelated, and time the
student's and the teacher's scoring of the same sample. Fine-tuning and scoring reuse AcquisitionModel.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from albackend.examples import Example, gold_examples, is_labeled
from albackend.labelconfig import TaskSpec, parse_label_config
from albackend.models.acquisition import META_FILE, AcquisitionModel
from albackend.models.registry import ModelNotFound
from albackend.models.train import TrainConfig
from albackend.strategies import least_confident


# ---- CLI options ----------------------------------------------------------------------------------------
def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    """All options of `python -m plasm distil` (plasm.distil.add_arguments delegates here)."""
    p.add_argument("--teacher", default="minilm-l6", help="teacher: packaged name, local HF directory or hub id")
    p.add_argument("--out", required=True, help="output directory of the student")
    p.add_argument("--layers", default="", help="teacher layers to keep, e.g. 0,2,4 (default: --keep-every)")
    p.add_argument("--keep-every", type=int, default=2, help="keep teacher layers 0, k, 2k, ... (default 2)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (paper A.1: 5e-4)")
    p.add_argument("--warmup", type=float, default=0.05, help="linear warm-up, fraction of the steps")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=0, help="optimizer steps (overrides --epochs when > 0)")
    p.add_argument("--temperature", type=float, default=2.0, help="soft-target temperature (MLM teachers)")
    p.add_argument("--mlm-prob", type=float, default=0.15, help="masking rate (MLM teachers)")
    p.add_argument("--loss-weights", default="ce=1,mlm=1,cos=1,mse=1")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (0 = none)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep out/checkpoints after success")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out/checkpoints")
    p.add_argument("--stop-after", type=int, default=0, help="stop (checkpointed) after this many steps")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=os.environ.get("DEVICE", "auto"), choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default; 1 is much "
                   "faster than 2 on a CPU shared with other busy processes)")
    p.add_argument("--sync", action="store_true", help="run here with a progress bar instead of enqueuing on RQ")
    g = p.add_argument_group("unlabeled text (one source)")
    g.add_argument("--text-file", help="UTF-8 text file, one text per line")
    g.add_argument("--export", help="Label Studio JSON export; the texts are task data[--field]")
    g.add_argument("--field", help="task data field holding the text (default: from the label config, or 'text')")
    g.add_argument("--csv", help="CSV file; the texts are column --text-col")
    g.add_argument("--text-col", default="text", help="text column of --csv and --eval-csv")
    g.add_argument("--ls-project", help="Label Studio project id (URL and key from --ls-url/--ls-key or env)")
    g.add_argument("--ls-url", default=None, help="default: LABEL_STUDIO_URL")
    g.add_argument("--ls-key", default=None, help="default: LABEL_STUDIO_API_KEY (never logged)")
    g.add_argument("--max-texts", type=int, default=0, help="use a seeded random sample of this many texts")
    q = p.add_argument_group("quality report")
    q.add_argument("--eval-csv", help="labeled CSV (--text-col, --label-col) for the quality report")
    q.add_argument("--label-col", default="label")
    q.add_argument("--eval-fraction", type=float, default=0.01, help="labeled share used for fine-tuning")
    q.add_argument("--eval-size", type=int, default=0, help="labeled examples for fine-tuning (overrides fraction)")
    q.add_argument("--pool-size", type=int, default=2000, help="pool sample scored by every model")
    q.add_argument("--unrelated", default="mpnet", help="the unrelated comparison model ('none' to skip)")
    q.add_argument("--eval-epochs", type=int, default=5)
    q.add_argument("--eval-min-steps", type=int, default=60)
    q.add_argument("--eval-lr", type=float, default=1e-4)
    q.add_argument("--score-batch-size", type=int, default=64)
    q.add_argument("--noise-baseline", action="store_true",
                   help="also fine-tune the teacher with another seed: the teacher~teacher ceiling")
    q.add_argument("--no-quality", action="store_true", help="skip the quality report")
    q.add_argument("--quality-only", action="store_true", help="only (re)write the report of the student in --out")


def _shuffled(items: list, seed: int, limit: int) -> list:
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in (order[:limit] if limit > 0 else order)]


def _task_field(tasks: Sequence[dict], field: str | None) -> str:
    data = [t.get("data", t) for t in tasks if isinstance(t, dict)]
    if field or (data and all(isinstance(d.get("text"), str) for d in data[:100])):
        return field or "text"
    for key, value in (data[0] if data else {}).items():
        if isinstance(value, str):
            return key
    raise ValueError("cannot tell which task field holds the text: pass --field")


def _texts_of(tasks: Sequence[dict], field: str) -> list[str]:
    data = [t.get("data", t) if isinstance(t, dict) else {} for t in tasks]
    return [d[field] for d in data if isinstance(d, dict) and isinstance(d.get(field), str) and d[field].strip()]


def read_csv(path: str, text_col: str, label_col: str | None = None) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for col in (text_col, label_col):
            if col and col not in (reader.fieldnames or []):
                raise ValueError(f"{path} has no column {col!r} (columns: {reader.fieldnames})")
        rows = [r for r in reader if r[text_col] and r[text_col].strip()]
    return [r[text_col] for r in rows], [str(r[label_col]) if label_col else "" for r in rows]


def load_unlabeled(params: dict) -> tuple[list[str], str, dict]:
    """(texts, source description, LS context {tasks, spec} when the source is a project)."""
    given = [k for k in ("text_file", "export", "csv", "ls_project") if params.get(k)]
    if len(given) != 1:
        raise ValueError("give exactly one text source: --text-file, --export, --csv or --ls-project")
    seed, limit, ctx = int(params.get("seed", 42)), int(params.get("max_texts") or 0), {}
    if params.get("text_file"):
        texts = [ln.strip() for ln in Path(params["text_file"]).read_text(encoding="utf-8").splitlines()]
        source = f"text file {params['text_file']}"
    elif params.get("csv"):
        texts = read_csv(params["csv"], params.get("text_col") or "text")[0]
        source = f"csv {params['csv']} column {params.get('text_col') or 'text'}"
    elif params.get("export"):
        tasks = json.loads(Path(params["export"]).read_text(encoding="utf-8"))
        if not isinstance(tasks, list):
            raise ValueError(f"{params['export']} is not a Label Studio JSON export (a list of tasks)")
        field = _task_field(tasks, params.get("field"))
        texts, source = _texts_of(tasks, field), f"LS export {params['export']} field {field}"
    else:
        from albackend.lsclient import LabelStudioClient
        client = LabelStudioClient(params.get("ls_url") or os.environ.get("LABEL_STUDIO_URL", ""),
                                   params.get("ls_key") or os.environ.get("LABEL_STUDIO_API_KEY", ""))
        project = client.get_project(params["ls_project"])
        tasks = list(client.iter_tasks(params["ls_project"]))
        try:
            spec = parse_label_config(project.get("label_config") or "")
        except ValueError:
            spec = None
        field = params.get("field") or (spec.value_key if spec else None) or _task_field(tasks, None)
        texts, source = _texts_of(tasks, field), f"Label Studio project {params['ls_project']} field {field}"
        ctx = {"tasks": tasks, "spec": spec}
    texts = _shuffled([t for t in texts if t.strip()], seed, limit)
    return texts, source, ctx


def labeled_split(params: dict, ctx: dict):
    """(spec, train examples, pool texts, pool labels or None, description) or None when no labels exist."""
    seed, pool_size = int(params.get("seed", 42)), int(params.get("pool_size") or 2000)
    if params.get("eval_csv"):
        texts, labels = read_csv(params["eval_csv"], params.get("text_col") or "text", params.get("label_col"))
        names = sorted(set(labels))
        spec = TaskSpec("classification", "label", "text", "text", tuple(names))
        order = np.random.default_rng(seed).permutation(len(texts))
        n_train = int(params.get("eval_size") or 0) or max(len(names), round(params["eval_fraction"] * len(texts)))
        train = [Example(None, texts[i], [names.index(labels[i])]) for i in order[:n_train]]
        pool_idx = order[n_train:n_train + pool_size]
        return (spec, train, [texts[i] for i in pool_idx], [names.index(labels[i]) for i in pool_idx],
                f"{n_train} of {len(texts)} rows of {params['eval_csv']} (seed {seed})")
    spec = ctx.get("spec")
    if spec is not None and spec.kind == "classification" and not spec.multi_label:
        train, _ = gold_examples([t for t in ctx["tasks"] if is_labeled(t)], spec, 100000)
        if params.get("eval_size"):
            train = _shuffled(train, seed, int(params["eval_size"]))
        pool = _shuffled(_texts_of([t for t in ctx["tasks"] if not is_labeled(t)], spec.value_key), seed, pool_size)
        if train and pool:
            return spec, train, pool, None, f"{len(train)} gold labels of the Label Studio project"
    return None


# ---- the report ---------------------------------------------------------------------------------------
def rank_average(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of average ranks (ties share their mean rank); numpy only."""
    ra, rb = rank_average(np.asarray(a)), rank_average(np.asarray(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def quality_report(student: str, teacher: str, spec: TaskSpec, train: Sequence[Example], pool: Sequence[str],
                   *, pool_labels: Sequence[int] | None = None, unrelated: str | None = "mpnet",
                   train_cfg: TrainConfig = TrainConfig(), max_length: int = 128, batch_size: int = 64,
                   device: str = "auto", seed: int = 42, noise_baseline: bool = False, timing_repeats: int = 2,
                   on_progress: Callable[[dict], None] | None = None, progress: bool = False,
                   scores_path: str | Path | None = None) -> dict:
    runs = [("student", student, seed), ("teacher", teacher, seed)]
    if noise_baseline:
        runs.append(("teacher_reseeded", teacher, seed + 1))
    if unrelated and unrelated.lower() != "none":
        runs.append(("unrelated", unrelated, seed))
    lc, models, kept = {}, {}, {}
    for role, name, s in runs:
        if on_progress:
            on_progress({"stage": f"quality: fine-tune {role}", "model": name})
        try:
            m = AcquisitionModel.create(name, spec, device=device, max_length=max_length, seed=s)
        except ModelNotFound as exc:
            models[role] = {"model": name, "available": False, "reason": str(exc)}
            continue
        bar = tqdm(desc=f"fine-tune {role}", unit="step", disable=not progress, dynamic_ncols=True)
        stats = m.fit(train, dataclasses.replace(train_cfg, seed=s),
                      on_step=lambda i, n, loss: (setattr(bar, "total", n), bar.update(1)))
        bar.close()
        pred = m.predict(pool, batch_size=batch_size)
        lc[role] = least_confident(pred.probs)
        models[role] = {"model": name, "available": True, "seed": s,
                        "parameters": int(sum(p.numel() for p in m.model.parameters())),
                        "fit_seconds": round(stats["seconds"], 2), "fit_steps": stats["steps"],
                        "score_seconds": round(pred.seconds, 3)}
        if pool_labels is not None:
            models[role]["pool_accuracy"] = round(float(np.mean(pred.probs.argmax(1) == np.asarray(pool_labels))), 4)
        if role in ("student", "teacher"):
            kept[role] = m
        del m
        gc.collect()
    if scores_path:  # the raw LC scores, for further analysis (plots, other correlation measures)
        np.savez(scores_path, **{f"lc_{r}": v for r, v in lc.items()})
    speed = {}
    if {"student", "teacher"} <= kept.keys():  # interleave small chunks so CPU contention hits both alike
        chunk, spent = 4 * batch_size, {r: [] for r in kept}
        for _ in range(timing_repeats):
            for role in kept:
                spent[role].append(0.0)
            for i in range(0, len(pool), chunk):
                for role, m in kept.items():
                    spent[role][-1] += m.predict(pool[i:i + chunk], batch_size=batch_size).seconds
        best = {r: min(v) for r, v in spent.items()}
        speed = {f"{r}_texts_per_second": round(len(pool) / best[r], 1) for r in kept}
        speed.update({"speedup": round(best["teacher"] / best["student"], 2), "batch_size": batch_size,
                      "n_texts": len(pool), "timing": f"best of {timing_repeats} runs, interleaved in chunks "
                      f"of {chunk} texts", "runs_seconds": {r: [round(x, 2) for x in v] for r, v in spent.items()}})
    kept.clear()
    corr = {}
    for a, b in (("student", "teacher"), ("teacher", "unrelated"), ("student", "unrelated"),
                 ("teacher", "teacher_reseeded")):
        if a in lc and b in lc:
            corr[f"{a}~{b}"] = round(spearman(lc[a], lc[b]), 4)
    st, tu = corr.get("student~teacher"), corr.get("teacher~unrelated")
    if tu is None:
        verdict = f"unrelated model {unrelated!r} unavailable: no teacher~unrelated baseline"
    else:
        verdict = ("PASS: student~teacher > teacher~unrelated" if st > tu
                   else "FAIL: student~teacher <= teacher~unrelated")
    return {"spec_labels": list(spec.labels), "n_train": len(train), "n_pool": len(pool),
            "train_config": dataclasses.asdict(train_cfg), "models": models, "spearman_lc": corr,
            "speed": speed, "pair_wins": (st > tu) if tu is not None and st is not None else None,
            "verdict": verdict}


# ---- the whole run ------------------------------------------------------------------------------------
def config_from_params(params: dict):
    from plasm.distil import LOSSES, DistilConfig
    weights = {k: 1.0 for k in LOSSES}
    for part in str(params.get("loss_weights") or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            if k.strip() not in LOSSES:
                raise ValueError(f"unknown loss {k!r} in --loss-weights (known: {', '.join(LOSSES)})")
            weights[k.strip()] = float(v)
    known = {f.name for f in dataclasses.fields(DistilConfig)}
    kw = {k: v for k, v in params.items() if k in known and v is not None and k not in ("layers", "weights")}
    return DistilConfig(**kw, layers=[int(x) for x in str(params.get("layers") or "").split(",") if x.strip()]
                        or None, weights=weights)


def run(params: dict, *, on_progress: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Distil (unless --quality-only), then write quality.json next to the student; returns the report."""
    from plasm.distil import distil
    if int(params.get("threads") or 0) > 0:
        import torch
        torch.set_num_threads(int(params["threads"]))
    out = Path(params["out"])
    cfg = config_from_params(params)
    texts, source, ctx = ([], "", {}) if params.get("quality_only") and params.get("eval_csv") \
        else load_unlabeled(params)
    if params.get("quality_only"):
        report = json.loads((out / META_FILE).read_text())
    else:
        report = distil(texts, out, cfg, resume=bool(params.get("resume")),
                        stop_after=int(params.get("stop_after") or 0), progress=progress, source=source,
                        on_progress=on_progress)
        if not report.get("complete", True):
            return report
    t0 = time.perf_counter()
    if params.get("no_quality"):
        quality = {"skipped": "--no-quality"}
    else:
        split = labeled_split(params, ctx)
        if split is None:
            quality = {"skipped": "no labeled data: pass --eval-csv, or a project with classification gold labels"}
        else:
            spec, train, pool, pool_labels, desc = split
            tcfg = TrainConfig(epochs=int(params.get("eval_epochs") or 5), min_steps=int(params.get("eval_min_steps")
                               or 60), lr=float(params.get("eval_lr") or 1e-4), seed=cfg.seed)
            quality = quality_report(str(out), report["teacher"], spec, train, pool, pool_labels=pool_labels,
                                     unrelated=params.get("unrelated"), train_cfg=tcfg, max_length=cfg.max_length,
                                     batch_size=int(params.get("score_batch_size") or 64), device=cfg.device,
                                     seed=cfg.seed, noise_baseline=bool(params.get("noise_baseline")),
                                     on_progress=on_progress, progress=progress,
                                     scores_path=out / "quality_scores.npz")
            quality["labeled"] = desc
    quality["seconds"] = round(time.perf_counter() - t0, 2)
    quality["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (out / "quality.json").write_text(json.dumps(quality, indent=2))
    keys = ("spearman_lc", "speed", "verdict", "skipped", "seconds", "peak_rss_mb")
    report["quality"] = {k: quality[k] for k in keys if k in quality}
    (out / META_FILE).write_text(json.dumps(report, indent=2, default=str))
    report["complete"] = True
    return report


def print_summary(report: dict) -> None:
    if not report.get("complete", True):
        print(f"stopped at step {report['step']}/{report['total_steps']}; continue with --resume")
        return
    mem, losses, q = report.get("memory", {}), report["losses"], report.get("quality", {})
    print(f"student: {report['teacher']} layers {report['teacher_layers_kept']} of {report['teacher_num_layers']}"
          f" (MLM head: {'yes' if report['teacher_has_mlm_head'] else 'no'}), losses {'+'.join(losses['used'])}")
    if losses.get("note"):
        print(f"note: {losses['note']}")
    print(f"distilled on {report['distilled_on']['n_texts']} texts ({report['distilled_on']['source']}), "
          f"{report['steps']} steps in {report['train_seconds']:.0f} s on {report['device']}, peak RSS "
          f"{mem.get('peak_rss_mb')} MB" + (f", CUDA peak {mem['cuda_peak_allocated_mb']} MB" if len(mem) > 1 else ""))
    print("losses first -> last 20 steps: " + ", ".join(f"{k} {losses['first'].get(k, float('nan')):.4f} -> {v:.4f}"
                                                        for k, v in losses["final_mean_last_20"].items()))
    if q.get("skipped"):
        print(f"quality report skipped: {q['skipped']}")
        return
    for pair, rho in (q.get("spearman_lc") or {}).items():
        print(f"LC Spearman {pair}: {rho:.3f}")
    if q.get("speed"):
        sp = q["speed"]
        print(f"scoring: student {sp['student_texts_per_second']} texts/s, teacher {sp['teacher_texts_per_second']}"
              f" texts/s: speed-up x{sp['speedup']}")
    print(f"{q.get('verdict', '')} (quality report {q.get('seconds', 0):.0f} s, peak RSS {q.get('peak_rss_mb')} MB)")


# ---- job and CLI glue -----------------------------------------------------------------------------------
def run_job(params: dict) -> dict:
    """plasm.distil.distil_job: progress (stage, step, total, losses) into the RQ job's meta, at most every 2 s."""
    from rq import get_current_job
    job, last = get_current_job(), [0.0]

    def on_progress(info: dict) -> None:
        if job is None or (time.monotonic() - last[0] < 2 and info.get("step") != info.get("total")):
            return
        last[0] = time.monotonic()
        job.meta.update({"progress": info, "updated_at": time.time()})
        job.save_meta()
    return run(params, on_progress=on_progress, progress=job is None)


def params_from_args(args: argparse.Namespace) -> dict:
    """JSON-able job parameters; an API key only when given on the command line (workers read env)."""
    params = {k: v for k, v in vars(args).items()
              if k not in ("func", "command", "sync") and isinstance(v, (str, int, float, bool, type(None)))}
    if not params.get("ls_key"):
        params.pop("ls_key", None)
    return params


def cli_main(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    redis_url = os.environ.get("REDIS_URL", "")
    if not args.sync and redis_url:
        try:
            from rq import Queue

            from albackend.redisconn import connect
            conn = connect(redis_url, 5.0)
            conn.ping()
            job_id = f"distil-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{os.urandom(4).hex()}"
            Queue(os.environ.get("RQ_QUEUE", "albackend"), connection=conn).enqueue(
                "plasm.distil.distil_job", params, job_id=job_id, job_timeout=24 * 3600, result_ttl=7 * 86400,
                failure_ttl=7 * 86400, description=f"distil {params['teacher']} -> {params['out']}")
        except Exception as exc:  # redis missing, unreachable, refused
            print(f"error: cannot enqueue on Redis at REDIS_URL: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        print(job_id)
        return 0
    if not args.sync:
        print("REDIS_URL is not set: running in this process", file=sys.stderr)
    try:
        report = run(params, progress=True)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    return 0 if report.get("complete", True) else 3
