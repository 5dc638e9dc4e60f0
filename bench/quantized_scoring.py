"""CPU scoring precision: fp32 vs int8 (torch dynamic quantization) vs ONNX Runtime (fp32 and int8).

1. Fine-tunes the acquisition model (default minilm-l6) on a seeded gold set of ``--gold`` AG News texts with
   the product's recipe (``AcquisitionModel.fit`` with ``albackend.services.training.train_config``).
2. Scores the pool (``--pool-size``, 0 = the whole 17,321-text pool) with every variant in the same run:
     fp32       ``AcquisitionModel.predict`` as the product runs it (SCORING_PRECISION=fp32)
     int8       the same call with SCORING_PRECISION=int8: the dynamically quantized copy of the same weights
     onnx-fp32  the same weights exported with torch.onnx, run by ONNX Runtime (length-sorted, dynamic padding
     onnx-int8  like the product), and its onnxruntime.quantization.quantize_dynamic int8 version
   To keep the shared machine's load changes from deciding the ratios, the pool is cut into ``--chunks``
   chunks and every chunk is scored by every variant back to back, in rotating order, ``--repeats`` times; the
   time of a variant is the sum over its chunks (tokenization included, as in the product).
3. Reports real tokens/s, the speed-up over fp32 (at the same ``--threads``), and how well each variant keeps
   fp32's ranking: Spearman of the least-confident uncertainty (1 - max p), overlap of the top 10% most
   uncertain, mean / max |delta p|, argmax agreement, pool accuracy. The criteria for SCORING_PRECISION=auto:
   Spearman >= 0.99, top-10% overlap >= 0.95, speed-up >= 1.8x.

    python bench/quantized_scoring.py --pool-size 4000                # a subset
    python bench/quantized_scoring.py --pool-size 0                   # the whole pool
    python bench/quantized_scoring.py --threads 1,2                   # torch / ORT thread counts to compare
    OMP_NUM_THREADS=1 python bench/quantized_scoring.py --threads 1,2  # on a busy machine: train on 1 thread
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)

import torch  # noqa: E402

from albackend.models.acquisition import AcquisitionModel  # noqa: E402
from albackend.models.infer import encode  # noqa: E402
from albackend.models.train import collate  # noqa: E402
from albackend.settings import Settings  # noqa: E402
from albackend.algorithms.strategies import fit_mahalanobis, mahalanobis  # noqa: E402
from albackend.services.training import train_config  # noqa: E402

VARIANTS = ("fp32", "int8", "onnx-fp32", "onnx-int8")
CRITERIA = {"spearman_lc": 0.99, "top10_overlap": 0.95, "speedup": 1.8}
Scorer = Callable[[list[str]], tuple[np.ndarray, int]]


# --------------------------------------------------------------------------------------------- agreement
def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), like scipy.stats.rankdata."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def top_overlap(a: np.ndarray, b: np.ndarray, frac: float = 0.1) -> float:
    """Share of the ``frac`` highest values of ``a`` that are also among the ``frac`` highest of ``b``."""
    k = max(1, int(np.ceil(frac * len(a))))
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


def agreement(ref: np.ndarray, probs: np.ndarray, gold: np.ndarray) -> dict:
    """How well ``probs`` keeps the ranking of ``ref`` (both (N, C) class probabilities)."""
    u_ref, u = 1.0 - ref.max(1), 1.0 - probs.max(1)
    d = np.abs(ref - probs)
    return {"spearman_lc": spearman(u_ref, u), "top10_overlap": top_overlap(u_ref, u),
            "mean_abs_dprob": float(d.mean()), "max_abs_dprob": float(d.max()),
            "argmax_agreement": float((ref.argmax(1) == probs.argmax(1)).mean()),
            "accuracy": float((probs.argmax(1) == gold).mean())}


# --------------------------------------------------------------------------------------------- scorers
def product_scorer(model: AcquisitionModel, precision: str, batch_size: int) -> tuple[Scorer, float]:
    """The product's predict() with SCORING_PRECISION=``precision`` on the same weights; (scorer, derive s)."""
    view = AcquisitionModel(model.spec, model.tokenizer, model.model, model.meta, model.device, model.max_length,
                            scoring_precision=precision)
    t0 = time.perf_counter()
    _, got = view.scoring_module()  # derive (and cache) the int8 copy outside the timings
    derive_s = time.perf_counter() - t0
    if got != precision:
        raise SystemExit(f"asked for {precision} scoring, got {got} (see the log for the reason)")

    def score(texts: list[str]) -> tuple[np.ndarray, int]:
        p = view.predict(texts, batch_size=batch_size)
        return p.probs, p.n_tokens
    return score, derive_s


