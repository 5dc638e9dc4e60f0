"""Active-learning emulation (the paper's protocol, section 5.1) on a labeled dataset, with the product's code.

Starts from a seed set (random, or the backend's cold-start ranking), then per iteration trains the acquisition model from scratch, trains and tests
each configuration's successor, scores the pool (full, or UPS subsample) and "annotates" the query with the
gold labels. Several configurations land in one report: ``results.json``, ``report.md`` and PNG plots.

    python bench/emulate.py --dataset agnews                     # 2-core CPU default (profile cpu)
    python bench/emulate.py --dataset conll2003
    python bench/emulate.py --dataset agnews --profile gpu       # full-scale configuration (GPU)
    python bench/emulate.py --dataset agnews --profile coldstart # cold-start vs random seed set (reduced)
    python bench/emulate.py --train my.csv --test my_test.csv --configs standard,ups --iterations 8
    python bench/emulate.py --config-file bench/emulation/example.yaml
    python bench/emulate.py --report-only bench/out/emulate/agnews    # re-render from results.json

Configurations (``--configs``, comma-separated presets; A = --acquisition, S = --successor, T = --teacher):
standard (A, full pool, successor A), ups, ups-topk (T=0), random, coldstart (standard from the backend's
cold-start seed set), warm (A warm-started), mismatch (A -> S on gold only), teacher (A -> T on gold only),
same (S acquires for itself), plasm (A -> PLASM: T teacher, filter, S successor), random-succ, ups-plasm.
See docs/emulation.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting steal the CPU from the thread doing the work when the cores are shared
# (measured here: a tiny BERT step 1.9 s with 2 spinning threads vs 0.012 s passive); set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.emulation.config import (  # noqa: E402
    PROFILES, STUDENT, Settings, apply_profile, load_config_file, presets, resolve_configs, update_settings,
    uses_student)
from bench.emulation.data import load_dataset  # noqa: E402
from albackend.models.runtime import configure_runtime  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=["agnews", "conll2003"], help="a shared dataset (SHARED_DATA)")
    d.add_argument("--train", help="labeled pool file: CSV/JSONL (classification) or CoNLL/JSONL (NER)")
    d.add_argument("--test", help="test file, same format")
    d.add_argument("--task", choices=["classification", "tagging"], help="default: from the file")
    d.add_argument("--text-column", default=None)
    d.add_argument("--label-column", default=None, help="default: label_name if present, else label")
    d.add_argument("--pool-size", type=int, help="random pool subset (0 = all)")
    d.add_argument("--test-size", type=int, help="random test subset (0 = all)")
    d.add_argument("--data-seed", type=int, help="seed of the pool/test subsets (shared by all AL seeds)")
    a = p.add_argument_group("protocol")
    a.add_argument("--profile", choices=sorted(PROFILES), default="cpu",
                   help="defaults: cpu (2-core CPU, 3 seeds), gpu (full scale) or coldstart (cold-start vs random "
                        "seed set, reduced); explicit options override")
    a.add_argument("--configs", help="comma-separated presets: " + ", ".join(presets(Settings())))
    a.add_argument("--config-file", help="JSON/YAML file with 'settings' and 'configs'")
    a.add_argument("--seeds", help="comma-separated AL seeds, e.g. 0,1,2")
    a.add_argument("--iterations", type=int, help="learning-curve points (iteration 0 = seed set)")
    a.add_argument("--seed-fraction", type=float, help="seed set: fraction of pool instances (words for NER)")
    a.add_argument("--query-fraction", type=float, help="query per iteration: fraction of the pool (words for NER)")
    a.add_argument("--no-measure-overlap", action="store_true",
                   help="UPS runs: skip the extra (untimed) full-pool scoring for Table 1 / UPS recall")
    m = p.add_argument_group("models")
    m.add_argument("--acquisition", help="acquisition model A (packaged name, directory or hub id; cnn/bilstm)")
    m.add_argument("--successor", help="successor S of mismatch/same/plasm (HF model, or cnn / bilstm)")
    m.add_argument("--teacher", help="PLASM teacher T (HF model)")
    m.add_argument("--strategy", help="query strategy for all configs: least_confident, margin, entropy, mnlp, "
                                      "mahalanobis, random (default auto: LC / MNLP)")
    m.add_argument("--gamma", type=float, help="UPS γ")
    m.add_argument("--temperature", type=float, help="UPS T")
    m.add_argument("--full-iterations", help="UPS: 0-based iterations that score the whole pool, e.g. 0,1,4,8")
    m.add_argument("--scratch-every", type=int, help="warm preset: from-scratch retrain every k iterations")
    m.add_argument("--warm-steps-fraction", type=float, help="warm preset: fraction of the from-scratch steps")
    m.add_argument("--plasm-filter", choices=["uncertainty", "tracin", "both", "none"])
    m.add_argument("--plasm-pool", type=int, help="PLASM: pseudo-label at most this many pool items (0 = all)")
    m.add_argument("--epochs", type=int, help="HF fine-tuning epochs (all roles)")
    m.add_argument("--min-steps", type=int, help="HF minimum steps (all roles)")
    m.add_argument("--max-steps", type=int, help="HF maximum steps (all roles; 0 = none)")
    m.add_argument("--lr", type=float, help="HF learning rate (all roles)")
    m.add_argument("--device", choices=["auto", "cpu", "cuda"])
    m.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, = cores)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output directory (default bench/out/emulate/<dataset>)")
    o.add_argument("--resume", action="store_true", help="keep finished (config group, seed) runs of --out")
    o.add_argument("--report-only", metavar="DIR", help="re-render report.md and plots from DIR/results.json")
    o.add_argument("--merge", metavar="DIR", nargs="+",
                   help="unite the results.json of runs split over processes (e.g. --seeds 0 and --seeds 1) into "
                        "--out, and render its report")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--list-configs", action="store_true", help="print the presets and exit")
    return p


def _task_of(args, file_settings: dict) -> str:
    if args.task or file_settings.get("task"):
        return args.task or file_settings["task"]
    ds = args.dataset or file_settings.get("dataset")
    if ds:
        return "tagging" if ds == "conll2003" else "classification"
    train = args.train or file_settings.get("train") or ""
    return "tagging" if Path(train).suffix.lower() in (".conll", ".iob", ".bio") else "classification"


def build(args) -> Settings:
    file_data = load_config_file(args.config_file) if args.config_file else {}
    fs = dict(file_data.get("settings") or {})
    st = Settings()
    default_configs = apply_profile(st, fs.pop("profile", None) or args.profile, _task_of(args, fs))
    update_settings(st, fs)
    simple = {"dataset": args.dataset, "train": args.train, "test": args.test, "task": args.task,
              "text_column": args.text_column, "label_column": args.label_column, "pool_size": args.pool_size,
              "test_size": args.test_size, "data_seed": args.data_seed, "iterations": args.iterations,
              "seed_fraction": args.seed_fraction, "query_fraction": args.query_fraction,
              "acquisition": args.acquisition, "successor": args.successor, "teacher": args.teacher,
              "ups_gamma": args.gamma, "ups_temperature": args.temperature,
              "ups_full_iterations": args.full_iterations, "plasm_filter": args.plasm_filter,
              "scratch_every": args.scratch_every, "warm_steps_fraction": args.warm_steps_fraction,
              "plasm_pool": args.plasm_pool, "device": args.device}
    update_settings(st, {k: v for k, v in simple.items() if v is not None})
    if args.seeds:
        st.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.no_measure_overlap:
        st.measure_overlap = False
    train_over = {k: v for k, v in {"epochs": args.epochs, "min_steps": args.min_steps, "max_steps": args.max_steps,
                                    "lr": args.lr}.items() if v is not None}
    if train_over:
        update_settings(st, {k: train_over for k in ("acquisition_train", "successor_train", "teacher_train")})
    items = [args.configs] if args.configs else (file_data.get("configs") or [default_configs])
    st.configs = resolve_configs(st, items)
    if args.strategy:
        for c in st.configs:
            if c.strategy != "random":
                c.strategy = args.strategy
    return st


def main(argv: list[str] | None = None) -> int:
    configure_runtime()  # this process's transformers logging and tokenizers threads
    args = parser().parse_args(argv)
    try:
        return _main(args, argv)
    except (ValueError, FileNotFoundError) as exc:  # bad options or data: one clear line, no traceback
        print(f"emulate.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or a time budget's SIGINT (bench/emulation/mpnet_gpu.sh)
        print("emulate.py: interrupted; every finished (configuration group, seed) is in results.json, "
              "--resume continues", file=sys.stderr)
        return 130


def _check(st: Settings, kind: str) -> None:
    """Fail before any training on a strategy the task cannot use, or a model name that does not resolve."""
    from albackend.domain.labelconfig import TaskSpec
    from albackend.models.registry import ModelNotFound, resolve_model
    from albackend.services.predictions import resolve_strategy
    from bench.emulation.learners import CLASSICAL

    spec = TaskSpec(kind, "label", "text", "text", ("A", "B"))
    for c in st.configs:
        resolve_strategy(spec, c.strategy)
        if c.seed_set == "coldstart" and c.acquisition in CLASSICAL:
            raise ValueError(f"{c.name}: a cold-start seed set embeds with an HF encoder, not {c.acquisition!r}")
        names = [c.acquisition] + ([c.successor] if c.successor != "acquisition" else [])
        names += [c.teacher] if c.plasm else []
        # the student is distilled by the run; its teacher must exist
        names = [(st.distil.get("teacher") or st.teacher) if n == STUDENT else n for n in names]
        for name in names:
            if name in CLASSICAL:
                if CLASSICAL[name] != kind:
                    raise ValueError(f"{c.name}: {name!r} is a {CLASSICAL[name]} model, the dataset is {kind}")
                continue
            try:
                resolve_model(name)
            except ModelNotFound as exc:
                raise ValueError(f"{c.name}: {exc}") from None


def _merge(parts: list[str], out_arg: str | None) -> int:
    from bench.emulation.runner import merge_dirs

    if not out_arg:
        raise ValueError("--merge needs --out")
    result = merge_dirs([Path(d) for d in parts], Path(out_arg))
    print(f"merged {len(result['records'])} records of {len(parts)} runs -> {out_arg}")
    return 0


def _main(args, argv: list[str] | None) -> int:
    if args.list_configs:
        for name, c in presets(Settings()).items():
            print(f"{name:12s} {c.describe()}")
        return 0
    if args.report_only:
        from bench.emulation.runner import RESULTS, render

        out = Path(args.report_only)
        plots = render(json.loads((out / RESULTS).read_text()), out)
        print(f"wrote {out / 'report.md'} and {', '.join(plots.values())}")
        return 0
    if args.merge:
        return _merge(args.merge, args.out)
    st = build(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if any(c.plasm for c in st.configs):
        from bench.emulation.plasm_adapter import plasm_available

        if not plasm_available():
            print("PLASM configurations need plasm.pipeline, which is not importable", file=sys.stderr)
            return 2
    _check(st, _task_of(args, {"task": st.task, "dataset": st.dataset, "train": st.train}))
    ds = load_dataset(dataset=st.dataset, train=st.train, test=st.test, task=st.task, pool_size=st.pool_size,
                      test_size=st.test_size, data_seed=st.data_seed, text_column=st.text_column,
                      label_column=st.label_column)
    default = ds.name if st.profile == "cpu" else f"{ds.name}-{st.profile}"  # profiles do not share a directory
    out = Path(args.out or (Path(__file__).resolve().parent / "out" / "emulate" / default))
    from bench.emulation.runner import RESULTS, REPORT, run

    extra = {}
    if uses_student(st):
        from bench.emulation.student import distil_student, substitute

        extra["student"] = distil_student(ds, st, out, progress=not args.no_progress)
        substitute(st, extra["student"]["dir"])
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result = run(ds, st, out, resume=args.resume, progress=not args.no_progress,
                 command=f"python bench/emulate.py {argv_text}".strip(), meta=extra)
    meta = result["meta"]
    print(f"{ds.name}: {len(result['records'])} records in {meta['wall_s']:.0f} s "
          f"(process CPU {meta['cpu_s']:.0f} s) -> {out / RESULTS}, {out / REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
