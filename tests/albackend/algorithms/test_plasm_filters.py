"""Tests for albackend.algorithms.plasm_filters: the 1 - q drop arithmetic and the keep masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from albackend.algorithms import plasm_filters as F

FAST = settings(max_examples=80, deadline=None)
unit = st.floats(0.0, 1.0)


# ------------------------------------------------------------------ drop_fraction / plan


def test_drop_fraction_concrete():
    assert F.drop_fraction(1.0) == 0.0
    assert F.drop_fraction(0.0) == 1.0
    assert F.drop_fraction(0.9) == pytest.approx(0.1)
    assert F.drop_fraction(0.9, already_dropped=0.04) == pytest.approx(0.06)
    assert F.drop_fraction(0.9, already_dropped=0.5) == 0.0  # skip when <= 0


@pytest.mark.parametrize("q", [-0.01, 1.01, float("nan"), float("inf")])
def test_drop_fraction_rejects_bad_q(q):
    with pytest.raises(ValueError, match="q"):
        F.drop_fraction(q)


@FAST
@given(unit, unit)
def test_drop_fraction_range(q, done):
    f = F.drop_fraction(q, done)
    assert 0.0 <= f <= 1.0
    assert f == pytest.approx(max(0.0, 1 - q - done))


@pytest.mark.parametrize("mode", ["uncertainty", "tracin"])
def test_single_filter_extremes(mode):
    assert F.plan_filters(1.0, mode).total == 0.0
    full = F.plan_filters(0.0, mode)
    assert full.total == 1.0
    if mode == "uncertainty":
        assert (full.uncertainty_fraction, full.tracin_fraction) == (1.0, 0.0)
    else:
        assert (full.uncertainty_fraction, full.tracin_fraction) == (0.0, 1.0)


def test_plan_concrete():
    p = F.plan_filters(0.8, "both")
    assert p.uncertainty_fraction == pytest.approx(0.1)
    assert p.tracin_fraction == pytest.approx(0.1)
    p = F.plan_filters(0.8, "both", uncertainty_share=0.25)
    assert p.uncertainty_fraction == pytest.approx(0.05)
    assert p.tracin_fraction == pytest.approx(0.15)
    assert F.plan_filters(0.3, "none") == F.FilterPlan(0.0, 0.0)
    with pytest.raises(ValueError, match="valid"):
        F.plan_filters(0.5, "loss")
    with pytest.raises(ValueError):
        F.plan_filters(0.5, "both", uncertainty_share=1.5)
    with pytest.raises(ValueError):
        F.plan_filters(2.0, "none")


@FAST
@given(unit, unit, st.sampled_from(F.FILTER_MODES))
def test_plan_totals(q, share, mode):
    p = F.plan_filters(q, mode, uncertainty_share=share)
    assert p.uncertainty_fraction >= 0 and p.tracin_fraction >= 0
    if mode == "none":
        assert p.total == 0.0
    else:
        assert p.total == pytest.approx(1 - q, abs=1e-12)
    if mode == "both":
        assert p.uncertainty_fraction == pytest.approx((1 - q) * share, abs=1e-12)


# ------------------------------------------------------------------ keep masks


def test_drop_least_confident_concrete():
    c = np.array([0.9, 0.2, np.nan, 0.5, 0.2, 0.99])
    keep = F.drop_least_confident(c, 0.5)  # round(3.0) = 3 dropped: NaN, then the two 0.2s
    assert keep.tolist() == [True, False, False, True, False, True]
    keep = F.drop_least_confident(c, 2 / 6)  # ties: lower index dropped first
    assert keep.tolist() == [True, False, False, True, True, True]
    assert F.drop_least_confident(c, 0.0).all()
    assert not F.drop_least_confident(c, 1.0).any()


def test_drop_most_influential_concrete():
    s = np.array([1.0, 5.0, np.nan, 5.0, 0.1])
    keep = F.drop_most_influential(s, 0.4)  # round(2.0): NaN then first 5.0
    assert keep.tolist() == [True, False, False, True, True]
    # fraction refers to the original pool of 10 -> 3 items dropped from these 5
    keep = F.drop_most_influential(s, 0.3, n_reference=10)
    assert keep.tolist() == [True, False, False, False, True]
    # capped at what is there
    assert not F.drop_most_influential(s, 1.0, n_reference=100).any()
    with pytest.raises(ValueError):
        F.drop_most_influential(s, 0.5, n_reference=-1)


def test_empty_pool_and_validation():
    for fn in (F.drop_least_confident, F.drop_most_influential):
        keep = fn(np.zeros(0), 0.7)
        assert keep.shape == (0,) and keep.dtype == bool
        with pytest.raises(ValueError):
            fn(np.zeros(3), 1.5)
        with pytest.raises(ValueError):
            fn(np.zeros((2, 2)), 0.5)
    assert F.drop_most_influential(np.zeros(0), 0.5, n_reference=10).shape == (0,)


finite_or_nan = st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")))


@FAST
@given(hnp.arrays(np.float64, st.integers(0, 40), elements=finite_or_nan), unit)
def test_drop_least_confident_properties(c, fraction):
    keep = F.drop_least_confident(c, fraction)
    n = len(c)
    assert keep.dtype == bool and keep.shape == (n,)
    assert keep.sum() == n - round(fraction * n)
    dropped, kept = c[~keep], c[keep]
    if dropped.size and kept.size:
        # every NaN goes before any number; otherwise dropped <= kept
        if np.isnan(kept).any():
            assert np.isnan(dropped).all()
        else:
            assert np.nanmax(dropped, initial=-np.inf) <= kept.min()


@FAST
@given(
    hnp.arrays(np.float64, st.integers(0, 40), elements=finite_or_nan),
    unit,
    st.one_of(st.none(), st.integers(0, 80)),
)
def test_drop_most_influential_properties(s, fraction, n_ref):
    keep = F.drop_most_influential(s, fraction, n_reference=n_ref)
    n = len(s)
    ref = n if n_ref is None else n_ref
    assert keep.sum() == n - min(n, round(fraction * ref))
    dropped, kept = s[~keep], s[keep]
    if dropped.size and kept.size:
        if np.isnan(kept).any():
            assert np.isnan(dropped).all()
        else:
            assert np.nanmin(dropped, initial=np.inf) >= kept.max()


@FAST
@given(st.integers(0, 200), unit, unit)
def test_two_stage_pipeline_drops_plan_total(n, q, share):
    """Uncertainty then TracIn on the survivors drops ~(1 - q) * n of the original pool."""
    rng = np.random.default_rng(n)
    plan = F.plan_filters(q, "both", uncertainty_share=share)
    keep1 = F.drop_least_confident(rng.random(n), plan.uncertainty_fraction)
    survivors = int(keep1.sum())
    keep2 = F.drop_most_influential(rng.random(survivors), plan.tracin_fraction, n_reference=n)
    total_dropped = n - int(keep2.sum())
    assert abs(total_dropped - (1 - q) * n) <= 1.0 + 1e-9