def export_onnx(model: AcquisitionModel, directory: Path) -> dict[str, Path]:
    """fp32 ONNX export of the trained model and its ORT dynamic-int8 version; paths by variant name."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, int8 = directory / "model.onnx", directory / "model.int8.onnx"
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 2023, 102, 0]])
    net = model.model.eval()
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # ORT's quantizer logs a pre-processing hint on the root logger
    try:
        with torch.inference_mode(), warnings.catch_warnings():  # tracer / legacy-exporter notices, not problems
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (ids, (ids > 0).long()), str(fp32), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return {"onnx-fp32": fp32, "onnx-int8": int8}


def ort_scorer(path: Path, model: AcquisitionModel, batch_size: int, threads: int) -> Scorer:
    """ONNX Runtime with the product's batching: tokenize, sort by length, pad each batch to its longest."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    pad = model.tokenizer.pad_token_id or 0

    def score(texts: list[str]) -> tuple[np.ndarray, int]:
        enc = encode(model.tokenizer, texts, model.max_length, words=False)
        order = np.argsort([len(x) for x in enc.input_ids], kind="stable")
        logits = np.zeros((len(texts), len(model.label_names)), np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            b = collate([{"input_ids": enc.input_ids[i]} for i in idx], pad)
            logits[idx] = sess.run(None, {"input_ids": b["input_ids"].numpy(),
                                          "attention_mask": b["attention_mask"].numpy()})[0]
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32), enc.n_tokens
    return score


def mahalanobis_agreement(model: AcquisitionModel, gold_rows: list, texts: list[str], batch_size: int) -> dict:
    """int8 vs fp32 for the Mahalanobis strategy (untimed): each precision fits the class Gaussians on its own
    gold embeddings, as a retrain does, then scores ``texts``; agreement of the distances (far = uncertain)."""
    labels = np.array([r.label for r in gold_rows])
    dist = {}
    for precision in ("fp32", "int8"):
        view = AcquisitionModel(model.spec, model.tokenizer, model.model, model.meta, model.device, model.max_length,
                                scoring_precision=precision)
        fit = fit_mahalanobis(view.predict([r.text for r in gold_rows], batch_size=batch_size,
                                           embeddings=True).embeddings, labels)
        dist[precision] = mahalanobis(view.predict(texts, batch_size=batch_size, embeddings=True).embeddings, fit)
    return {"n_texts": len(texts), "spearman": spearman(dist["fp32"], dist["int8"]),
            "top10_overlap": top_overlap(dist["fp32"], dist["int8"]),
            "mean_rel_ddist": float(np.mean(np.abs(dist["int8"] - dist["fp32"]) / np.maximum(dist["fp32"], 1e-12)))}


# --------------------------------------------------------------------------------------------- timing
def interleaved(scorers: dict[str, Scorer], texts: list[str], chunks: int, repeats: int) -> dict:
    """Score every chunk with every variant back to back (rotating order); sums per variant."""
    bounds = np.linspace(0, len(texts), max(1, min(chunks, len(texts))) + 1).astype(int)
    names = list(scorers)
    secs = {n: [[] for _ in range(len(bounds) - 1)] for n in names}
    probs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    tokens = {n: 0 for n in names}
    loads = []
    for r in range(repeats):
        for c in range(len(bounds) - 1):
            part = texts[bounds[c]:bounds[c + 1]]
            k = (r * (len(bounds) - 1) + c) % len(names)
            for n in names[k:] + names[:k]:
                t0 = time.perf_counter()
                p, ntok = scorers[n](part)
                secs[n][c].append(time.perf_counter() - t0)
                if r == 0:
                    probs[n].append(p)
                    tokens[n] += ntok
            loads.append(os.getloadavg()[0])
        print(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {sum(s[-1] for s in secs[n]):.1f} s" for n in names)
              + f" (load {loads[-1]:.1f})", flush=True)
    return {"seconds": secs, "probs": {n: np.concatenate(v) for n, v in probs.items()}, "tokens": tokens,
            "load_1m": loads}


