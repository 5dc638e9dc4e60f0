"""Tests for albackend.algorithms.warmstart: the pure warm-vs-scratch decisions."""

from __future__ import annotations

import pytest

from albackend.algorithms.warmstart import retrain_mode, warm_start_mismatch, warm_steps

SPEC = {"kind": "tagging", "from_name": "label", "to_name": "text", "value_key": "text",
        "labels": ["PER", "LOC"], "multi_label": False}


def test_retrain_mode_schedule():
    modes = [retrain_mode(i, 3) for i in range(8)]
    assert modes == ["scratch", "warm", "warm", "scratch", "warm", "warm", "scratch", "warm"]


def test_retrain_mode_never_periodic_scratch():
    assert [retrain_mode(i, 0) for i in range(5)] == ["scratch"] + ["warm"] * 4


def test_retrain_mode_scratch_when_disabled_or_no_previous():
    assert retrain_mode(5, 0, enabled=False) == "scratch"
    assert retrain_mode(5, 0, has_previous=False) == "scratch"
    assert retrain_mode(1, 1) == "scratch"  # every iteration from scratch


def test_retrain_mode_rejects_negative_period():
    with pytest.raises(ValueError, match="scratch_every"):
        retrain_mode(2, -1)


@pytest.mark.parametrize("steps,fraction,expected", [(60, 0.5, 30), (61, 0.5, 31), (3, 0.1, 1), (60, 1.0, 60)])
def test_warm_steps(steps, fraction, expected):
    assert warm_steps(steps, fraction) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_warm_steps_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        warm_steps(60, fraction)


def test_warm_start_mismatch():
    prev = {"base_model": "minilm-l6", "spec": SPEC}
    assert warm_start_mismatch(prev, "minilm-l6", dict(SPEC)) is None
    assert warm_start_mismatch(prev, "minilm-l6", {**SPEC, "labels": ("PER", "LOC")}) is None  # tuple vs list
    assert warm_start_mismatch(prev, "minilm-l6", {**SPEC, "from_name": "ner"}) is None  # renamed control
    assert "base model" in warm_start_mismatch(prev, "splade-tiny", SPEC)
    assert "task" in warm_start_mismatch(prev, "minilm-l6", {**SPEC, "labels": ["PER", "LOC", "ORG"]})
    assert "task" in warm_start_mismatch(prev, "minilm-l6", {**SPEC, "kind": "classification"})
    assert "metadata" in warm_start_mismatch({}, "minilm-l6", SPEC)
