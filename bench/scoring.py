"""Pool-scoring benchmark: full pool vs UPS, optimized vs naive inference, achieved vs measured matmul FLOP/s.

1. Fine-tunes the acquisition model (default "minilm-l6") on a seeded 1% sample of the AG News pool with the
   product's recipe (albackend.services.training.train_config), then scores the pool twice with that same model through
   the product's own path, ``albackend.services.rescoring.rescore_pool`` on a real (temporary) project directory:
   iteration 1 = a full-pool iteration (default schedule 0,1,4,8), iteration 2 = the UPS iteration right after
   it (gamma 0.1, T 0.01: ``ScoreCache.select`` on the full pass's scores). Ratio of scoring times, tasks/s and
   real (unpadded) tokens/s.
2. On a subset (``--n``, default 2,000 texts not in the seed): ``AcquisitionModel.predict`` (length-sorted,
   dynamically padded, inference_mode) vs (a) every batch padded to max_length 256 in input order and
   (b) a plain ``transformers.pipeline("text-classification")`` over the same saved model (default batch size 1,
   and batch_size = --batch-size). Methods run ``--repeats`` times in rotating order; the best (least disturbed)
   time of each is compared, all times are kept in the JSON.
3. The machine's measured ``torch.matmul`` throughput (fp32 square matrices; bf16 too on CUDA), measured before
   and after the model timings, next to the model's forward FLOPs per token

       FLOPs/token ~= 2 * N_non-embedding + 2 * n_layers * seq * d_model   (Kaplan et al. 2020)

   summed exactly over the actual sequence lengths (real tokens = useful work; padded = executed work), giving
   achieved GFLOP/s and the fraction of the measured matmul peak. A bidirectional encoder really does QK^T and
   AV over all seq positions (4 * n_layers * seq * d); the JSON has that variant too (~1% more at AG News
   lengths).

    python bench/scoring.py                                 # 4,000-task pool, ~5 min on 2 CPU cores
    python bench/scoring.py --pool-size 0 --n 2000          # the whole 17,321-text pool
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

import torch  # noqa: E402

from albackend.models.acquisition import AcquisitionModel  # noqa: E402
from albackend.models.device import autocast, pick_device  # noqa: E402
from albackend.services.predictions import resolve_strategy  # noqa: E402
from albackend.services.rescoring import Pool, rescore_pool  # noqa: E402
from albackend.settings import Settings  # noqa: E402
from albackend.services.training import train_config  # noqa: E402
from albackend.algorithms.ups.sampler import expected_kept_fraction  # noqa: E402
from albackend.models.runtime import configure_runtime  # noqa: E402


# --------------------------------------------------------------------------------------------- matmul peak
def matmul_gflops(size: int, dtype: torch.dtype, device: torch.device, min_seconds: float = 1.0,
                  repeats: int = 3) -> dict:
    """Best-of-``repeats`` GFLOP/s of ``torch.matmul`` on (size x size) @ (size x size): 2*size^3 FLOPs each."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.matmul(a, b)  # warm-up
    sync()
    best, runs = 0.0, []
    for _ in range(repeats):
        k, t0 = 0, time.perf_counter()
        while True:
            torch.matmul(a, b)
            k += 1
            if device.type == "cuda" and k % 8:
                continue
            sync()
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                break
        g = 2.0 * size ** 3 * k / dt / 1e9
        runs.append(round(g, 2))
        best = max(best, g)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "gflops": round(best, 2), "runs": runs}


# --------------------------------------------------------------------------------------------- FLOPs model
def flop_model(model: torch.nn.Module) -> dict:
    cfg = model.config
    non_emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings." not in n)
    total = sum(p.numel() for p in model.parameters())
    return {"params_total": int(total), "params_non_embedding": int(non_emb),
            "n_layers": int(cfg.num_hidden_layers), "d_model": int(cfg.hidden_size)}


def forward_flops(fm: dict, batches: list[tuple[int, int]], lengths: np.ndarray | None = None,
                  attn_coef: int = 2) -> float:
    """Forward FLOPs. ``batches``: (batch rows, padded width) per batch -> executed FLOPs; or ``lengths`` of
    the real sequences -> useful FLOPs. Per sequence of length L: L * 2N + attn_coef * n_layers * L^2 * d."""
    n2, ld = 2.0 * fm["params_non_embedding"], attn_coef * fm["n_layers"] * fm["d_model"]
    if lengths is not None:
        L = np.asarray(lengths, dtype=np.float64)
        return float(L.sum() * n2 + ld * (L ** 2).sum())
    return float(sum(b * w * n2 + b * ld * w * w for b, w in batches))


