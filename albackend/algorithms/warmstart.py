"""Warm start vs from-scratch retraining: the pure decisions (no torch).

A warm start fine-tunes the previous model version on *all* gold labels again, for a fraction of the steps a
from-scratch retrain takes; a periodic from-scratch retrain keeps the model from drifting along the path of
its earlier, smaller label sets (the early versions' mistakes are not baked in forever).
"""
from __future__ import annotations

import math
from typing import Literal

RetrainMode = Literal["warm", "scratch"]
TASK_KEYS = ("kind", "labels", "multi_label")  # what the head's shape and meaning depend on (not tag names)


def retrain_mode(iteration: int, scratch_every: int, *, enabled: bool = True,
                 has_previous: bool = True) -> RetrainMode:
    """How to train the model of 0-based `iteration`.

    Scratch when warm start is off, when there is no previous version (iteration 0 or a failed/removed one),
    and on every `scratch_every`-th iteration (0 = never periodically); warm otherwise.
    """
    if scratch_every < 0:
        raise ValueError(f"scratch_every must be >= 0, got {scratch_every}")
    if not enabled or not has_previous or iteration <= 0:
        return "scratch"
    if scratch_every and iteration % scratch_every == 0:
        return "scratch"
    return "warm"


def warm_steps(scratch_steps: int, fraction: float) -> int:
    """Gradient steps of a warm start: `fraction` of the from-scratch plan, at least one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the warm-start steps fraction must be in (0, 1], got {fraction}")
    return max(1, math.ceil(scratch_steps * fraction))


def warm_start_mismatch(previous_meta: dict, base: str, spec: dict) -> str | None:
    """Why the previous version cannot seed this retrain (None = it can): it must hold the same encoder and
    the same task (kind, labels, multi-label), or its head and vocabulary would not fit."""
    if not previous_meta:
        return "the previous version has no metadata"
    if previous_meta.get("base_model") != base:
        return f"base model changed ({previous_meta.get('base_model')!r} -> {base!r})"
    prev = previous_meta.get("spec") or {}
    if any(_norm(prev.get(k)) != _norm(spec.get(k)) for k in TASK_KEYS):
        return "the labeling task (kind, labels or multi-label) changed"
    return None


def _norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value
