"""albackend.algorithms.stopping: hand-computed kappa cases, the criteria, the recommendation, properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from albackend.algorithms.stopping import (CONSIDER, CONTINUE, STOP, Criterion, cohen_kappa, curve_plateau,
                                           item_labels, kappa_average, normalized_entropy, overall_uncertainty,
                                           paired_kappa, plateau_index, recommend, stabilizing_predictions,
                                           stop_sample)

FAST = settings(max_examples=60, deadline=None)


@pytest.mark.parametrize("a,b,kappa", [
    # p_o = 3/4; marginals (2,2)/4 and (1,3)/4: p_e = (2*1 + 2*3)/16 = 1/2; kappa = (3/4 - 1/2) / (1/2)
    ([0, 0, 1, 1], [0, 1, 1, 1], 0.5),
    ([0, 1, 0, 1], [1, 0, 1, 0], -1.0),  # p_o = 0, p_e = 1/2
    ([0, 0, 0, 0], [0, 0, 0, 1], 0.0),  # p_o = 3/4 = p_e: agreement no better than chance
    ([2, 2, 2], [2, 2, 2], 1.0),  # one label throughout: p_e = 1, defined as perfect agreement
    ([0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2], 1.0),
])
def test_kappa_by_hand(a, b, kappa):
    assert math.isclose(cohen_kappa(np.array(a), np.array(b)), kappa, abs_tol=1e-12)


def test_kappa_textbook_table():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert math.isclose(cohen_kappa(a, b), 0.4)


def test_kappa_refuses_unequal_or_empty():
    with pytest.raises(ValueError):
        cohen_kappa(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError):
        cohen_kappa(np.array([]), np.array([]))


def test_paired_kappa_uses_items_both_versions_labeled():
    prev = {1: np.array([0]), 2: np.array([1, 1]), 3: np.array([0, 0, 1])}
    cur = {1: np.array([0]), 2: np.array([1, 0, 1]), 3: np.array([0, 1, 1]), 4: np.array([1])}
    # task 2 changed length (a different text): left out; words 0,0,0,1 vs 0,0,1,1 -> kappa 0.5 (as above)
    assert math.isclose(paired_kappa(prev, cur), 0.5)
    assert paired_kappa({1: np.array([0])}, {2: np.array([0])}) is None


def test_item_labels_per_kind():
    probs = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert [x.tolist() for x in item_labels(probs, "classification")] == [[1], [0]]
    multi = np.array([[0.6, 0.7, 0.1], [0.2, 0.1, 0.9]])
    assert [x.tolist() for x in item_labels(multi, "classification", multi_label=True)] == [[3], [4]]
    tags = [np.array([[0.9, 0.1], [0.3, 0.7]]), np.zeros((0, 2))]
    assert [x.tolist() for x in item_labels(tags, "tagging")] == [[0, 1], []]


def test_normalized_entropy():
    ent = normalized_entropy(np.array([[0.25] * 4, [1.0, 0, 0, 0]]), "classification")
    assert np.allclose(ent, [1.0, 0.0], atol=1e-9)
    assert np.allclose(normalized_entropy(np.array([[0.5, 1.0]]), "classification", multi_label=True), [0.5])
    tags = [np.array([[0.5, 0.5], [1.0, 0.0]]), np.zeros((0, 2))]
    assert np.allclose(normalized_entropy(tags, "tagging"), [1.0, 0.0], atol=1e-9)


def test_a_sentence_is_as_uncertain_as_its_most_uncertain_word():
    """Nine certain "O" words do not dilute one coin-flip word: the sentence counts as uncertain (the word mean,
    0.1, passed for certain and stopped CoNLL-2003 labeling at a fifth of the F1 still to gain)."""
    sentence = np.array([[1.0, 0.0, 0.0]] * 9 + [[0.5, 0.5, 0.0]])
    assert np.isclose(normalized_entropy([sentence], "tagging")[0], np.log(2) / np.log(3))
    assert not overall_uncertainty(float(normalized_entropy([sentence] * 5, "tagging").mean()), 0.05).fired


def test_stabilizing_predictions_is_bloodgoods_mean_kappa():
    c = stabilizing_predictions([0.5, 0.99, 0.995, 0.999], window=3, threshold=0.99)
    assert c.fired and math.isclose(c.value, (0.99 + 0.995 + 0.999) / 3)
    assert not stabilizing_predictions([0.99, 0.97, 0.999], window=3).fired
    early = stabilizing_predictions([1.0, 1.0], window=3)
    assert not early.fired and early.value is None and "4 versions" in early.detail


def test_kappa_average_is_small_texts_kappa_change():
    c = kappa_average([0.2, 0.6, 0.61, 0.615], window=3, threshold=0.99)
    assert c.fired and math.isclose(c.value, (0.01 + 0.005) / 2)  # low kappa, but it stopped moving
    assert not kappa_average([0.9, 0.95, 0.99], window=3, threshold=0.99).fired
    assert kappa_average([0.9], window=3).value is None


def test_overall_uncertainty_and_plateau():
    assert overall_uncertainty(0.01).fired and not overall_uncertainty(0.2).fired
    assert overall_uncertainty(None).value is None
    assert plateau_index([0.5, 0.6, 0.65, 0.655, 0.66], window=1, min_gain=0.01) == 3
    assert plateau_index([0.5, 0.6, 0.65, 0.655, 0.66], window=2, min_gain=0.01) is None
    assert plateau_index([0.7, 0.7, 0.9, 0.9], window=2, min_gain=0.01) is None
    c = curve_plateau([0.5, 0.6, 0.8, 0.805, 0.80, 0.79], window=2, min_gain=0.01)
    assert c.fired and math.isclose(c.value, (0.80 + 0.79) / 2 - (0.8 + 0.805) / 2)
    assert curve_plateau([0.5], window=2).value is None


def _c(fired: bool) -> Criterion:
    return Criterion("c", fired, 1.0, 0.5, "figures")


@pytest.mark.parametrize("fired,decision", [([], CONTINUE), ([True], CONSIDER), ([True, False], CONSIDER),
                                            ([True, True, False], STOP), ([False, False, False], CONTINUE)])
def test_recommendation_counts_the_criteria_met(fired, decision):
    rec = recommend([_c(f) for f in fired])
    assert rec["decision"] == decision and rec["met"] == sum(fired) and rec["of"] == len(fired)
    assert rec["reason"].startswith("c: figures" if any(fired) else "no criterion met")


def test_stop_sample_is_fixed_and_seeded():
    ids = np.arange(100, 200)
    a, b = stop_sample(ids, 10, seed=3), stop_sample(ids[::-1], 10, seed=3)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10 and set(a.tolist()) <= set(ids.tolist())
    assert np.all(np.diff(a) > 0) and stop_sample(ids, 10, seed=4).tolist() != a.tolist()
    assert stop_sample(ids[:5], 10, seed=3).tolist() == ids[:5].tolist()


# ----------------------------------------------------------------------------------------------------- properties
label_arrays = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=80)


@FAST
@given(label_arrays)
def test_kappa_matches_sklearn_where_defined(pairs):
    metrics = pytest.importorskip("sklearn.metrics")
    a, b = np.array([p for p, _ in pairs]), np.array([q for _, q in pairs])
    k = cohen_kappa(a, b)
    assert -1.0 - 1e-12 <= k <= 1.0 + 1e-12
    assert math.isclose(k, cohen_kappa(b, a), abs_tol=1e-12)  # symmetric
    if len(set(a.tolist()) | set(b.tolist())) > 1:
        assert math.isclose(k, metrics.cohen_kappa_score(a, b), abs_tol=1e-9)


@FAST
@given(label_arrays, st.permutations([0, 1, 2, 3]))
def test_kappa_ignores_label_names_and_is_one_on_identical_predictions(pairs, perm):
    a, b = np.array([p for p, _ in pairs]), np.array([q for _, q in pairs])
    relabel = np.array(perm)
    assert math.isclose(cohen_kappa(relabel[a], relabel[b]), cohen_kappa(a, b), abs_tol=1e-12)
    assert cohen_kappa(a, a) == 1.0


@FAST
@given(st.lists(st.floats(0, 1), min_size=0, max_size=12), st.integers(1, 3), st.floats(0, 0.1))
def test_plateau_index_agrees_with_curve_plateau(values, window, gain):
    i = plateau_index(values, window, gain)
    if i is not None:
        assert curve_plateau(values[: i + 1], window, gain).fired
        assert not any(curve_plateau(values[: j + 1], window, gain).fired for j in range(i))
    else:
        assert not any(curve_plateau(values[: j + 1], window, gain).fired for j in range(len(values)))


@FAST
@given(st.lists(st.lists(st.floats(0.001, 1), min_size=3, max_size=3), min_size=1, max_size=20))
def test_normalized_entropy_is_between_zero_and_one(rows):
    p = np.array(rows)
    p = p / p.sum(axis=1, keepdims=True)
    ent = normalized_entropy(p, "classification")
    assert np.all(ent >= -1e-9) and np.all(ent <= 1 + 1e-9)
