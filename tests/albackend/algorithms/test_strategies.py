"""Tests for albackend.algorithms.strategies: properties (hypothesis) plus hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from albackend.algorithms import strategies as S

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def prob_matrices(draw, min_classes: int = 1, max_classes: int = 8, max_rows: int = 12):
    """Row-stochastic (N, C) matrices, including exact zeros and one-hots."""
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(min_classes, max_classes))
    raw = draw(
        hnp.arrays(
            np.float64,
            (n, c),
            elements=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)),
        )
    )
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    return raw / raw.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ LC, margin, entropy


@FAST
@given(prob_matrices())
def test_least_confident_range(p):
    u = S.least_confident(p)
    c = p.shape[1]
    assert u.shape == (p.shape[0],)
    assert np.all(u >= -1e-12)
    assert np.all(u <= 1 - 1 / c + 1e-12)


@pytest.mark.parametrize("c", [1, 2, 3, 10])
def test_uniform_is_maximally_uncertain_and_one_hot_is_certain(c):
    uniform = np.full((1, c), 1 / c)
    one_hot = np.eye(c)[:1]
    assert S.least_confident(uniform)[0] == pytest.approx(1 - 1 / c)
    assert S.least_confident(one_hot)[0] == 0.0
    assert S.entropy(uniform)[0] == pytest.approx(math.log(c))
    assert S.entropy(one_hot)[0] == 0.0
    assert S.margin(one_hot)[0] == 0.0
    if c > 1:
        assert S.margin(uniform)[0] == pytest.approx(1.0)


@FAST
@given(prob_matrices(min_classes=2))
def test_uniform_dominates_every_distribution(p):
    c = p.shape[1]
    uniform = np.full((1, c), 1 / c)
    for fn in (S.least_confident, S.margin, S.entropy):
        assert np.all(fn(p) <= fn(uniform)[0] + 1e-9), fn.__name__


def test_concrete_values():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(S.least_confident(p), [0.3, 0.6, 0.0])
    np.testing.assert_allclose(S.margin(p), [1 - 0.5, 1 - 0.05, 0.0])
    expected_h = [-(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)),
                  -(0.4 * np.log(0.4) + 0.35 * np.log(0.35) + 0.25 * np.log(0.25)),
                  0.0]
    np.testing.assert_allclose(S.entropy(p), expected_h)
    assert np.all(np.isfinite(S.entropy(p)))


def test_margin_and_entropy_orderings_differ_where_they_should():
    # same top-2 gap, but b spreads remaining mass -> margin ties, entropy prefers b
    a = [0.5, 0.3, 0.2, 0.0]
    b = [0.5, 0.3, 0.1, 0.1]
    p = np.array([a, b])
    m = S.margin(p)
    assert m[0] == pytest.approx(m[1])
    h = S.entropy(p)
    assert h[1] > h[0]
    # a close race between two classes beats a confident one under every strategy
    close, sure = [0.45, 0.44, 0.11], [0.9, 0.05, 0.05]
    q = np.array([close, sure])
    for fn in (S.least_confident, S.margin, S.entropy):
        u = fn(q)
        assert u[0] > u[1], fn.__name__


def test_margin_uses_two_largest_regardless_of_order():
    p = np.array([[0.1, 0.6, 0.3], [0.3, 0.1, 0.6]])
    np.testing.assert_allclose(S.margin(p), [0.7, 0.7])


def test_single_class_margin_is_zero_and_empty_inputs():
    assert S.margin(np.ones((3, 1))).tolist() == [0.0, 0.0, 0.0]
    for fn in (S.least_confident, S.margin, S.entropy, S.least_confident_multilabel):
        out = fn(np.zeros((0, 4)))
        assert out.shape == (0,)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        S.least_confident(np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        S.entropy(np.zeros((2, 0)))


# ------------------------------------------------------------------ multilabel


def test_least_confident_multilabel_is_worst_single_decision():
    p = np.array([[0.99, 0.01, 0.6], [0.5, 0.0, 1.0], [1.0, 0.0, 1.0]])
    np.testing.assert_allclose(S.least_confident_multilabel(p), [0.4, 0.5, 0.0])


@FAST
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 6)),
                  elements=st.floats(0.0, 1.0)))
def test_least_confident_multilabel_range_and_symmetry(p):
    u = S.least_confident_multilabel(p)
    assert np.all((u >= 0) & (u <= 0.5 + 1e-12))
    np.testing.assert_allclose(u, S.least_confident_multilabel(1.0 - p), atol=1e-12)


# ------------------------------------------------------------------ MNLP


def test_mnlp_hand_computation():
    s1 = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    s2 = np.array([[1.0, 0.0]])
    s3 = np.zeros((0, 2))
    out = S.mnlp([s1, s2, s3])
    expected = -(np.log(0.9) + np.log(0.6) + np.log(0.8)) / 3
    np.testing.assert_allclose(out, [expected, 0.0, 0.0])
    assert S.mnlp([]).shape == (0,)


def test_mnlp_clips_zero_probabilities():
    out = S.mnlp([np.zeros((2, 3))])
    assert np.isfinite(out[0])
    assert out[0] == pytest.approx(-np.log(1e-12))


def test_mnlp_normalises_by_length():
    # one uncertain word in a long sentence is less uncertain than the same word alone
    shaky = [0.5, 0.5]
    sure = [0.99, 0.01]
    alone = np.array([shaky])
    diluted = np.array([shaky] + [sure] * 9)
    u = S.mnlp([alone, diluted])
    assert u[0] > u[1]


@FAST
@given(
    st.integers(1, 10).flatmap(
        lambda n: hnp.arrays(np.float64, (n, 4), elements=st.floats(1e-6, 1.0))
    ),
    st.randoms(use_true_random=False),
)
def test_mnlp_invariant_to_word_order(wp, rnd):
    perm = list(range(wp.shape[0]))
    rnd.shuffle(perm)
    a, b = S.mnlp([wp, wp[perm]])
    assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    assert a >= 0 or wp.max() > 1.0  # non-negative for probabilities <= 1


# ------------------------------------------------------------------ Mahalanobis


def _brute_force_md(x, y, h):
    classes = np.unique(y)
    mus = np.stack([x[y == c].mean(axis=0) for c in classes])
    res = x - mus[np.searchsorted(classes, y)]
    cov = res.T @ res / len(x)
    inv = np.linalg.inv(cov)
    d = [[(hi - mu) @ inv @ (hi - mu) for mu in mus] for hi in h]
    return np.min(np.array(d), axis=1), mus, inv


def test_mahalanobis_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) + np.repeat(np.eye(3)[:2] * 4, 20, axis=0)
    y = np.repeat([3, 7], 20)
    h = rng.normal(size=(15, 3)) * 3
    expected, mus, inv = _brute_force_md(x, y, h)
    fit = S.fit_mahalanobis(x, y)
    assert fit.jitter == 0.0
    assert fit.classes.tolist() == [3, 7]
    np.testing.assert_allclose(fit.centroids, mus)
    np.testing.assert_allclose(fit.precision, inv, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(S.mahalanobis(h, fit), expected, rtol=1e-8)
    assert fit.centroids.dtype == np.float64 and fit.precision.dtype == np.float64


def test_mahalanobis_ranks_far_point_above_centroid():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4))
    y = np.repeat([0, 1, 2], 10)
    fit = S.fit_mahalanobis(x, y)
    d = S.mahalanobis(np.vstack([fit.centroids[1], fit.centroids[1] + 50.0]), fit)
    assert d[0] == pytest.approx(0.0, abs=1e-9)
    assert d[1] > d[0] + 1.0
    assert np.argsort(-d)[0] == 1


@pytest.mark.parametrize(
    "x, y",
    [
        (np.array([[1.0, 2.0, 3.0]] * 4 + [[0.0, 0.0, 1.0]] * 4), np.repeat([0, 1], 4)),  # duplicates
        (np.random.default_rng(2).normal(size=(5, 12)), np.array([0, 0, 1, 1, 1])),  # D > N
        (np.array([[1.0, -1.0]]), np.array([5])),  # a single labeled example
    ],
)
def test_mahalanobis_singular_covariance_gets_jitter(x, y):
    fit = S.fit_mahalanobis(x, y)
    assert fit.jitter > 0.0
    assert np.all(np.isfinite(fit.precision))
    np.linalg.cholesky(fit.precision)  # positive definite
    d = S.mahalanobis(np.vstack([x, x + 3.0]), fit)
    assert np.all(np.isfinite(d)) and np.all(d >= 0)
    np.testing.assert_allclose(d[: len(x)], 0.0, atol=1e-6 * (1 + d.max()))
    assert np.all(d[len(x) :] > 0)


def test_mahalanobis_jitter_starts_tiny_and_grows_tenfold(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 6))  # D > N: singular covariance
    y = np.zeros(3, dtype=int)
    res = x - x.mean(axis=0)
    scale = np.trace(res.T @ res / 3) / 6
    fit = S.fit_mahalanobis(x, y)
    assert 0 < fit.jitter <= 1e-9 * scale  # the first, tiny jitter was enough

    real = np.linalg.cholesky

    def picky(a):  # pretend anything with an eigenvalue below 5e-4 * scale is not PD
        if np.linalg.eigvalsh(a).min() < 5e-4 * scale:
            raise np.linalg.LinAlgError("not positive definite")
        return real(a)

    monkeypatch.setattr(np.linalg, "cholesky", picky)
    fit = S.fit_mahalanobis(x, y)
    steps = np.log10(fit.jitter / (1e-10 * scale))
    assert steps == pytest.approx(round(steps), abs=1e-6)  # 1e-10 * scale * 10^k
    assert fit.jitter == pytest.approx(1e-3 * scale)  # stopped at the first that worked


def test_mahalanobis_errors_and_empty():
    with pytest.raises(ValueError, match="at least 1 labeled example"):
        S.fit_mahalanobis(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError):
        S.fit_mahalanobis(np.zeros((3, 2)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError):
        S.fit_mahalanobis(np.array([[np.nan, 1.0]]), np.array([0]))
    fit = S.fit_mahalanobis(np.eye(3), np.array([0, 1, 1]))
    assert S.mahalanobis(np.zeros((0, 3)), fit).shape == (0,)
    with pytest.raises(ValueError):
        S.mahalanobis(np.zeros((2, 4)), fit)


def test_mahalanobis_ignores_missing_classes_and_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 3))
    y = np.array([0] * 10 + [4] * 10)  # classes 1..3 have no examples
    fit = S.fit_mahalanobis(x, y)
    assert fit.centroids.shape == (2, 3)
    h = rng.normal(size=(37, 3))
    full = S.mahalanobis(h, fit)
    monkeypatch.setattr(S, "_MAHALANOBIS_CHUNK_BYTES", 8 * 2 * 3 * 5)  # 5 rows per chunk
    np.testing.assert_allclose(S.mahalanobis(h, fit), full, rtol=1e-12)
    expected, _, _ = _brute_force_md(x, y, h)
    np.testing.assert_allclose(full, expected, rtol=1e-8)


# ------------------------------------------------------------------ random, confidence, registry


def test_random_scores():
    r = S.random_scores(100, np.random.default_rng(0))
    assert r.shape == (100,) and np.all((r >= 0) & (r < 1))
    np.testing.assert_array_equal(r, S.random_scores(100, np.random.default_rng(0)))
    assert S.random_scores(0, np.random.default_rng(0)).shape == (0,)


@FAST
@given(
    st.sampled_from(sorted(S.STRATEGIES)),
    st.lists(st.floats(0.0, 10.0), min_size=2, max_size=20, unique=True),
)
def test_confidence_strictly_decreasing(strategy, us):
    u = np.sort(np.array(us))
    c = S.confidence(u, strategy)
    assert np.all(np.diff(c) <= 0)
    separated = np.diff(u) > 1e-6
    assert np.all(np.diff(c)[separated] < 0)


def test_confidence_concrete():
    p = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(S.confidence(S.least_confident(p), "least_confident"), [0.7])
    wp = [np.array([[0.9, 0.1], [0.4, 0.6]])]
    np.testing.assert_allclose(S.confidence(S.mnlp(wp), "mnlp"), [math.sqrt(0.9 * 0.6)])
    np.testing.assert_allclose(S.confidence(np.array([0.0, 3.0]), "mahalanobis"), [1.0, 0.25])
    np.testing.assert_allclose(S.confidence(np.array([1.0]), "entropy"), [math.exp(-1)])
    with pytest.raises(ValueError, match="valid"):
        S.confidence(np.array([0.1]), "bald")


def test_registry():
    assert {"random", "least_confident", "margin", "entropy", "mnlp", "mahalanobis"} <= set(
        S.STRATEGIES
    )
    assert S.get_strategy("mnlp").kind == "tagging"
    assert S.get_strategy("least_confident").kind == "classification"
    assert S.get_strategy("random").kind == "both"
    assert S.get_strategy(" MNLP ").name == "mnlp"
    for name, info in S.STRATEGIES.items():
        assert info.name == name and info.description
        assert info.kind in ("classification", "tagging", "both")
    with pytest.raises(ValueError) as exc:
        S.get_strategy("nope")
    for name in S.STRATEGIES:
        assert name in str(exc.value)


# ------------------------------------------------------------------ selection


def test_select_top_k_order_and_ties():
    u = np.array([0.2, 0.9, 0.5, 0.9, np.nan, 0.1])
    assert S.select_top_k(u, 3).tolist() == [1, 3, 2]
    assert S.select_top_k(u, 100).tolist() == [1, 3, 2, 0, 5, 4]
    assert S.select_top_k(u, 0).tolist() == []
    assert S.select_top_k(np.zeros(0), 5).tolist() == []
    with pytest.raises(ValueError):
        S.select_top_k(u, -1)


@FAST
@given(hnp.arrays(np.float64, st.integers(0, 30), elements=st.integers(0, 5).map(float)),
       st.integers(0, 40))
def test_select_top_k_properties(u, k):
    idx = S.select_top_k(u, k)
    assert len(idx) == min(k, len(u))
    assert len(set(idx.tolist())) == len(idx)
    vals = u[idx]
    assert np.all(np.diff(vals) <= 0)
    for a, b in zip(idx[:-1], idx[1:]):  # stable: equal values keep index order
        if u[a] == u[b]:
            assert a < b
    if len(idx) and len(idx) < len(u):
        rest = np.setdiff1d(np.arange(len(u)), idx)
        assert vals.min() >= u[rest].max()


def test_select_by_token_budget_concrete():
    u = np.array([0.1, 0.9, 0.5, 0.7])
    lens = np.array([5, 4, 3, 6])
    assert S.select_by_token_budget(u, lens, 10).tolist() == [1, 3]  # 4 + 6 = 10
    assert S.select_by_token_budget(u, lens, 12).tolist() == [1, 3]  # next (3) would be 13
    assert S.select_by_token_budget(u, lens, 13).tolist() == [1, 3, 2]
    assert S.select_by_token_budget(u, lens, 2).tolist() == [1]  # at least one
    assert S.select_by_token_budget(u, lens, 0).tolist() == [1]
    assert S.select_by_token_budget(u, lens, 10**6).tolist() == [1, 3, 2, 0]
    assert S.select_by_token_budget(np.zeros(0), np.zeros(0), 10).tolist() == []
    with pytest.raises(ValueError):
        S.select_by_token_budget(u, lens[:2], 10)
    with pytest.raises(ValueError):
        S.select_by_token_budget(u, -lens, 10)


@FAST
@given(
    st.integers(1, 25).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, n, elements=st.floats(0, 1)),
            hnp.arrays(np.int64, n, elements=st.integers(0, 40)),
        )
    ),
    st.integers(0, 300),
)
def test_select_by_token_budget_respects_budget(ul, budget):
    u, lens = ul
    idx = S.select_by_token_budget(u, lens, budget)
    assert len(idx) >= 1
    assert idx.tolist() == S.select_top_k(u, len(idx)).tolist()  # a prefix of the ranking
    if len(idx) > 1:
        assert lens[idx].sum() <= budget
    if len(idx) < len(u):  # maximal: the next item would overshoot
        nxt = S.select_top_k(u, len(idx) + 1)[-1]
        assert lens[idx].sum() + lens[nxt] > budget