def sorted_batches(lengths: np.ndarray, bs: int) -> list[tuple[int, int]]:
    """What run_model executes: stable length sort, each batch padded to its own longest sequence."""
    s = np.sort(lengths, kind="stable")
    return [(len(s[i:i + bs]), int(s[i:i + bs].max())) for i in range(0, len(s), bs)]


def unsorted_batches(lengths: np.ndarray, bs: int, width: int | None = None) -> list[tuple[int, int]]:
    return [(len(lengths[i:i + bs]), width or int(lengths[i:i + bs].max())) for i in range(0, len(lengths), bs)]


# --------------------------------------------------------------------------------------------- baselines
def naive_padded(model: AcquisitionModel, texts: list[str], bs: int, max_length: int) -> np.ndarray:
    """Baseline (a): input order, every batch padded to max_length (same model, same inference_mode)."""
    out = []
    net, dev = model.model.to(model.device).eval(), model.device
    with torch.inference_mode():
        for i in range(0, len(texts), bs):
            enc = model.tokenizer(texts[i:i + bs], padding="max_length", truncation=True, max_length=max_length,
                                  return_tensors="pt")
            enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            with autocast(dev):
                logits = net(**enc).logits.float()
            out.append(torch.softmax(logits, -1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.label_names)), np.float32)


def make_pipeline(model_dir: Path, device: torch.device):
    from transformers import pipeline

    kw = {"dtype": torch.bfloat16} if device.type == "cuda" else {}
    return pipeline("text-classification", model=str(model_dir), tokenizer=str(model_dir),
                    device=device if device.type == "cuda" else "cpu", **kw)


