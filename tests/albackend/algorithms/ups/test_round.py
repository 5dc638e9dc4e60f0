"""The AL round (albackend.algorithms.ups.round): UPS plan, priority order and chunked scoring with an injected
scorer."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from albackend.algorithms.ups.cache import ScoreCache
from albackend.algorithms.ups.round import UPSConfig, chunk_bounds, plan_round, priority_order, round_rng, run_round
from albackend.algorithms.ups.sampler import FullPoolSchedule

UPS = UPSConfig(0.1, 0.01, FullPoolSchedule(warmup=(0,)))


def scored_cache(n: int, seed: int = 0) -> ScoreCache:
    cache = ScoreCache.empty()
    ids = np.arange(10, 10 + n, dtype=np.int64)
    cache.sync_pool(ids)
    cache.update(ids, np.random.default_rng(seed).random(n).astype(np.float32), 0, "v0")
    return cache


@given(st.integers(0, 300), st.integers(1, 50), st.integers(1, 80))
def test_chunks_cover_the_selection_in_order(n, first, size):
    bounds = chunk_bounds(n, first, size)
    assert [b for b in bounds if b[0] >= b[1]] == []
    flat = [i for a, b in bounds for i in range(a, b)]
    assert flat == list(range(n))
    if n:
        assert bounds[0][1] == min(n, first)
        assert all(b - a == size for a, b in bounds[1:-1])


@given(st.integers(1, 400), st.integers(0, 2**31), st.integers(1, 20))
@settings(max_examples=60, deadline=None)
def test_plan_is_the_ups_subsample_of_that_iteration(n, seed, iteration):
    cache = scored_cache(n, seed)
    expected = scored_cache(n, seed).select(UPS.gamma, UPS.temperature, round_rng(seed, iteration), False)
    plan = plan_round(cache, cache.task_ids.copy(), iteration, UPS, seed)
    assert not plan.full
    assert np.array_equal(np.sort(plan.order), expected)


def test_full_iteration_scores_the_whole_pool_new_tasks_first():
    cache = scored_cache(50)
    pool = np.concatenate([cache.task_ids, [500, 501]])
    plan = plan_round(cache, pool, 0, UPS, seed=1)
    assert plan.full and plan.added == 2 and len(plan.order) == 52
    assert list(plan.order[:2]) == [500, 501]  # never scored: most important


def test_priority_order_is_most_uncertain_first():
    cache = ScoreCache.empty()
    cache.sync_pool(np.array([1, 2, 3, 4]))
    cache.update(np.array([1, 2, 3]), np.array([0.2, 0.9, 0.5], np.float32), 0, "v")
    assert list(priority_order(cache, np.array([1, 2, 3, 4]))) == [4, 2, 3, 1]


def test_run_round_records_every_chunk_and_hands_it_on():
    cache = scored_cache(100)
    plan = plan_round(cache, cache.task_ids.copy(), 0, UPS, seed=3)  # full (warm-up iteration 0)
    seen: list[np.ndarray] = []

    def score(ids):
        return ids.astype(np.float32) / 1000.0, list(ids)

    figures = run_round(cache, plan, score, "v1", first_chunk=7, chunk_size=30,
                        on_chunk=lambda ids, unc, extra: seen.append(ids.copy()))
    assert [len(c) for c in seen] == [7, 30, 30, 30, 3]
    assert np.array_equal(np.concatenate(seen), plan.order)
    unc, versions = cache.lookup(plan.order)
    assert np.allclose(unc, plan.order / 1000.0) and set(versions) == {"v1"}
    assert figures["scored"] == 100 and figures["skipped_by_ups"] == 0
