"""albackend.algorithms.prequential: hand-computed cases and properties of the agreement figures."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from albackend.algorithms.prequential import (Outcome, by_version, headline, label_scores, prf, recent, rolling,
                                              scores, span_counts, span_scores)


def test_label_scores_by_hand():
    # gold a a b c, pred a b b b: accuracy 2/4; F1 a = 2*1/(2+0+1) = 2/3, b = 2*1/(2+2+0) = 1/2, c = 0
    s = label_scores([["a"], ["b"], ["b"], ["b"]], [["a"], ["a"], ["b"], ["c"]])
    assert s["n"] == 4 and s["accuracy"] == 0.5
    assert math.isclose(s["macro_f1"], (2 / 3 + 1 / 2 + 0) / 3)


def test_label_scores_multi_label_sets():
    s = label_scores([["x", "y"], ["x"]], [["y", "x"], ["x", "y"]])
    assert s["accuracy"] == 0.5  # order does not matter, a missing label does
    assert math.isclose(s["macro_f1"], (1.0 + 2 / 3) / 2)  # x: tp 2; y: tp 1, fn 1


def test_empty_and_mismatched_inputs():
    assert label_scores([], []) == {"n": 0, "accuracy": None, "macro_f1": None}
    assert span_scores([], [])["f1"] is None
    with pytest.raises(ValueError):
        label_scores([["a"]], [])
    with pytest.raises(ValueError):
        span_scores([], [[(0, 1, "PER")]])


def test_span_counts_are_strict():
    gold = [(0, 3, "PER"), (10, 15, "LOC")]
    assert span_counts([(0, 3, "PER"), (10, 14, "LOC")], gold) == (1, 1, 1)  # one character off is wrong
    assert span_counts([(0, 3, "LOC")], gold) == (0, 1, 2)  # same span, other label
    assert span_counts([], []) == (0, 0, 0)


def test_span_scores_micro_average_by_hand():
    pred = [[(0, 3, "PER")], [(0, 2, "ORG"), (5, 9, "LOC")], []]
    gold = [[(0, 3, "PER")], [(5, 9, "LOC")], [(1, 4, "MISC")]]
    s = span_scores(pred, gold)  # tp 2, fp 1, fn 1
    assert (s["precision"], s["recall"]) == (2 / 3, 2 / 3) and math.isclose(s["f1"], 2 / 3)
    assert s["exact"] == 1 / 3


def test_prf_empty_denominators():
    assert prf(0, 0, 0) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}  # nothing to find, nothing found
    assert prf(0, 0, 2) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert prf(0, 3, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def _o(it, at, pred, gold):
    return Outcome(it, f"v{it}", float(at), tuple(pred), tuple(gold))


def test_by_version_recent_and_headline():
    outs = [_o(0, 1, ["a"], ["a"]), _o(0, 2, ["a"], ["b"]), _o(1, 3, ["b"], ["b"]), _o(1, 4, ["a"], ["a"])]
    curve = by_version("classification", outs)
    assert [(c["iteration"], c["n"], c["accuracy"]) for c in curve] == [(0, 2, 0.5), (1, 2, 1.0)]
    assert (curve[0]["first_at"], curve[0]["last_at"]) == (1.0, 2.0)
    assert [o.at for o in recent(list(reversed(outs)), 3)] == [2.0, 3.0, 4.0]
    assert len(recent(outs, 0)) == 4
    assert headline("classification", scores("classification", outs)) == 0.75
    assert headline("tagging", {"f1": 0.4, "accuracy": 1.0}) == 0.4


def test_rolling_by_hand():
    outs = [_o(0, t, ["a"], [g]) for t, g in enumerate("aabb")]  # exact: 1 1 0 0
    at, acc = rolling("classification", outs, 2)
    assert at.tolist() == [0, 1, 2, 3] and acc.tolist() == [1.0, 1.0, 0.5, 0.0]
    spans = [_o(0, 0, [(0, 1, "X")], [(0, 1, "X")]), _o(0, 1, [(0, 1, "X")], []), _o(0, 2, [], [])]
    _, f1 = rolling("tagging", spans, 2)
    assert f1.tolist() == [1.0, 2 / 3, 0.0]  # windows (tp1), (tp1 fp1), (fp1)
    assert rolling("tagging", [], 5)[1].size == 0


# ----------------------------------------------------------------------------------------------------- properties
FAST = settings(max_examples=60, deadline=None)  # shared cores: timings vary, and sklearn imports on first use
labels = st.sampled_from(["a", "b", "c", "d"])
pairs = st.lists(st.tuples(labels, labels), min_size=1, max_size=60)


@FAST
@given(pairs)
def test_single_label_scores_match_sklearn(rows):
    metrics = pytest.importorskip("sklearn.metrics")
    pred, gold = [p for p, _ in rows], [g for _, g in rows]
    s = label_scores([[p] for p in pred], [[g] for g in gold])
    assert math.isclose(s["accuracy"], metrics.accuracy_score(gold, pred))
    assert math.isclose(s["macro_f1"], metrics.f1_score(gold, pred, average="macro", zero_division=0))


@FAST
@given(st.lists(st.lists(labels, max_size=3), min_size=1, max_size=30))
def test_perfect_predictions_score_one(rows):
    s = label_scores(rows, [list(reversed(r)) for r in rows])
    assert s["accuracy"] == 1.0 and s["macro_f1"] == 1.0


spans = st.lists(st.tuples(st.integers(0, 5), st.integers(6, 9), st.sampled_from(["PER", "LOC"])), max_size=4)


@FAST
@given(st.lists(st.tuples(spans, spans), min_size=1, max_size=20))
def test_span_scores_bounded_and_symmetric(rows):
    pred, gold = [p for p, _ in rows], [g for _, g in rows]
    s, swapped = span_scores(pred, gold), span_scores(gold, pred)
    for key in ("precision", "recall", "f1", "exact"):
        assert 0.0 <= s[key] <= 1.0
    assert math.isclose(s["f1"], swapped["f1"])  # swapping roles swaps P and R, F1 stays
    assert (s["precision"], s["recall"]) == (swapped["recall"], swapped["precision"])
    assert span_scores(gold, gold)["f1"] == 1.0


@FAST
@given(pairs, st.integers(1, 10))
def test_rolling_matches_scores_of_the_trailing_window(rows, window):
    outs = [_o(0, i, [p], [g]) for i, (p, g) in enumerate(rows)]
    _, acc = rolling("classification", outs, window)
    for i in range(len(outs)):
        expect = scores("classification", outs[max(0, i + 1 - window):i + 1])["accuracy"]
        assert math.isclose(acc[i], expect)
    assert np.all((acc >= 0) & (acc <= 1))
