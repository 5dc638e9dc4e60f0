"""``plasm distil`` as a job: the unlabeled texts, the labeled split of the quality report, the run and its RQ entry.

Unlabeled text: a text file (one per line), a Label Studio JSON export, a CSV column, or a live LS project. The
labeled set of the quality report: 1% of a labeled CSV, or the project's gold labels. The student itself is built
by :mod:`albackend.models.distil`, its report by :mod:`albackend.models.distil_quality`.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from rq import get_current_job

from albackend import settings
from albackend.domain.examples import Example, gold_examples, is_labeled
from albackend.domain.labelconfig import ConfigError, TaskSpec, parse_label_config
from albackend.adapters.lsclient import LabelStudioClient
from albackend.models.distil import DistilConfig, distil
from albackend.models.distil_quality import QualityData, QualityOptions, quality_report
from albackend.models.registry import META_FILE
from albackend.models.runtime import configure_runtime
from albackend.models.student import LOSSES
from albackend.models.train import DEFAULT_LR, TrainConfig
from plasm.errors import PlasmConfigError, SourceError

JOB_FUNC = "plasm.distil_job.distil_job"
SOURCES = ("text_file", "export", "csv", "ls_project")


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
    raise SourceError("cannot tell which task field holds the text: pass --field")


def _texts_of(tasks: Sequence[dict], field: str) -> list[str]:
    data = [t.get("data", t) if isinstance(t, dict) else {} for t in tasks]
    return [d[field] for d in data if isinstance(d, dict) and isinstance(d.get(field), str) and d[field].strip()]


def read_csv(path: str, text_col: str, label_col: str | None = None) -> tuple[list[str], list[str]]:
    """(texts, labels) of the rows with a non-empty text; labels are '' without ``label_col``."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for col in (text_col, label_col):
            if col and col not in (reader.fieldnames or []):
                raise SourceError(f"{path} has no column {col!r} (columns: {reader.fieldnames})")
        rows = [r for r in reader if r[text_col] and r[text_col].strip()]
    return [r[text_col] for r in rows], [str(r[label_col]) if label_col else "" for r in rows]


def _project(params: dict) -> tuple[list[str], str, dict]:
    client = LabelStudioClient(params.get("ls_url") or settings.env("LABEL_STUDIO_URL"),
                               params.get("ls_key") or settings.env("LABEL_STUDIO_API_KEY"))
    project = client.get_project(params["ls_project"])
    tasks = list(client.iter_tasks(params["ls_project"]))
    try:
        spec = parse_label_config(project.get("label_config") or "")
    except ConfigError:
        spec = None
    field = params.get("field") or (spec.value_key if spec else None) or _task_field(tasks, None)
    return (_texts_of(tasks, field), f"Label Studio project {params['ls_project']} field {field}",
            {"tasks": tasks, "spec": spec})


def _export(params: dict) -> tuple[list[str], str, dict]:
    tasks = json.loads(Path(params["export"]).read_text(encoding="utf-8"))
    if not isinstance(tasks, list):
        raise SourceError(f"{params['export']} is not a Label Studio JSON export (a list of tasks)")
    field = _task_field(tasks, params.get("field"))
    return _texts_of(tasks, field), f"LS export {params['export']} field {field}", {}


def load_unlabeled(params: dict) -> tuple[list[str], str, dict]:
    """(texts, source description, LS context {tasks, spec} when the source is a project)."""
    given = [k for k in SOURCES if params.get(k)]
    if len(given) != 1:
        raise SourceError("give exactly one text source: --text-file, --export, --csv or --ls-project")
    seed, limit, ctx = int(params.get("seed", 42)), int(params.get("max_texts") or 0), {}
    if params.get("text_file"):
        texts = [ln.strip() for ln in Path(params["text_file"]).read_text(encoding="utf-8").splitlines()]
        source = f"text file {params['text_file']}"
    elif params.get("csv"):
        texts = read_csv(params["csv"], params.get("text_col") or "text")[0]
        source = f"csv {params['csv']} column {params.get('text_col') or 'text'}"
    elif params.get("export"):
        texts, source, ctx = _export(params)
    else:
        texts, source, ctx = _project(params)
    return _shuffled([t for t in texts if t.strip()], seed, limit), source, ctx


def _csv_split(params: dict, seed: int, pool_size: int):
    texts, labels = read_csv(params["eval_csv"], params.get("text_col") or "text", params.get("label_col"))
    names = sorted(set(labels))
    spec = TaskSpec("classification", "label", "text", "text", tuple(names))
    order = np.random.default_rng(seed).permutation(len(texts))
    n_train = int(params.get("eval_size") or 0) or max(len(names), round(params["eval_fraction"] * len(texts)))
    train = [Example(None, texts[i], [names.index(labels[i])]) for i in order[:n_train]]
    pool_idx = order[n_train:n_train + pool_size]
    data = QualityData(spec, train, [texts[i] for i in pool_idx], [names.index(labels[i]) for i in pool_idx])
    return data, f"{n_train} of {len(texts)} rows of {params['eval_csv']} (seed {seed})"


