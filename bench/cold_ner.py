"""Cold-start NER: does the acquisition model trained on tens of sentences predict entities at all?

MNLP ranks the pool by the tagger's word confidences; a model that predicts only O (the "all-O collapse" of a
randomly initialised head trained for a few dozen steps at an encoder's learning rate) ranks it by noise, at
the very iterations where active learning matters most. This benchmark trains the acquisition model on n
random CoNLL-2003 training sentences (several sizes and seeds) under several recipes and reports, on a test
subset (the same for every run), strict span F1 / precision / recall and the number of predicted vs gold spans.

    python bench/cold_ner.py                                   # before vs product, 40 and 80 sentences, 2 seeds
    python bench/cold_ner.py --recipes before,product,head_lr --sizes 40,80,160 --seeds 0,1,2

Recipes (all: epochs 5, batch 16, AdamW, 10% warm-up, linear decay): ``before`` = the recipe before the fix
(lr 5e-5, >= 60 steps, one lr for all parameters); ``product`` = what the backend uses now
(:func:`albackend.models.train.default_train_config`); the others vary one knob of ``before`` (see RECIPES).
Writes bench/out/cold_ner.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (puts the repo root on sys.path, sets offline HF)

import numpy as np  # noqa: E402

from albackend.models.acquisition import AcquisitionModel  # noqa: E402
from albackend.models.train import TrainConfig, default_train_config  # noqa: E402
from bench.emulation.data import load_dataset  # noqa: E402
from plasm.metrics import span_scores  # noqa: E402

BEFORE = dict(epochs=5, min_steps=60, batch_size=16, lr=5e-5)
# One knob at a time on top of BEFORE (the candidates the product's recipe was chosen from).
RECIPES: dict[str, dict] = {
    "before": {},
    "lr2e-4": dict(lr=2e-4),
    "steps150": dict(min_steps=150),
    "head_lr": dict(head_lr=3e-3),
    "head_lr1e-3": dict(head_lr=1e-3),
    "o_weight": dict(o_weight=0.3),
    "smooth": dict(label_smoothing=0.1),
}


def recipe_config(name: str, n_labels: int, seed: int) -> TrainConfig:
    """The TrainConfig of a recipe; ``o_weight`` becomes class weights (O down-weighted, entity tags 1)."""
    if name == "product":
        return dataclasses.replace(default_train_config("tagging"), seed=seed)
    if name not in RECIPES:
        raise SystemExit(f"unknown recipe {name!r}; valid: product, {', '.join(RECIPES)}")
    over = dict(RECIPES[name])
    o_weight = over.pop("o_weight", None)
    if o_weight is not None:
        over["class_weights"] = (float(o_weight),) + (1.0,) * (2 * n_labels)
    return TrainConfig(**{**BEFORE, **over, "seed": seed})


def run_one(ds, recipe: str, n: int, seed: int, model_name: str, max_steps: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds.pool), size=n, replace=False)
    gold = [ds.pool.examples[int(i)] for i in idx]
    cfg = dataclasses.replace(recipe_config(recipe, len(ds.spec.labels), seed), max_steps=max_steps)
    model = AcquisitionModel.create(model_name, ds.spec, device="cpu", max_length=128, seed=seed)
    t0 = time.perf_counter()
    stats = model.fit(gold, cfg)
    train_s = time.perf_counter() - t0
    texts = ds.test.texts
    preds = model.predict(texts)
    pred_spans = [model.spans(t, r, p) for t, r, p in zip(texts, preds.word_ranges, preds.probs)]
    scores = span_scores(texts, [e.spans for e in ds.test.examples], pred_spans)
    mnlp_conf = [float(np.exp(np.log(np.clip(p.max(axis=1), 1e-12, 1)).mean())) for p in preds.probs if len(p)]
    return {"recipe": recipe, "n_train": n, "seed": seed, "train_gold_spans": sum(len(e.spans) for e in gold),
            "f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
            "pred_spans": sum(len(s) for s in pred_spans), "gold_spans": sum(len(e.spans) for e in ds.test.examples),
            "mnlp_conf_std": float(np.std(mnlp_conf)), "train_s": train_s, "steps": stats["steps"],
            "final_loss": stats["final_loss"], "lr": cfg.lr, "head_lr": cfg.head_lr,
            "min_steps": cfg.min_steps}


def summarise(runs: list[dict]) -> list[dict]:
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        for n in dict.fromkeys(r["n_train"] for r in runs):
            rs = [r for r in runs if r["recipe"] == recipe and r["n_train"] == n]
            if not rs:
                continue
            f1 = np.array([r["f1"] for r in rs])
            out.append({"recipe": recipe, "n_train": n, "seeds": len(rs), "f1_mean": float(f1.mean()),
                        "f1_std": float(f1.std()), "pred_spans": [r["pred_spans"] for r in rs],
                        "gold_spans": rs[0]["gold_spans"], "train_s_mean": float(np.mean([r["train_s"] for r in rs]))})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="before,product")
    p.add_argument("--sizes", default="40,80")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--train", help="CoNLL/JSONL training file (default: the shared CoNLL-2003 train split)")
    p.add_argument("--test", help="CoNLL/JSONL test file (default: the shared CoNLL-2003 test split)")
    p.add_argument("--max-steps", type=int, default=0, help="cap every recipe's steps (smoke runs; 0 = none)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", default=str(bc.REPO_ROOT / "bench" / "out" / "cold_ner.json"))
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = bc.machine_info()
    source = dict(train=args.train, test=args.test, task="tagging") if args.train else dict(dataset="conll2003")
    ds = load_dataset(**source, test_size=args.test_size, data_seed=0)
    runs: list[dict] = []
    t0 = time.perf_counter()
    out = {"machine": machine, "model": args.model, "test_size": len(ds.test), "before": BEFORE,
           "product": dataclasses.asdict(default_train_config("tagging")), "command": sys.argv}
    for recipe in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        for n in [int(x) for x in args.sizes.split(",")]:
            for seed in [int(x) for x in args.seeds.split(",")]:
                runs.append(run_one(ds, recipe, n, seed, args.model, args.max_steps))
                r = runs[-1]
                print(f"{recipe:12s} n={n:4d} seed={seed}: F1 {r['f1']:.3f}  spans {r['pred_spans']}/{r['gold_spans']}"
                      f"  train {r['train_s']:.1f} s ({r['steps']} steps)", flush=True)
                out.update(wall_s=time.perf_counter() - t0, loadavg_1m_now=round(os.getloadavg()[0], 2),
                           summary=summarise(runs), runs=runs)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(out, indent=2) + "\n")  # an interrupted run keeps its runs
    bc.print_table(f"cold NER, {args.model}, CoNLL-2003 test subset of {len(ds.test)} sentences",
                   ["recipe", "n", "F1 mean", "F1 std", "pred spans / seed", "gold", "train s"],
                   [[s["recipe"], s["n_train"], s["f1_mean"], s["f1_std"], " ".join(map(str, s["pred_spans"])),
                     s["gold_spans"], s["train_s_mean"]] for s in out["summary"]])
    bc.write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
