"""One active-learning scoring round: UPS as a wrapper around any uncertainty scorer (numpy only).

Why one home: the live backend (after each retrain) and the offline emulation must run the *same* round, or the
emulation no longer proves anything about the product. Inference is injected as a callable ``score(task_ids) ->
(uncertainty, extra)`` — the way baal injects ``get_probabilities`` — so this module never sees a model.

A round is planned, then run in priority order:

1. ``plan_round`` syncs the score cache with the unlabeled pool and picks what to rescore — the whole pool on a
   full-pool iteration, else the UPS subsample — with a per-iteration RNG (``round_rng``);
2. the selection is ordered most-important-first: never-scored tasks, then by last uncertainty (most uncertain
   first). The first chunk is what an annotator is served next, so the caller can publish it before the rest;
3. ``run_round`` scores chunk by chunk, records each chunk in the cache and hands it to ``on_chunk`` (which the
   backend uses to push predictions to Label Studio and persist the cache as it goes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from albackend.algorithms.ups.cache import ScoreCache
from albackend.algorithms.ups.sampler import FullPoolSchedule, rank_descending

ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, Any]]
ChunkFn = Callable[[np.ndarray, np.ndarray, Any], None]


@dataclass(frozen=True)
class UPSConfig:
    """The paper's UPS knobs plus the full-pool schedule."""

    gamma: float = 0.1
    temperature: float = 0.01
    schedule: FullPoolSchedule = FullPoolSchedule()


@dataclass
class RoundPlan:
    iteration: int
    full: bool
    order: np.ndarray  # task ids to score, most important first
    pool_size: int
    added: int
    removed: int


def round_rng(seed: int, iteration: int) -> np.random.Generator:
    """The subsampling RNG of one iteration: reproducible per (seed, iteration), independent across iterations."""
    return np.random.default_rng(int(seed) + 7919 * int(iteration))


def priority_order(cache: ScoreCache, task_ids: np.ndarray) -> np.ndarray:
    """Never-scored tasks first (in id order), then by last uncertainty, most uncertain first (stable)."""
    ids = np.asarray(task_ids, dtype=np.int64)
    unc, _ = cache.lookup(ids)
    fresh = np.isnan(unc)
    scored = np.flatnonzero(~fresh)
    return np.concatenate([ids[fresh], ids[scored[rank_descending(unc[scored])]]])


def plan_round(cache: ScoreCache, pool_ids: np.ndarray, iteration: int, ups: UPSConfig, seed: int) -> RoundPlan:
    """Sync the cache with the pool and choose the tasks to rescore this iteration."""
    added, removed = cache.sync_pool(pool_ids)
    full = ups.schedule.is_full(iteration)
    selected = cache.select(ups.gamma, ups.temperature, round_rng(seed, iteration), full)
    return RoundPlan(iteration, bool(full), priority_order(cache, selected), len(cache), added, removed)


def chunk_bounds(n: int, first: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of each chunk: a small first chunk (published at once), then chunks of ``size``."""
    first, size = max(1, int(first)), max(1, int(size))
    bounds, start = [], 0
    while start < n:
        end = min(n, start + (first if start == 0 else size))
        bounds.append((start, end))
        start = end
    return bounds


def run_round(cache: ScoreCache, plan: RoundPlan, score: ScoreFn, version: str, *, first_chunk: int,
              chunk_size: int, on_chunk: ChunkFn | None = None) -> dict:
    """Score ``plan.order`` chunk by chunk, recording each chunk in ``cache``; returns the round's figures."""
    t0 = time.perf_counter()
    scored, score_s = 0, 0.0
    for start, end in chunk_bounds(len(plan.order), first_chunk, chunk_size):
        ids = plan.order[start:end]
        t1 = time.perf_counter()
        unc, extra = score(ids)
        score_s += time.perf_counter() - t1
        cache.update(ids, np.asarray(unc, dtype=np.float32), plan.iteration, version)
        scored += len(ids)
        if on_chunk is not None:
            on_chunk(ids, np.asarray(unc), extra)
    return {"full_pool": plan.full, "pool_size": plan.pool_size, "scored": scored,
            "skipped_by_ups": plan.pool_size - scored, "pool_added": plan.added, "pool_removed": plan.removed,
            "score_s": round(score_s, 4), "round_s": round(time.perf_counter() - t0, 4)}
