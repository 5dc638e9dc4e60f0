"""What a /predict batch of huge texts costs: 10 x 100 KB against 10 short texts, tokenizing and scoring
with the packaged acquisition model at MAX_LENGTH 256 (issue 10: texts are cut by characters before the
tokenizer sees them, so a huge text costs what a MAX_LENGTH-long one does).

    .venv/bin/python bench/long_texts.py [--model minilm-l6] [--repeats 5]

Writes bench/out/long_texts.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)

import torch  # noqa: E402

from albackend.models.acquisition import AcquisitionModel  # noqa: E402
from albackend.models.infer import clip_chars  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = AcquisitionModel.create(args.model, bc.agnews_spec(), device="cpu", max_length=args.max_length, seed=0)
    words = "the minister said the league would vote on the budget after the match " * 2000
    huge = [words[:100_000]] * 10
    short = ["the match ended with a late goal by the striker"] * 10
    full = [words[: args.max_length * 5]] * 10  # texts that fill MAX_LENGTH sub-words exactly
    tok = model.tokenizer
    res = {
        "tokenize_100KB_unclipped_s": best_of(lambda: tok(huge, truncation=True, max_length=args.max_length), args.repeats),
        "tokenize_100KB_clipped_s": best_of(lambda: tok(clip_chars(huge, args.max_length), truncation=True,
                                                        max_length=args.max_length), args.repeats),
        "predict_10x100KB_s": best_of(lambda: model.predict(huge), args.repeats),
        "predict_10_full_length_s": best_of(lambda: model.predict(full), args.repeats),
        "predict_10_short_s": best_of(lambda: model.predict(short), args.repeats),
    }
    res["predict_100KB_over_full_length"] = res["predict_10x100KB_s"] / res["predict_10_full_length_s"]
    bc.print_table(f"10-text batches, {args.model}, MAX_LENGTH {args.max_length} (load {os.getloadavg()[0]:.1f})",
                   ["measure", "value"], [(k, round(v, 4)) for k, v in res.items()])
    bc.write_json(Path(__file__).resolve().parent / "out" / "long_texts.json",
                  {"machine": bc.machine_info(), "load": os.getloadavg(), "args": vars(args), "results": res})


if __name__ == "__main__":
    main()
