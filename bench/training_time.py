"""How long one retrain of the acquisition model takes: N annotated AG News tasks, the backend's own
training settings (TRAIN_* env vars / defaults), the default packaged model. Prints and writes JSON.

    .venv/bin/python bench/training_time.py --n 100 --model minilm-l6
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel
from albackend.models.runtime import configure_runtime
from albackend.settings import Settings
from albackend.services.training import train_config

DATA = Path(os.environ.get("SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    configure_runtime()  # this process's transformers logging and tokenizers threads
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100, help="annotated tasks")
    ap.add_argument("--model", default=None, help="acquisition model (default: ACQUISITION_MODEL or minilm-l6)")
    ap.add_argument("--eval", type=int, default=2000, help="held-out pool texts to measure accuracy on")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="bench/out/training_time.json")
    args = ap.parse_args()

    settings = Settings.from_env()
    if args.model:
        settings = replace(settings, acquisition_model=args.model)
    with open(DATA / "ag_news" / "train_pool.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    order = np.random.default_rng(args.seed).permutation(len(rows))
    labels = ("World", "Sports", "Business", "Sci/Tech")
    spec = TaskSpec("classification", "label", "text", "text", labels)
    train = [Example(int(i), rows[i]["text"], [int(rows[i]["label"])]) for i in order[:args.n]]
    held = [rows[i] for i in order[args.n:args.n + args.eval]]
    cfg = train_config(settings, spec)

    t0 = time.perf_counter()
    model = AcquisitionModel.create(settings.acquisition_model, spec, device=settings.device,
                                    max_length=settings.max_length, seed=settings.seed)
    t_load = time.perf_counter() - t0
    stats = model.fit(train, cfg)
    t_train = time.perf_counter() - t0 - t_load
    preds = model.predict([r["text"] for r in held], batch_size=settings.infer_batch_size)
    acc = float((preds.probs.argmax(1) == np.array([int(r["label"]) for r in held])).mean()) if held else None
    report = {
        "model": settings.acquisition_model, "n_annotated": args.n, "steps": stats["steps"],
        "epochs": stats["epochs"], "batch_size": cfg.batch_size, "lr": cfg.lr,
        "load_s": round(t_load, 2), "train_s": round(t_train, 2), "s_per_step": round(t_train / stats["steps"], 3),
        "heldout_accuracy": acc, "heldout_n": len(held), "scoring_tasks_per_s": round(len(held) / preds.seconds, 1),
        "device": str(model.device), "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
    }
    for k, v in report.items():
        print(f"{k:>22}: {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
