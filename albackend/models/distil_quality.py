"""The quality report of a distilled student (the paper's Figure 3).

Fine-tune the student, its teacher and an unrelated model (default MPNet) on the same small labeled set, score a
pool sample with least confidence, compare the Spearman correlations student~teacher and teacher~unrelated, and
time the student's and the teacher's scoring of the same sample. Fine-tuning and scoring reuse AcquisitionModel.
"""
from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel
from albackend.models.registry import ModelNotFound
from albackend.models.train import TrainConfig
from albackend.algorithms.strategies import least_confident

PAIRS = (("student", "teacher"), ("teacher", "unrelated"), ("student", "unrelated"), ("teacher", "teacher_reseeded"))


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


@dataclasses.dataclass
class QualityData:
    """The labeled set every model is fine-tuned on and the pool sample every model scores."""

    spec: TaskSpec
    train: Sequence[Example]
    pool: Sequence[str]
    pool_labels: Sequence[int] | None = None


@dataclasses.dataclass
class QualityOptions:
    unrelated: str | None = "mpnet"
    train_cfg: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    max_length: int = 128
    batch_size: int = 64
    device: str = "auto"
    seed: int = 42
    noise_baseline: bool = False
    timing_repeats: int = 2


def _fine_tune(role: str, name: str, seed: int, data: QualityData, opts: QualityOptions, progress: bool):
    """(model, info, LC scores of the pool) of one fine-tuned model, or (None, unavailable info, None)."""
    try:
        m = AcquisitionModel.create(name, data.spec, device=opts.device, max_length=opts.max_length, seed=seed)
    except ModelNotFound as exc:
        return None, {"model": name, "available": False, "reason": str(exc)}, None
    bar = tqdm(desc=f"fine-tune {role}", unit="step", disable=not progress, dynamic_ncols=True)
    stats = m.fit(data.train, dataclasses.replace(opts.train_cfg, seed=seed),
                  on_step=lambda i, n, loss: (setattr(bar, "total", n), bar.update(1)))
    bar.close()
    pred = m.predict(data.pool, batch_size=opts.batch_size)
    info = {"model": name, "available": True, "seed": seed,
            "parameters": int(sum(p.numel() for p in m.model.parameters())),
            "fit_seconds": round(stats["seconds"], 2), "fit_steps": stats["steps"],
            "score_seconds": round(pred.seconds, 3)}
    if data.pool_labels is not None:
        info["pool_accuracy"] = round(float(np.mean(pred.probs.argmax(1) == np.asarray(data.pool_labels))), 4)
    return m, info, least_confident(pred.probs)


def _speed(kept: dict[str, AcquisitionModel], pool: Sequence[str], opts: QualityOptions) -> dict:
    """Scoring speed of student and teacher, interleaved in small chunks so CPU contention hits both alike."""
    chunk, spent = 4 * opts.batch_size, {r: [] for r in kept}
    for _ in range(opts.timing_repeats):
        for role in kept:
            spent[role].append(0.0)
        for i in range(0, len(pool), chunk):
            for role, m in kept.items():
                spent[role][-1] += m.predict(pool[i:i + chunk], batch_size=opts.batch_size).seconds
    best = {r: min(v) for r, v in spent.items()}
    speed = {f"{r}_texts_per_second": round(len(pool) / best[r], 1) for r in kept}
    speed.update({"speedup": round(best["teacher"] / best["student"], 2), "batch_size": opts.batch_size,
                  "n_texts": len(pool), "timing": f"best of {opts.timing_repeats} runs, interleaved in chunks "
                  f"of {chunk} texts", "runs_seconds": {r: [round(x, 2) for x in v] for r, v in spent.items()}})
    return speed


def _verdict(corr: dict, unrelated: str | None) -> tuple[str, bool | None]:
    st, tu = corr.get("student~teacher"), corr.get("teacher~unrelated")
    if tu is None:
        return f"unrelated model {unrelated!r} unavailable: no teacher~unrelated baseline", None
    if st is None:
        return "student unavailable: no student~teacher correlation", None
    wins = st > tu
    return ("PASS: student~teacher > teacher~unrelated" if wins else "FAIL: student~teacher <= teacher~unrelated"), wins


def quality_report(student: str, teacher: str, data: QualityData, opts: QualityOptions = QualityOptions(), *,
                   on_progress: Callable[[dict], None] | None = None, progress: bool = False,
                   scores_path: str | Path | None = None) -> dict:
    """Fine-tune every model, correlate their LC scores, time student vs teacher; ``scores_path``: raw scores."""
    runs = [("student", student, opts.seed), ("teacher", teacher, opts.seed)]
    if opts.noise_baseline:
        runs.append(("teacher_reseeded", teacher, opts.seed + 1))
    if opts.unrelated and opts.unrelated.lower() != "none":
        runs.append(("unrelated", opts.unrelated, opts.seed))
    lc, models, kept = {}, {}, {}
    for role, name, seed in runs:
        if on_progress:
            on_progress({"stage": f"quality: fine-tune {role}", "model": name})
        m, models[role], scores = _fine_tune(role, name, seed, data, opts, progress)
        if m is None:
            continue
        lc[role] = scores
        if role in ("student", "teacher"):
            kept[role] = m
        del m
        gc.collect()
    if scores_path:  # the raw LC scores, for further analysis (plots, other correlation measures)
        np.savez(scores_path, **{f"lc_{r}": v for r, v in lc.items()})
    speed = _speed(kept, data.pool, opts) if {"student", "teacher"} <= kept.keys() else {}
    kept.clear()
    corr = {f"{a}~{b}": round(spearman(lc[a], lc[b]), 4) for a, b in PAIRS if a in lc and b in lc}
    verdict, wins = _verdict(corr, opts.unrelated)
    return {"spec_labels": list(data.spec.labels), "n_train": len(data.train), "n_pool": len(data.pool),
            "train_config": dataclasses.asdict(opts.train_cfg), "models": models, "spearman_lc": corr,
            "speed": speed, "pair_wins": wins, "verdict": verdict}