def summarize(run: dict, gold: np.ndarray, base: str = "fp32") -> dict:
    """Per variant: tokens/s, speed-up over ``base`` (total and per chunk), agreement with ``base``."""
    total = {n: float(sum(min(c) for c in s)) for n, s in run["seconds"].items()}  # best repeat of each chunk
    out = {}
    for n, s in run["seconds"].items():
        per_chunk = [min(b) / min(c) for b, c in zip(run["seconds"][base], s)]
        row = {"seconds": total[n], "tokens": run["tokens"][n], "tokens_per_s": run["tokens"][n] / total[n],
               "speedup": total[base] / total[n], "speedup_per_chunk": per_chunk,
               **agreement(run["probs"][base], run["probs"][n], gold)}
        row["passes"] = all(row[k] >= v for k, v in CRITERIA.items()) if n != base else None
        out[n] = row
    return out


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="minilm-l6", help="acquisition model: packaged name or local HF directory")
    ap.add_argument("--pool-csv", type=Path, default=bc.DEFAULT_POOL)
    ap.add_argument("--pool-size", type=int, default=4000, help="texts scored (0 = the whole pool)")
    ap.add_argument("--gold", type=int, default=200, help="labeled texts the model is fine-tuned on")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--threads", default="0", help="comma-separated torch/ORT thread counts (0 = torch's default)")
    ap.add_argument("--chunks", type=int, default=8, help="pool chunks; each is scored by every variant in turn")
    ap.add_argument("--repeats", type=int, default=1, help="passes over the chunks (best time per chunk counts)")
    ap.add_argument("--batch-size", type=int, default=64, help="inference batch size (INFER_BATCH_SIZE)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-steps", type=int, default=60)
    ap.add_argument("--mahalanobis-n", type=int, default=2000,
                    help="pool texts for the untimed int8-vs-fp32 Mahalanobis check (0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/quantized_scoring.json"))
    args = ap.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or "fp32" not in args.variants:
        ap.error(f"--variants must include fp32 and only name {', '.join(VARIANTS)} (got {sorted(unknown)})")
    args.threads = [int(t) for t in args.threads.split(",")]
    return args


def train(args: argparse.Namespace, gold_rows: list) -> tuple[AcquisitionModel, dict]:
    spec = bc.agnews_spec()
    settings = dataclasses.replace(Settings.from_env(), acquisition_model=args.model, train_epochs=args.epochs,
                                   train_min_steps=args.min_steps, train_max_steps=0, max_length=args.max_length,
                                   seed=args.seed, device="cpu")
    model = AcquisitionModel.create(args.model, spec, device="cpu", max_length=args.max_length, seed=args.seed)
    model.scoring_precision = "fp32"
    stats = model.fit(bc.examples(gold_rows), train_config(settings, spec))
    print(f"trained on {len(gold_rows)} gold texts: {stats['steps']} steps in {stats['seconds']:.1f} s "
          f"(final loss {stats['final_loss']:.3f})", flush=True)
    return model, {k: stats[k] for k in ("steps", "seconds", "final_loss")}