def run_pipeline(pipe, texts: list[str], labels: list[str], batch_size: int | None,
                 max_length: int) -> np.ndarray:
    kw = {"top_k": None, "truncation": True, "max_length": max_length}
    if batch_size:
        kw["batch_size"] = batch_size
    outs = pipe(texts, **kw)
    probs = np.zeros((len(texts), len(labels)), np.float32)
    col = {n: j for j, n in enumerate(labels)}
    for i, o in enumerate(outs):
        for d in o:
            probs[i, col[d["label"]]] = d["score"]
    return probs


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    configure_runtime()  # this process's transformers logging and tokenizers threads
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="minilm-l6", help="acquisition model: packaged name or local HF directory")
    ap.add_argument("--pool-csv", type=Path, default=bc.DEFAULT_POOL)
    ap.add_argument("--pool-size", type=int, default=4000, help="texts scored full vs UPS (0 = the whole pool)")
    ap.add_argument("--seed-frac", type=float, default=0.01, help="labeled seed: this fraction of the whole CSV")
    ap.add_argument("--n", type=int, default=2000, help="subset size for optimized-vs-naive")
    ap.add_argument("--repeats", type=int, default=2, help="rotations of the optimized/naive methods")
    ap.add_argument("--ups-repeats", type=int, default=2, help="full passes (each followed by --ups-inner UPS)")
    ap.add_argument("--ups-inner", type=int, default=3, help="UPS iterations timed after each full pass")
    ap.add_argument("--batch-size", type=int, default=64, help="inference batch size (INFER_BATCH_SIZE)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-steps", type=int, default=60)
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--t", type=float, default=0.01, help="UPS temperature")
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--matmul-seconds", type=float, default=1.0, help="minimum seconds per matmul measurement")
    ap.add_argument("--no-pipeline-batch1", action="store_true", help="skip the batch-size-1 pipeline baseline")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (auto: cuda + bf16 autocast when present)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/scoring.json"))
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    spec = bc.agnews_spec()
    rows = bc.load_pool(args.pool_csv, seed=args.seed)
    n_seed = max(4, round(args.seed_frac * len(rows)))
    seed_rows, _ = bc.seed_split(rows, n_seed)
    pool_rows = rows if args.pool_size <= 0 else rows[:args.pool_size]
    sub_rows = rows[n_seed:n_seed + args.n] or rows[:args.n]
    print(f"device {device}, model {args.model}, seed {len(seed_rows)} labeled, pool {len(pool_rows):,}, "
          f"subset {len(sub_rows):,}, torch threads {torch.get_num_threads()}")

    base = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        tmp = Path(tmp)
        settings = dataclasses.replace(
            base, model_dir=tmp / "models", acquisition_model=args.model, train_epochs=args.epochs,
            train_min_steps=args.min_steps, train_max_steps=0, max_length=args.max_length,
            infer_batch_size=args.batch_size, ups_enabled=True, ups_gamma=args.gamma, ups_t=args.t,
            ups_full_iterations="0,1,4,8", ups_full_every=0, seed=args.seed, device=str(device))

        # ---- matmul peak (1/2), before the model work
        mm = [matmul_gflops(args.matmul_size, torch.float32, device, args.matmul_seconds)]

        # ---- train
        t0 = time.perf_counter()
        model = AcquisitionModel.create(args.model, spec, device=device, max_length=args.max_length, seed=args.seed)
        create_s = time.perf_counter() - t0
        tstats = model.fit(bc.examples(seed_rows), train_config(settings, spec))
        print(f"trained on {len(seed_rows)} examples: {tstats['steps']} steps in {tstats['seconds']:.1f} s "
              f"(final loss {tstats['final_loss']:.3f})")
        model_dir = tmp / "saved-model"
        model.save(model_dir)
        fm = flop_model(model.model)
        strategy = resolve_strategy(spec, "auto")

        # ---- full pool vs UPS through rescore_pool (the product's path), same model
        pool = Pool(np.arange(1, len(pool_rows) + 1, dtype=np.int64), [r.text for r in pool_rows], 0)
        gold = {int(t): r.label for t, r in zip(pool.task_ids, pool_rows)}
        project_dir = settings.model_dir / "projects" / "bench"
        project_dir.mkdir(parents=True)
        pairs: list[dict] = []
        for rep in range(args.ups_repeats):
            pair: dict = {"full": None, "ups": []}
            # One full pass, then the UPS iteration --ups-inner times: the same model gives the same scores, so
            # the cache (and the seeded selection) is identical each time; several short UPS samples per long
            # full one keep a brief quiet or busy moment of the shared machine from deciding the ratio.
            for kind, iteration, j in [("full", 1, 0)] + [("ups", 2, j) for j in range(args.ups_inner)]:
                t1 = time.perf_counter()
                payloads, st = rescore_pool(model, pool, project_dir=project_dir,
                                            version=f"bench-{kind}-{rep}-{j}", iteration=iteration,
                                            strategy=strategy, settings=settings)
                st["wall_s"] = time.perf_counter() - t1
                if st["full_pool"] != (kind == "full"):
                    raise SystemExit(f"iteration {iteration} was expected to be {kind} (schedule changed?)")
                if kind == "full":
                    correct = sum(gold[p["task"]] == spec.labels.index(p["result"][0]["value"]["choices"][0])
                                  for p in payloads)
                    st["pool_accuracy"] = correct / max(1, len(payloads))
                    pair["full"] = st
                else:
                    pair["ups"].append(st)
                print(f"  [{rep}] {kind:4s}: {st['scored']:,} tasks, {st['tokens_scored']:,} tokens, "
                      f"score {st['seconds']['score']:.2f} s, whole call {st['wall_s']:.2f} s")
            pairs.append(pair)
        runs = {"full": [p["full"] for p in pairs], "ups": [u for p in pairs for u in p["ups"]]}

        def med(kind: str, key) -> float:
            return bc.median([key(st) for st in runs[kind]])

        full, ups = runs["full"][0], runs["ups"][0]  # counts are identical across repeats
        f_s, u_s = med("full", lambda st: st["seconds"]["score"]), med("ups", lambda st: st["seconds"]["score"])
        f_w, u_w = med("full", lambda st: st["wall_s"]), med("ups", lambda st: st["wall_s"])
        ups_res = {
            "gamma": args.gamma, "temperature": args.t, "pool_size": len(pool_rows),
            "timing": "median over runs (full: --ups-repeats runs; UPS: --ups-repeats x --ups-inner runs)",
            "full": {**full, "median_score_s": f_s, "median_wall_s": f_w},
            "ups": {**ups, "median_score_s": u_s, "median_wall_s": u_w},
            "pairs": pairs,
            "ups_fraction": ups["scored"] / full["scored"],
            "ups_expected_fraction": expected_kept_fraction(args.gamma, args.t),
            "time_ratio_full_over_ups": f_s / u_s,
            "time_ratio_per_pair": [p["full"]["seconds"]["score"] / bc.median([u["seconds"]["score"] for u in p["ups"]])
                                    for p in pairs],
            "token_ratio_full_over_ups": full["tokens_scored"] / max(1, ups["tokens_scored"]),
            "whole_call_ratio_full_over_ups": f_w / u_w,
            "tasks_per_s": {"full": full["scored"] / f_s, "ups": ups["scored"] / u_s},
            "tokens_per_s": {"full": full["tokens_scored"] / f_s, "ups": ups["tokens_scored"] / u_s},
            "mean_tokens_per_task": {"full": full["tokens_scored"] / full["scored"],
                                     "ups": ups["tokens_scored"] / ups["scored"]},
            "pool_accuracy_of_model": full["pool_accuracy"],
        }
        partial = {"benchmark": "scoring", "partial": True, "device": str(device), "model": args.model,
                   "full_vs_ups": ups_res, "matmul_before": mm[0], "machine": bc.machine_info()}
        bc.write_json(args.out, partial)  # a run killed later still leaves the first figures behind

        # ---- optimized vs naive on the subset (rotating order, best of repeats)
        texts = [r.text for r in sub_rows]
        labels = list(model.label_names)
        pipe = make_pipeline(model_dir, device)
        pad_to = min(args.max_length, int(getattr(model.model.config, "max_position_embeddings", args.max_length)))
        methods = {
            "optimized (AcquisitionModel.predict)": lambda x: model.predict(x, batch_size=args.batch_size).probs,
            f"naive: pad to {pad_to}, unsorted": lambda x: naive_padded(model, x, args.batch_size, pad_to),
            f"pipeline batch_size={args.batch_size}": lambda x: run_pipeline(pipe, x, labels, args.batch_size,
                                                                             args.max_length),
        }
        if not args.no_pipeline_batch1:
            methods["pipeline (default batch 1)"] = lambda x: run_pipeline(pipe, x, labels, None, args.max_length)
        names = list(methods)
        for name in names:  # warm-up: first-call costs (allocator, lazy init) stay out of every timing
            methods[name](texts[:16])
        times: dict[str, list[float]] = {n: [] for n in names}
        probs: dict[str, np.ndarray] = {}
        for rep in range(args.repeats):
            for k in range(len(names)):
                name = names[(k + rep) % len(names)]
                t1 = time.perf_counter()
                probs[name] = np.asarray(methods[name](texts))
                times[name].append(time.perf_counter() - t1)
            partial["optimized_vs_naive_times_so_far"] = times
            bc.write_json(args.out, partial)
            print(f"  repeat {rep}: " + ", ".join(f"{n.split(' (')[0].split(':')[0]} {times[n][-1]:.2f}s"
                                                  for n in names))
        ref = names[0]
        lengths = np.array([len(x) for x in model.tokenizer(texts, truncation=True,
                                                            max_length=args.max_length)["input_ids"]])
        padded = {
            names[0]: sorted_batches(lengths, args.batch_size),
            names[1]: unsorted_batches(np.minimum(lengths, pad_to), args.batch_size, pad_to),
            names[2]: unsorted_batches(lengths, args.batch_size),
        }
        if len(names) > 3:
            padded[names[3]] = unsorted_batches(lengths, 1)
        useful = forward_flops(fm, [], lengths)
        naive = {}
        for name in names:
            t = min(times[name])
            executed_tokens = sum(b * w for b, w in padded[name])
            naive[name] = {
                "best_s": t, "all_s": times[name], "texts_per_s": len(texts) / t,
                "real_tokens_per_s": float(lengths.sum()) / t, "executed_tokens": int(executed_tokens),
                "padding_overhead": executed_tokens / float(lengths.sum()),
                "speedup_of_optimized": t / min(times[ref]),
                "argmax_agreement_with_optimized": float((probs[name].argmax(1) == probs[ref].argmax(1)).mean()),
                "max_abs_prob_diff": float(np.abs(probs[name] - probs[ref]).max()) if len(texts) else 0.0,
                "useful_gflops": useful / t / 1e9,
                "executed_gflops": forward_flops(fm, padded[name]) / t / 1e9,
            }

        # ---- matmul peak (2/2), after the model work
        mm.append(matmul_gflops(args.matmul_size, torch.float32, device, args.matmul_seconds))
        peak = {"fp32_gflops": max(m["gflops"] for m in mm), "fp32_runs": mm}
        if device.type == "cuda":
            bf = matmul_gflops(args.matmul_size * 2, torch.bfloat16, device, args.matmul_seconds)
            peak.update(bf16_gflops=bf["gflops"], bf16_runs=[bf])
        ref_peak = peak.get("bf16_gflops", peak["fp32_gflops"])  # the model runs under bf16 autocast on CUDA

        full_lengths = np.array([len(x) for x in model.tokenizer(pool.texts, truncation=True,
                                                                 max_length=args.max_length)["input_ids"]])
        full_useful = forward_flops(fm, [], full_lengths)
        full_exec = forward_flops(fm, sorted_batches(full_lengths, args.batch_size))
        opt = naive[ref]
        flops = {
            **fm,
            "formula": "FLOPs/token ~= 2*N_non_embedding + 2*n_layers*seq*d_model (summed per sequence: "
                       "L*2N + 2*n_layers*L^2*d)",
            "flops_per_token_at_mean_length": 2 * fm["params_non_embedding"]
            + 2 * fm["n_layers"] * float(full_lengths.mean()) * fm["d_model"],
            "mean_tokens_per_text": float(full_lengths.mean()),
            "encoder_variant_4x_attention_extra": forward_flops(fm, [], full_lengths, attn_coef=4) / full_useful - 1,
            "matmul_peak_gflops_used": ref_peak,
            "subset_optimized_useful_gflops": opt["useful_gflops"],
            "subset_optimized_executed_gflops": opt["executed_gflops"],
            "subset_optimized_fraction_of_peak_useful": opt["useful_gflops"] / ref_peak,
            "subset_optimized_fraction_of_peak_executed": opt["executed_gflops"] / ref_peak,
            "full_pool_score_useful_gflops": full_useful / f_s / 1e9,
            "full_pool_score_executed_gflops": full_exec / f_s / 1e9,
            "full_pool_fraction_of_peak_useful": full_useful / f_s / 1e9 / ref_peak,
            "full_pool_padding_overhead": full_exec / full_useful,
        }

    result = {
        "benchmark": "scoring", "partial": False, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": str(device), "model": args.model, "n_seed": len(seed_rows),
        "training": {"create_s": create_s, **{k: tstats[k] for k in ("steps", "seconds", "final_loss")}},
        "full_vs_ups": ups_res, "optimized_vs_naive": {"n_texts": len(texts), "batch_size": args.batch_size,
                                                       "methods": naive},
        "matmul": peak, "flops": flops, "machine": bc.machine_info(),
    }

    # ---- tables
    bc.print_table(
        f"Full pool vs UPS (gamma={args.gamma}, T={args.t}), same model, rescore_pool; {len(pool_rows):,} tasks "
        f"(median seconds)",
        ["", "tasks", "tokens", "score s", "whole call s", "tasks/s", "tokens/s"],
        [[k, st["scored"], st["tokens_scored"], st["median_score_s"], st["median_wall_s"],
          ups_res["tasks_per_s"][k], ups_res["tokens_per_s"][k]] for k, st in
         (("full", ups_res["full"]), ("ups", ups_res["ups"]))])
    print(f"  scoring time ratio full/UPS = {ups_res['time_ratio_full_over_ups']:.2f}x (medians) "
          f"(per pair: {', '.join(f'{r:.2f}x' for r in ups_res['time_ratio_per_pair'])}; work ratio in real tokens "
          f"{ups_res['token_ratio_full_over_ups']:.2f}x; whole rescore_pool call "
          f"{ups_res['whole_call_ratio_full_over_ups']:.2f}x); UPS scored "
          f"{ups_res['ups_fraction']:.3f} of the pool (formula {ups_res['ups_expected_fraction']:.3f}); "
          f"model accuracy on the pool {ups_res['pool_accuracy_of_model']:.3f}")
    bc.print_table(
        f"Optimized vs naive inference, {len(texts):,} texts, batch {args.batch_size} (best of {args.repeats})",
        ["method", "best s", "texts/s", "real tok/s", "pad overhead", "optimized speed-up", "argmax agree"],
        [[n, v["best_s"], v["texts_per_s"], v["real_tokens_per_s"], v["padding_overhead"],
          v["speedup_of_optimized"], v["argmax_agreement_with_optimized"]] for n, v in naive.items()])
    bc.print_table(
        "Throughput vs measured matmul peak",
        ["", "value"],
        [["matmul fp32 GFLOP/s (best of before/after)", peak["fp32_gflops"]],
         *([["matmul bf16 GFLOP/s", peak["bf16_gflops"]]] if "bf16_gflops" in peak else []),
         ["non-embedding params", fm["params_non_embedding"]],
         ["FLOPs/token at mean length (2N + 2*n_layers*seq*d)", flops["flops_per_token_at_mean_length"]],
         ["subset predict: useful GFLOP/s", opt["useful_gflops"]],
         ["subset predict: fraction of matmul peak (useful)", flops["subset_optimized_fraction_of_peak_useful"]],
         ["subset predict: fraction of matmul peak (executed)", flops["subset_optimized_fraction_of_peak_executed"]],
         ["full-pool rescore: useful GFLOP/s", flops["full_pool_score_useful_gflops"]],
         ["full-pool rescore: fraction of matmul peak", flops["full_pool_fraction_of_peak_useful"]]])
    bc.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
