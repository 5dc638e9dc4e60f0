"""One active-learning iteration: standard (large acquisition model, full pool) vs PLASM + UPS (small acquisition
model, UPS subsample), timed on the AG News pool with the product's own training and rescoring code.

Setup (not compared): the previous iteration of the PLASM + UPS configuration - the small model fine-tuned on a
seeded 1% seed set, the full pool scored with ``rescore_pool`` (iteration 1: a full-pool iteration of the default
schedule 0,1,4,8), and the ``--query-frac`` most uncertain tasks "annotated" from the gold labels. This leaves the
score cache a UPS iteration needs, and one labeled set L and unlabeled pool U both configurations share.

Timed iteration (iteration 2), steps interleaved A-train, B-train, A-score, B-score so slow drift on the shared
machine hits both:
  A  standard:   AcquisitionModel.create(--standard-model, default "mpnet" = the PLASM teacher size) + fit on L
                 (albackend.services.training.train_config), then rescore_pool over U with UPS off (full pool).
  B  PLASM+UPS:  the same with --small-model (default "minilm-l6"), then rescore_pool over U, iteration 2 = a UPS
                 iteration (gamma 0.1, T 0.01) on the cache the previous iteration left.
  B' PLASM only: B's model scoring the full pool (separates the two savings; --no-plasm-only skips it).
Iteration time = train (create + fit) + inference (the whole rescore_pool call). Reduction = 1 - B / A, next to
the paper's Table 2 (ELECTRA vs DistilBERT with UPS on a V100: 63% over all 15 iterations, 68-76% on UPS
iterations 6-15).

    python bench/iteration.py                                # 4,000-task pool, ~10 min on 2 CPU cores
    python bench/iteration.py --pool-size 0                  # the whole 17,321-text pool (about an hour here)
    python bench/iteration.py --small-model splade-tiny
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)

from albackend.models.acquisition import AcquisitionModel  # noqa: E402
from albackend.models.device import pick_device  # noqa: E402
from albackend.services.predictions import resolve_strategy  # noqa: E402
from albackend.services.rescoring import Pool, rescore_pool  # noqa: E402
from albackend.settings import Settings  # noqa: E402
from albackend.services.training import train_config  # noqa: E402
from albackend.models.runtime import configure_runtime  # noqa: E402


def train(name: str, spec, rows, settings: Settings, device) -> tuple[AcquisitionModel, dict]:
    t0 = time.perf_counter()
    model = AcquisitionModel.create(name, spec, device=device, max_length=settings.max_length, seed=settings.seed,
                                    scoring_precision=settings.scoring_precision)
    create_s = time.perf_counter() - t0
    st = model.fit(bc.examples(rows), train_config(settings, spec))
    total = time.perf_counter() - t0
    print(f"  train {name}: create {create_s:.1f} s + fit {st['seconds']:.1f} s ({st['steps']} steps) "
          f"= {total:.1f} s")
    return model, {"create_s": create_s, "fit_s": st["seconds"], "train_s": total, "steps": st["steps"],
                   "final_loss": st["final_loss"], "params": sum(p.numel() for p in model.model.parameters())}


PROGRESS: dict = {"benchmark": "iteration", "partial": True, "steps": []}


def progress(out: Path, label: str, figures: dict) -> None:
    """Write what is measured so far: a run killed half-way still leaves its figures behind."""
    PROGRESS["steps"].append({"step": label, **figures})
    bc.write_json(out, PROGRESS)


def score(model: AcquisitionModel, pool: Pool, project_dir: Path, iteration: int, version: str,
          settings: Settings, label: str) -> dict:
    t0 = time.perf_counter()
    _, st = rescore_pool(model, pool, project_dir=project_dir, version=version, iteration=iteration,
                         strategy=resolve_strategy(model.spec, "auto"), settings=settings)
    st["wall_s"] = time.perf_counter() - t0
    print(f"  score {label}: {st['scored']:,}/{st['pool_size']:,} tasks ({'full' if st['full_pool'] else 'UPS'}), "
          f"{st['wall_s']:.1f} s")
    return st


def main(argv: list[str] | None = None) -> dict:
    configure_runtime()  # this process's transformers logging and tokenizers threads
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--standard-model", default="mpnet", help="acquisition model of the standard approach")
    ap.add_argument("--small-model", default="minilm-l6", help="PLASM's small acquisition model")
    ap.add_argument("--pool-csv", type=Path, default=bc.DEFAULT_POOL)
    ap.add_argument("--pool-size", type=int, default=4000, help="pool subset (0 = the whole pool)")
    ap.add_argument("--seed-frac", type=float, default=0.01, help="labeled seed, as a fraction of the pool")
    ap.add_argument("--query-frac", type=float, default=0.01, help="tasks queried by the previous iteration")
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--t", type=float, default=0.01, help="UPS temperature")
    ap.add_argument("--batch-size", type=int, default=64, help="inference batch size (INFER_BATCH_SIZE)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-steps", type=int, default=60)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--no-plasm-only", action="store_true", help="skip the small model's full-pool pass")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/iteration.json"))
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    spec = bc.agnews_spec()
    rows = bc.load_pool(args.pool_csv, seed=args.seed, limit=args.pool_size or None)
    n_seed = max(4, round(args.seed_frac * len(rows)))
    n_query = max(1, round(args.query_frac * len(rows)))
    seed_rows, unl_rows = bc.seed_split(rows, n_seed)
    print(f"device {device}; pool {len(rows):,}: seed {n_seed}, query {n_query}; standard {args.standard_model}, "
          f"small {args.small_model}")

    with tempfile.TemporaryDirectory(prefix="bench-iteration-") as tmp:
        tmp = Path(tmp)
        ups_on = dataclasses.replace(
            Settings.from_env(), model_dir=tmp, train_epochs=args.epochs, train_min_steps=args.min_steps,
            train_max_steps=0, max_length=args.max_length, infer_batch_size=args.batch_size, ups_enabled=True,
            ups_gamma=args.gamma, ups_t=args.t, ups_full_iterations="0,1,4,8", ups_full_every=0, seed=args.seed,
            device=str(device))
        ups_off = dataclasses.replace(ups_on, ups_enabled=False)
        dirs = {k: tmp / "projects" / k for k in ("standard", "plasm_ups", "plasm_only")}
        for d in dirs.values():
            d.mkdir(parents=True)

        # ---- previous iteration (setup): small model, full pool, query the most uncertain
        print("previous iteration (setup, PLASM + UPS configuration):")
        ids = np.arange(1, len(unl_rows) + 1, dtype=np.int64)
        m_prev, prev_train = train(args.small_model, spec, seed_rows, ups_on, device)
        progress(args.out, "previous: train small", prev_train)
        prev_score = score(m_prev, Pool(ids, [r.text for r in unl_rows], 0), dirs["plasm_ups"], 1, "prev-it1",
                           ups_on, "small, previous")
        progress(args.out, "previous: score small (full)", prev_score)
        del m_prev
        from albackend.algorithms.ups.cache import ScoreCache

        cache = ScoreCache.load(dirs["plasm_ups"] / "scores.npz")
        order = np.argsort(-cache.uncertainty, kind="stable")  # most uncertain first
        queried = set(cache.task_ids[order[:n_query]].tolist())
        labeled = seed_rows + [r for t, r in zip(ids, unl_rows) if int(t) in queried]
        keep = [i for i, t in enumerate(ids) if int(t) not in queried]
        pool = Pool(ids[keep], [unl_rows[i].text for i in keep], 0)
        print(f"labeled set L = {len(labeled)}, unlabeled pool U = {len(pool.texts):,}")

        # ---- the timed iteration, interleaved
        print("timed iteration 2:")
        m_a, train_a = train(args.standard_model, spec, labeled, ups_on, device)
        progress(args.out, "A: train standard", train_a)
        m_b, train_b = train(args.small_model, spec, labeled, ups_on, device)
        progress(args.out, "B: train small", train_b)
        score_a = score(m_a, pool, dirs["standard"], 2, "standard-it2", ups_off, "A standard")
        progress(args.out, "A: score standard (full)", score_a)
        del m_a
        score_b = score(m_b, pool, dirs["plasm_ups"], 2, "plasm-ups-it2", ups_on, "B PLASM+UPS")
        progress(args.out, "B: score small (UPS)", score_b)
        score_b_full = None if args.no_plasm_only else score(m_b, pool, dirs["plasm_only"], 2, "plasm-it2", ups_off,
                                                              "B' PLASM only")
        if not score_a["full_pool"] or score_b["full_pool"]:
            raise SystemExit("unexpected schedule: the standard pass must be full and the PLASM+UPS pass UPS")

    def cfg(name, tr, sc):
        return {"model": name, "train": tr, "inference": sc, "train_s": tr["train_s"], "inference_s": sc["wall_s"],
                "overall_s": tr["train_s"] + sc["wall_s"]}

    a = cfg(args.standard_model, train_a, score_a)
    b = cfg(args.small_model, train_b, score_b)
    configs = {"standard": a, "plasm_ups": b}
    if score_b_full is not None:
        configs["plasm_only"] = cfg(args.small_model, train_b, score_b_full)
    paper = {k: 1 - v["plasm_ups"] / v["standard"] for k, v in bc.PAPER_TABLE2.items()}
    result = {
        "benchmark": "iteration", "partial": False, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": str(device), "pool_size": len(rows), "labeled": len(labeled), "unlabeled": len(pool.texts),
        "previous_iteration": {"train": prev_train, "inference": prev_score},
        "configs": configs,
        "reduction": 1 - b["overall_s"] / a["overall_s"],
        "reduction_train": 1 - b["train_s"] / a["train_s"],
        "reduction_inference": 1 - b["inference_s"] / a["inference_s"],
        "speedup_overall": a["overall_s"] / b["overall_s"],
        "paper_reduction": paper,
        "machine": bc.machine_info(),
    }
    if "plasm_only" in configs:
        result["reduction_plasm_only"] = 1 - configs["plasm_only"]["overall_s"] / a["overall_s"]
        result["ups_inference_speedup_same_model"] = score_b_full["wall_s"] / score_b["wall_s"]

    bc.print_table(
        f"One AL iteration on AG News: |L| = {len(labeled)}, |U| = {len(pool.texts):,}, device {device}",
        ["configuration", "model", "train s", "inference s", "tasks scored", "overall s", "vs standard"],
        [[k, v["model"], v["train_s"], v["inference_s"], v["inference"]["scored"], v["overall_s"],
          v["overall_s"] / a["overall_s"]] for k, v in configs.items()])
    print(f"  reduction of the iteration time, PLASM + UPS vs standard: {result['reduction']:.1%} "
          f"(train {result['reduction_train']:.1%}, inference {result['reduction_inference']:.1%})")
    if "plasm_only" in configs:
        print(f"  PLASM alone: {result['reduction_plasm_only']:.1%}; UPS alone speeds the small model's pool "
              f"inference up {result['ups_inference_speedup_same_model']:.1f}x")
    print(f"  paper (Table 2, V100, ELECTRA vs DistilBERT+UPS): overall {paper['overall']:.1%}, iteration 6 "
          f"{paper['iter_6']:.1%}, 10 {paper['iter_10']:.1%}, 15 {paper['iter_15']:.1%} "
          f"(iteration 2, a full-pool one: {paper['iter_2']:.1%})")
    bc.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