def onnx_available() -> str | None:
    """Why the ONNX variants cannot run here, or None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc.name}): pip install onnx onnxruntime"
    return None


def build_scorers(args, model, threads: int, onnx_paths: dict) -> tuple[dict[str, Scorer], dict]:
    scorers, derive = {}, {}
    for v in args.variants:
        if v.startswith("onnx"):
            if v in onnx_paths:
                scorers[v] = ort_scorer(onnx_paths[v], model, args.batch_size, threads)
        else:
            scorers[v], derive[v] = product_scorer(model, v, args.batch_size)
    return scorers, derive


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    rows = bc.load_pool(args.pool_csv, seed=args.seed)
    gold_rows, _ = bc.seed_split(rows, args.gold)
    pool_rows = rows if args.pool_size <= 0 else rows[:args.pool_size]
    texts, gold = [r.text for r in pool_rows], np.array([r.label for r in pool_rows])
    default_threads = torch.get_num_threads()
    uptime_start = os.getloadavg()
    print(f"model {args.model}, gold {len(gold_rows)}, pool {len(texts):,}, variants {','.join(args.variants)}, "
          f"threads {args.threads} (default {default_threads}), load average {uptime_start}", flush=True)
    model, tstats = train(args, gold_rows)
    skipped, onnx_paths, convert = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        if any(v.startswith("onnx") for v in args.variants):
            why = onnx_available()
            if why:
                skipped = {v: why for v in args.variants if v.startswith("onnx")}
            else:
                t0 = time.perf_counter()
                onnx_paths = export_onnx(model, Path(tmp))
                convert["onnx_export_and_quantize_s"] = time.perf_counter() - t0
        runs = {}
        for t in args.threads:
            n_threads = t or default_threads
            torch.set_num_threads(n_threads)
            scorers, derive = build_scorers(args, model, n_threads, onnx_paths)
            print(f"threads {n_threads}: scoring {len(texts):,} texts x {len(scorers)} variants", flush=True)
            run = interleaved(scorers, texts, args.chunks, args.repeats)
            runs[str(n_threads)] = {"variants": summarize(run, gold), "derive_s": derive,
                                    "load_1m_mean": float(np.mean(run["load_1m"])),
                                    "load_1m_max": float(np.max(run["load_1m"]))}
        torch.set_num_threads(default_threads)
    maha = (mahalanobis_agreement(model, gold_rows, texts[:args.mahalanobis_n], args.batch_size)
            if args.mahalanobis_n > 0 and "int8" in args.variants else None)
    result = report(args, runs, skipped, convert, tstats, len(gold_rows), len(texts), uptime_start, maha)
    bc.write_json(args.out, result)
    return result


def recommend(variants: dict) -> str:
    """The product's int8 variant if it passes every criterion (ONNX is compared, not shipped); fp32 otherwise."""
    return "int8" if variants.get("int8", {}).get("passes") else "fp32"


def report(args, runs: dict, skipped: dict, convert: dict, tstats: dict, n_gold: int, n_pool: int,
           load_start: tuple, maha: dict | None) -> dict:
    for t, run in runs.items():
        bc.print_table(
            f"{n_pool:,} texts, {t} thread(s), batch {args.batch_size}, {args.chunks} interleaved chunks x "
            f"{args.repeats} (load avg during run: mean {run['load_1m_mean']:.1f}, max {run['load_1m_max']:.1f})",
            ["variant", "s", "tokens/s", "speed-up", "chunk speed-ups", "Spearman LC", "top-10% overlap",
             "mean |dp|", "max |dp|", "argmax agree", "accuracy", "passes"],
            [[n, v["seconds"], v["tokens_per_s"], v["speedup"],
              f"{min(v['speedup_per_chunk']):.2f}-{max(v['speedup_per_chunk']):.2f}", v["spearman_lc"],
              v["top10_overlap"], v["mean_abs_dprob"], v["max_abs_dprob"], v["argmax_agreement"], v["accuracy"],
              "-" if v["passes"] is None else str(v["passes"])] for n, v in run["variants"].items()])
        derive = ", ".join(f"{k} {s:.2f} s" for k, s in run["derive_s"].items())
        print(f"  derivation (once per trained model): {derive}")
    for v, why in skipped.items():
        print(f"  {v}: skipped, {why}")
    if convert:
        print(f"  ONNX export + ORT quantization: {convert['onnx_export_and_quantize_s']:.1f} s")
    if maha:
        print(f"  Mahalanobis, int8 vs fp32 on {maha['n_texts']:,} texts: Spearman {maha['spearman']:.4f}, top-10% "
              f"overlap {maha['top10_overlap']:.3f}, mean relative |d distance| {maha['mean_rel_ddist']:.4f}")
    recs = [recommend(run["variants"]) for run in runs.values()]
    rec = "int8" if recs and all(r == "int8" for r in recs) else "fp32"  # must pass at every thread count
    load_end = os.getloadavg()
    print(f"criteria {CRITERIA}; recommended SCORING_PRECISION=auto -> {rec} on this CPU")
    print(f"load average at start {load_start}, at end {load_end} on {os.cpu_count()} CPUs")
    return {"benchmark": "quantized_scoring", "model": args.model, "n_gold": n_gold, "pool_size": n_pool,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "criteria": CRITERIA, "training": tstats, "runs_by_threads": runs, "skipped": skipped,
            "conversion": convert, "mahalanobis": maha, "recommended_auto": rec, "load_average_start": list(load_start),
            "load_average_end": list(load_end), "machine": bc.machine_info()}


if __name__ == "__main__":
    main()
