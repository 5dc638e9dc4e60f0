"""PLASM stage timings on AG News: 200 gold + 2,000 pool texts with the packaged models.

    .venv/bin/python bench/plasm_stages.py                       # teacher minilm-l6, successor cnn, uncertainty
    .venv/bin/python bench/plasm_stages.py --successor hf:mpnet --successor-epochs 1 --filter both

Gold and pool are disjoint seeded random samples of /work/shared/data/ag_news/train_pool.csv (the CSV is sorted
by label, so it is shuffled first). The pool's true labels are used only to report the pseudo-label accuracy
(overall and of the kept part) - PLASM itself never sees them. Runs :func:`plasm.pipeline.run_plasm` exactly as
the job does (teacher with early stopping on a 10% dev split, pseudo-labels, filter, successor, evaluation) and
additionally scores teacher and successor on a held-out sample of the AG News test split (``--test``).

Defaults and why: the teacher is MiniLM-L6 (the strongest packaged encoder that trains in minutes on a CPU; in a
deployment it is the acquisition model's teacher), the successor the paper's CNN (Figure 16: a classical model of
another type), the filter "uncertainty" (TracIn adds a full training run of a model on gold + pseudo labels; use
``--filter tracin|both`` to time it). Prints the stage timings and writes ``bench/out/plasm_stages.json``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.benchcommon import AGNEWS_LABELS, DEFAULT_POOL, load_pool, machine_info, print_table, write_json  # noqa: E402
from albackend.models.runtime import configure_runtime  # noqa: E402

DEFAULT_TEST = DEFAULT_POOL.parent / "test.csv"


def main(argv: list[str] | None = None) -> int:
    configure_runtime()  # this process's transformers logging and tokenizers threads
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gold", type=int, default=200)
    p.add_argument("--pool", type=int, default=2000)
    p.add_argument("--test", type=int, default=1000, help="AG News test texts for the teacher/successor check (0: off)")
    p.add_argument("--teacher", default="minilm-l6")
    p.add_argument("--successor", default="cnn", help="cnn | hf:<model> | same-as-teacher")
    p.add_argument("--filter", default="uncertainty", choices=("uncertainty", "tracin", "both", "none"))
    p.add_argument("--successor-epochs", type=int, default=None, help="HF successor epochs (default: 5)")
    p.add_argument("--tracin-params", default="head+last", choices=("head", "head+last", "all"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=str(DEFAULT_POOL))
    p.add_argument("--out-dir", default=str(REPO_ROOT / "bench" / "out" / "plasm_stages_run"),
                   help="PLASM run directory (replaced)")
    p.add_argument("--json", default=str(REPO_ROOT / "bench" / "out" / "plasm_stages.json"))
    args = p.parse_args(argv)

    import shutil

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from albackend.domain.examples import Example
    from albackend.domain.labelconfig import parse_label_config
    from bench.benchcommon import CLASSIFICATION_CONFIG
    from plasm.pipeline import PlasmConfig, run_plasm

    spec = parse_label_config(CLASSIFICATION_CONFIG)
    rows = load_pool(args.data, seed=args.seed)
    if len(rows) < args.gold + args.pool:
        raise SystemExit(f"{args.data} has {len(rows)} rows, need {args.gold + args.pool}")
    gold_rows, pool_rows = rows[:args.gold], rows[args.gold:args.gold + args.pool]
    gold = [Example(i, r.text, label_ids=[r.label]) for i, r in enumerate(gold_rows)]
    pool_texts = [r.text for r in pool_rows]
    test = None
    if args.test and DEFAULT_TEST.exists():
        with open(DEFAULT_TEST, newline="", encoding="utf-8") as fh:
            trows = [(r["text"], AGNEWS_LABELS.index(r["label_name"])) for r in csv.DictReader(fh)]
        order = np.random.default_rng(args.seed).permutation(len(trows))[:args.test]
        test = [Example(None, trows[i][0], label_ids=[trows[i][1]]) for i in order]

    successor_train = None
    if args.successor_epochs is not None:
        successor_train = {"epochs": args.successor_epochs, "lr": 1e-4}
    cfg = PlasmConfig(teacher=args.teacher, successor=args.successor, filter=args.filter, seed=args.seed,
                      device=args.device, successor_train=successor_train, tracin_params=args.tracin_params)
    out_dir = Path(args.out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def progress(stage: str, fraction: float, info: dict) -> None:
        if not marks or marks[-1][0] != stage:
            marks.append((stage, time.perf_counter() - t0))
            print(f"[{time.perf_counter() - t0:7.1f}s] {stage:<13} {100 * fraction:5.1f}%", flush=True)

    report = run_plasm(gold, pool_texts, spec, cfg, out_dir, progress, test=test)
    wall = time.perf_counter() - t0

    # pseudo-label quality against the pool's true labels (never used by PLASM)
    records = [json.loads(x) for x in (out_dir / "pseudo_labels.jsonl").read_text().splitlines()]
    truth = {i: AGNEWS_LABELS[r.label] for i, r in enumerate(pool_rows)}
    correct = np.array([r["label"] == truth[r["index"]] for r in records])
    kept = np.array([r["kept"] for r in records])
    quality = {"pseudo_label_accuracy": float(correct.mean()) if len(correct) else None,
               "kept_accuracy": float(correct[kept].mean()) if kept.any() else None,
               "dropped_accuracy": float(correct[~kept].mean()) if (~kept).any() else None}

    timings = report["timings"]
    c = report["counts"]
    print_table(f"PLASM stages: {c['gold']} gold ({c['gold_train']} train / {c['dev']} dev) + {c['pool']} pool, "
                f"teacher {args.teacher}, successor {report['successor_type']}, filter {args.filter}",
                ["stage", "seconds", "share"],
                [[k, f"{v:.1f}", f"{100 * v / max(timings['total'], 1e-9):.0f}%"] for k, v in timings.items()
                 if k != "total"] + [["total", f"{timings['total']:.1f}", "100%"]])
    print(f"q (teacher dev accuracy) = {report['q']:.4f}; dropped {c['dropped_uncertainty']} by uncertainty + "
          f"{c['dropped_tracin']} by TracIn of {c['pseudo']}; kept {c['kept']}")
    print(f"pseudo-label accuracy {quality['pseudo_label_accuracy']:.4f}, kept {quality['kept_accuracy'] or 0:.4f}, "
          f"dropped {quality['dropped_accuracy'] or 0:.4f}")
    for name, metrics in (("dev", report["dev_metrics"]), ("test", report.get("test_metrics") or {})):
        for role, m in metrics.items():
            print(f"{name:>4} {role:<9} accuracy {m.get('accuracy', float('nan')):.4f} (n={m.get('n')})")
    out = {"benchmark": "plasm_stages", "args": vars(args), "machine": machine_info(),
           "torch_threads": torch.get_num_threads(), "wall_seconds": round(wall, 2), "timings": timings,
           "stage_marks": marks, "counts": c, "q": report["q"], "fractions": report["fractions"],
           "dev_metrics": report["dev_metrics"], "test_metrics": report.get("test_metrics"),
           "pseudo_label_quality": quality, "teacher_training": report["teacher"]["training"],
           "successor_training": report["successor"]["training"], "tracin": report["tracin"],
           "config": report["config"], "run_dir": str(out_dir)}
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
