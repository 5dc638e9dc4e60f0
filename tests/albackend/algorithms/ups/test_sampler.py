"""UPS sampler: the always-kept top-γ set, the expected kept fraction, determinism, NaN handling, schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from albackend.algorithms.ups.sampler import (
    FullPoolSchedule,
    expected_kept_fraction,
    keep_probabilities,
    rank_descending,
    ups_subsample,
)

gammas = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
temps = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=2.0, allow_nan=False))
FAST = settings(max_examples=60, deadline=None)


def reference_order(u: np.ndarray) -> list[int]:
    """Independent ranking: most uncertain first, ties by position (pure Python)."""
    return sorted(range(len(u)), key=lambda i: (-float(u[i]), i))


# --- keep_probabilities --------------------------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 3000), gamma=gammas, t=temps)
def test_top_gamma_fraction_always_has_probability_one(n: int, gamma: float, t: float) -> None:
    p = keep_probabilities(n, gamma, t)
    assert p.shape == (n,)
    top = math.ceil(gamma * n - 1e-9)  # the top-γ fraction, in items
    assert np.all(p[:top] == 1.0)
    assert p[0] == 1.0  # the most uncertain item is always rescored
    assert np.all(np.diff(p) <= 0)  # monotone in rank
    assert np.all((p >= 0) & (p <= 1))


@FAST
@given(n=st.integers(1, 3000), gamma=gammas)
def test_t_zero_is_exactly_the_always_kept_set(n: int, gamma: float) -> None:
    p = keep_probabilities(n, gamma, 0.0)
    k = int(p.sum())
    assert set(np.unique(p).tolist()) <= {0.0, 1.0}
    assert np.all(p[:k] == 1.0) and np.all(p[k:] == 0.0)
    # |K| = min(n, floor(γn) + 1), allowing float rounding of γn at the boundary
    assert abs(k - min(n, math.floor(gamma * n) + 1)) <= 1
    assert k >= math.ceil(gamma * n - 1e-9)
    # T = 0 keeps exactly the set every T > 0 keeps with certainty
    assert np.array_equal(p == 1.0, keep_probabilities(n, gamma, 0.05) == 1.0)


@pytest.mark.parametrize(
    ("n", "gamma", "expected"),
    [(100, 0.1, 11), (100, 0.105, 11), (20_000, 0.1, 2001), (10, 0.0, 1), (10, 1.0, 10), (7, 0.5, 4)],
)
def test_t_zero_counts(n: int, gamma: float, expected: int) -> None:
    assert int(keep_probabilities(n, gamma, 0.0).sum()) == expected


def test_keep_probabilities_values() -> None:
    p = keep_probabilities(10, 0.3, 0.1)
    expected = np.exp(-np.maximum(0.0, np.arange(10) / 10 - 0.3) / 0.1)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p[3] == 1.0 and p[4] == pytest.approx(math.exp(-1.0))
    assert keep_probabilities(0, 0.1, 0.01).shape == (0,)


@FAST
@given(n=st.integers(1, 5000), gamma=gammas, t=temps)
def test_discrete_mean_within_one_over_n_of_formula(n: int, gamma: float, t: float) -> None:
    # P is nonincreasing in r, so the left Riemann sum over r_i = i/n exceeds the integral by at most 1/n.
    diff = keep_probabilities(n, gamma, t).mean() - expected_kept_fraction(gamma, t)
    assert -1e-9 <= diff <= 1.0 / n + 1e-9


def test_expected_kept_fraction_values() -> None:
    assert expected_kept_fraction(0.1, 0.01) == pytest.approx(0.11, abs=1e-12)
    assert expected_kept_fraction(0.2, 0.0) == 0.2
    assert expected_kept_fraction(1.0, 0.5) == pytest.approx(1.0)
    assert expected_kept_fraction(0.0, 0.1) == pytest.approx(0.1 * (1 - math.exp(-10)))
    assert expected_kept_fraction(0.3, 1e6) == pytest.approx(1.0, abs=1e-6)  # T -> inf keeps everything


@pytest.mark.parametrize("bad", [(-0.1, 0.01), (1.1, 0.01), (float("nan"), 0.01), (0.1, -1e-3),
                                 (0.1, float("nan")), (0.1, float("inf"))])
def test_parameter_validation(bad: tuple[float, float]) -> None:
    gamma, t = bad
    with pytest.raises(ValueError):
        keep_probabilities(10, gamma, t)
    with pytest.raises(ValueError):
        ups_subsample(np.zeros(3), gamma, t, np.random.default_rng(0))
    with pytest.raises(ValueError):
        expected_kept_fraction(gamma, t)


# --- ups_subsample -------------------------------------------------------------------------------------------


@FAST
@given(
    u=st.lists(st.integers(0, 20), min_size=1, max_size=300),  # small ints: many ties
    gamma=gammas,
    t=temps,
    seed=st.integers(0, 2**32 - 1),
)
def test_subsample_always_keeps_top_gamma(u: list[int], gamma: float, t: float, seed: int) -> None:
    arr = np.asarray(u, dtype=np.float32) / 7.0
    keep = ups_subsample(arr, gamma, t, np.random.default_rng(seed))
    assert keep.dtype == bool and keep.shape == arr.shape
    order = reference_order(arr)
    n = len(arr)
    top = math.ceil(gamma * n - 1e-9)
    assert keep[order[:top]].all()
    assert keep[order[0]]
    if t == 0.0:  # exactly the always-kept set: a prefix of the ranking
        k = int(keep.sum())
        assert keep[order[:k]].all() and not keep[order[k:]].any()
        assert k == int(keep_probabilities(n, gamma, 0.0).sum())


@pytest.mark.parametrize(("gamma", "t"), [(0.1, 0.01), (0.05, 0.1), (0.3, 0.0), (0.0, 0.2), (0.5, 1.0)])
def test_empirical_kept_fraction_matches_formula(gamma: float, t: float) -> None:
    n, draws = 20_000, 40
    rng = np.random.default_rng(1234)
    u = rng.random(n).astype(np.float32)
    fractions = [ups_subsample(u, gamma, t, rng).mean() for _ in range(draws)]
    p = keep_probabilities(n, gamma, t)
    std_of_mean = math.sqrt(float((p * (1 - p)).sum())) / n / math.sqrt(draws)
    tol = 5 * std_of_mean + 1.0 / n + 1e-12  # binomial noise + discretisation of r_i = i/n
    assert abs(float(np.mean(fractions)) - expected_kept_fraction(gamma, t)) <= tol
    if t == 0.0:
        assert np.ptp(fractions) == 0  # no randomness at all


def test_tail_keep_rates_follow_the_exponential() -> None:
    # Rank buckets of the tail are kept at exp(-(r - γ)/T); checks the draw is per rank, not per position.
    n, gamma, t = 20_000, 0.1, 0.05
    rng = np.random.default_rng(7)
    u = rng.random(n)
    order = np.argsort(-u, kind="stable")
    hits = np.zeros(n)
    draws = 30
    for _ in range(draws):
        hits += ups_subsample(u, gamma, t, rng)[order]
    bucket = slice(int(0.15 * n), int(0.16 * n))  # r in [0.15, 0.16)
    p = keep_probabilities(n, gamma, t)[bucket]
    got = hits[bucket].sum() / draws
    assert abs(got - p.sum()) <= 5 * math.sqrt(float((p * (1 - p)).sum()) / draws)
    assert hits[: int(gamma * n)].min() == draws  # top-γ kept in every draw


def test_same_seed_same_subsample_and_seed_matters() -> None:
    u = np.random.default_rng(0).random(5000)
    a = ups_subsample(u, 0.1, 0.05, np.random.default_rng(42))
    b = ups_subsample(u, 0.1, 0.05, np.random.default_rng(42))
    c = ups_subsample(u, 0.1, 0.05, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ties_are_broken_by_position() -> None:
    u = np.ones(10)
    keep = ups_subsample(u, 0.3, 0.0, np.random.default_rng(0))
    assert keep.tolist() == [True] * 4 + [False] * 6


def test_ties_are_broken_by_position_in_a_large_pool() -> None:
    # Unstable sorts (numpy's default for floats is SIMD quicksort) scramble big tie groups.
    n = 20_000
    u = np.random.default_rng(5).integers(0, 3, size=n).astype(np.float64)
    keep = ups_subsample(u, 0.5, 0.0, np.random.default_rng(0))
    order = np.lexsort((np.arange(n), -u))  # primary -u, secondary position
    k = int(keep_probabilities(n, 0.5, 0.0).sum())
    assert keep[order[:k]].all() and not keep[order[k:]].any()


@FAST
@given(
    values=st.lists(
        st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 1e-38, -1e-45]),
                  st.floats(width=32, allow_nan=False)),
        max_size=200,
    )
)
def test_rank_descending_matches_reference(values: list[float]) -> None:
    for dtype in (np.float32, np.float64, np.float16):
        with np.errstate(over="ignore"):  # float16 overflows to ±inf, which is fine to rank
            arr = np.asarray(values, dtype=np.float64).astype(dtype)
        got = rank_descending(arr)
        assert got.tolist() == reference_order(arr)


def test_rank_descending_float32_matches_stable_argsort_on_large_input() -> None:
    u = (np.random.default_rng(1).integers(-500, 500, size=100_000) / 7).astype(np.float32)
    assert np.array_equal(rank_descending(u), np.argsort(-u, kind="stable"))
    assert rank_descending(np.array([], dtype=np.float32)).shape == (0,)


def test_empty_and_single_task_pool() -> None:
    rng = np.random.default_rng(0)
    empty = ups_subsample(np.array([], dtype=np.float32), 0.1, 0.01, rng)
    assert empty.dtype == bool and empty.shape == (0,)
    for gamma, t in [(0.0, 0.0), (0.1, 0.01), (1.0, 0.0)]:
        assert ups_subsample(np.array([0.3]), gamma, t, rng).tolist() == [True]
    assert ups_subsample(np.array([np.nan]), 0.0, 0.0, rng).tolist() == [True]


def test_nan_items_always_kept_and_do_not_take_ranks() -> None:
    rng = np.random.default_rng(3)
    n = 10_000
    u = rng.random(n)
    nan_idx = rng.choice(n, size=3000, replace=False)
    u[nan_idx] = np.nan
    keep = ups_subsample(u, 0.1, 0.0, rng)
    assert keep[nan_idx].all()
    scored = np.flatnonzero(~np.isnan(u))
    kept_scored = keep[scored].sum()
    assert kept_scored == int(keep_probabilities(len(scored), 0.1, 0.0).sum())  # 701 of 7000
    # and they are the most uncertain of the scored items
    top = scored[np.argsort(-u[scored], kind="stable")[:kept_scored]]
    assert keep[top].all()


def test_all_nan_pool_fully_kept() -> None:
    assert ups_subsample(np.full(50, np.nan), 0.0, 0.0, np.random.default_rng(0)).all()


def test_rejects_2d_input() -> None:
    with pytest.raises(ValueError):
        ups_subsample(np.zeros((2, 2)), 0.1, 0.01, np.random.default_rng(0))


# --- FullPoolSchedule ----------------------------------------------------------------------------------------


def test_default_schedule() -> None:
    s = FullPoolSchedule()
    assert [i for i in range(20) if s.is_full(i)] == [0, 1, 4, 8]


def test_schedule_every_and_disabled() -> None:
    s = FullPoolSchedule(warmup=(0, 1), every=5)
    assert [i for i in range(16) if s.is_full(i)] == [0, 1, 5, 10, 15]
    off = FullPoolSchedule(enabled=False)
    assert all(off.is_full(i) for i in range(30))
    with pytest.raises(ValueError):
        s.is_full(-1)


@pytest.mark.parametrize(
    ("spec", "warmup"),
    [("0,1,4,8", (0, 1, 4, 8)), ("", ()), ("  ", ()), (" 8, 0 ,4", (0, 4, 8)), ("3,3", (3,)), ("12", (12,))],
)
def test_schedule_parse(spec: str, warmup: tuple[int, ...]) -> None:
    s = FullPoolSchedule.parse(spec, every=0, enabled=True)
    assert s.warmup == warmup
    assert s == FullPoolSchedule(warmup=warmup)


def test_parse_empty_means_no_warmup() -> None:
    s = FullPoolSchedule.parse("", every=3, enabled=True)
    assert [i for i in range(10) if s.is_full(i)] == [0, 3, 6, 9]
    assert not FullPoolSchedule.parse("", every=0, enabled=True).is_full(0)


@pytest.mark.parametrize("spec", ["0,,4", "a", "1.5", "-1", "0;1", "0,1,", "1 2"])
def test_schedule_parse_rejects_bad_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="warm-up spec"):
        FullPoolSchedule.parse(spec, every=0, enabled=True)


def test_schedule_rejects_bad_every_and_is_frozen() -> None:
    with pytest.raises(ValueError):
        FullPoolSchedule.parse("0", every=-2, enabled=True)
    with pytest.raises(ValueError):
        FullPoolSchedule(warmup=(-1,))
    s = FullPoolSchedule()
    with pytest.raises(AttributeError):
        s.every = 3  # type: ignore[misc]
