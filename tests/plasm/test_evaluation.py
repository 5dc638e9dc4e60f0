"""plasm.evaluation.successor_warnings: the report tells a user when the successor is not fit to deploy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from plasm.evaluation import WARN_MARGIN, successor_warnings


def _ner(f1: float, n: int = 20, spans: int = 5) -> dict:
    return {"metric": "f1", "f1": f1, "precision": f1, "recall": f1, "n": n, "predicted_spans": spans}


def test_collapsed_tagger_is_named_twice():
    """The CoNLL-2003 case of docs/results.md section 8: teacher dev F1 0.75, successor tags nothing."""
    notes = successor_warnings({"teacher": _ner(0.748), "successor": _ner(0.0, spans=0)})
    assert len(notes) == 2
    assert "tags no entity in the 20 dev examples" in notes[0]
    assert "0.000 is 0.748 below the teacher's 0.748" in notes[1] and "max_steps" in notes[1]


def test_a_successor_at_or_above_the_teacher_gets_no_warning():
    assert successor_warnings({"teacher": _ner(0.7), "successor": _ner(0.75)}) == []
    acc = {"metric": "accuracy", "n": 30}
    assert successor_warnings({"teacher": {**acc, "accuracy": 0.9}, "successor": {**acc, "accuracy": 0.85}}) == []


def test_no_dev_set_no_verdict():
    assert successor_warnings({"teacher": {"n": 0}, "successor": {"n": 0}}) == []
    assert successor_warnings({}) == []


@given(t=st.floats(0, 1), s=st.floats(0, 1))
def test_warns_exactly_beyond_the_margin(t, s):
    acc = {"metric": "accuracy", "n": 10}
    notes = successor_warnings({"teacher": {**acc, "accuracy": t}, "successor": {**acc, "accuracy": s}})
    assert bool(notes) == (s < t - WARN_MARGIN)