def labeled_split(params: dict, ctx: dict) -> tuple[QualityData, str] | None:
    """(labeled set and pool sample, description), or None when no labels exist."""
    seed, pool_size = int(params.get("seed", 42)), int(params.get("pool_size") or 2000)
    if params.get("eval_csv"):
        return _csv_split(params, seed, pool_size)
    spec = ctx.get("spec")
    if spec is None or spec.kind != "classification" or spec.multi_label:
        return None
    train, _ = gold_examples([t for t in ctx["tasks"] if is_labeled(t)], spec, 100000)
    if params.get("eval_size"):
        train = _shuffled(train, seed, int(params["eval_size"]))
    pool = _shuffled(_texts_of([t for t in ctx["tasks"] if not is_labeled(t)], spec.value_key), seed, pool_size)
    if not (train and pool):
        return None
    return QualityData(spec, train, pool), f"{len(train)} gold labels of the Label Studio project"


def config_from_params(params: dict) -> DistilConfig:
    weights = {k: 1.0 for k in LOSSES}
    for part in str(params.get("loss_weights") or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            if k.strip() not in LOSSES:
                raise PlasmConfigError(f"unknown loss {k!r} in --loss-weights (known: {', '.join(LOSSES)})")
            weights[k.strip()] = float(v)
    known = {f.name for f in dataclasses.fields(DistilConfig)}
    kw = {k: v for k, v in params.items() if k in known and v is not None and k not in ("layers", "weights")}
    layers = [int(x) for x in str(params.get("layers") or "").split(",") if x.strip()] or None
    return DistilConfig(**kw, layers=layers, weights=weights)


def _quality(params: dict, cfg: DistilConfig, out: Path, teacher: str, ctx: dict, on_progress, progress) -> dict:
    if params.get("no_quality"):
        return {"skipped": "--no-quality"}
    split = labeled_split(params, ctx)
    if split is None:
        return {"skipped": "no labeled data: pass --eval-csv, or a project with classification gold labels"}
    data, desc = split
    tcfg = TrainConfig(epochs=int(params.get("eval_epochs") or 5), min_steps=int(params.get("eval_min_steps") or 60),
                       lr=float(params.get("eval_lr") or DEFAULT_LR), seed=cfg.seed)
    opts = QualityOptions(unrelated=params.get("unrelated"), train_cfg=tcfg, max_length=cfg.max_length,
                          batch_size=int(params.get("score_batch_size") or 64), device=cfg.device, seed=cfg.seed,
                          noise_baseline=bool(params.get("noise_baseline")))
    quality = quality_report(str(out), teacher, data, opts, on_progress=on_progress, progress=progress,
                             scores_path=out / "quality_scores.npz")
    return {**quality, "labeled": desc}


def run(params: dict, *, on_progress: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Distil (unless --quality-only), then write quality.json next to the student; returns the report."""
    if int(params.get("threads") or 0) > 0:
        torch.set_num_threads(int(params["threads"]))
    out, cfg = Path(params["out"]), config_from_params(params)
    quality_only = bool(params.get("quality_only"))
    texts, source, ctx = ([], "", {}) if quality_only and params.get("eval_csv") else load_unlabeled(params)
    if quality_only:
        report = json.loads((out / META_FILE).read_text())
    else:
        report = distil(texts, out, cfg, resume=bool(params.get("resume")),
                        stop_after=int(params.get("stop_after") or 0), progress=progress, source=source,
                        on_progress=on_progress)
        if not report.get("complete", True):
            return report
    t0 = time.perf_counter()
    quality = _quality(params, cfg, out, report["teacher"], ctx, on_progress, progress)
    quality["seconds"] = round(time.perf_counter() - t0, 2)
    quality["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (out / "quality.json").write_text(json.dumps(quality, indent=2))
    keys = ("spearman_lc", "speed", "verdict", "skipped", "seconds", "peak_rss_mb")
    report["quality"] = {k: quality[k] for k in keys if k in quality}
    (out / META_FILE).write_text(json.dumps(report, indent=2, default=str))
    return {**report, "complete": True}


def distil_job(params: dict) -> dict:
    """RQ entry point: progress (stage, step, total, losses) into the RQ job's meta, at most every 2 s."""
    configure_runtime()
    job, last = get_current_job(), [0.0]

    def on_progress(info: dict) -> None:
        if job is None or (time.monotonic() - last[0] < 2 and info.get("step") != info.get("total")):
            return
        last[0] = time.monotonic()
        job.meta.update({"progress": info, "updated_at": time.time()})
        job.save_meta()
    return run(params, on_progress=on_progress, progress=job is None)
