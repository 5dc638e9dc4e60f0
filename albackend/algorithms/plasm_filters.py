"""PLASM pseudo-label filter arithmetic (paper section 4.1, step 5).

The teacher's held-out score q says roughly what share of its pseudo-labels
are wrong, so 1 - q of them are dropped: by the teacher's uncertainty, by
TracIn self-influence, or both (uncertainty first, TracIn removes the rest).
All fractions here are fractions of the ORIGINAL pseudo-labeled pool, so the
two filters compose without double counting.

This module is an algorithm layer: numpy only, no torch, HTTP or Label Studio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FILTER_MODES",
    "FilterPlan",
    "drop_count",
    "drop_fraction",
    "drop_least_confident",
    "drop_most_influential",
    "plan_filters",
]

FILTER_MODES = ("uncertainty", "tracin", "both", "none")


def _check_unit(name: str, value: float) -> float:
    """A fraction or score outside [0, 1] (or NaN) is a bug upstream: refuse it early."""
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def drop_fraction(q: float, already_dropped: float = 0.0) -> float:
    """Fraction of the pool still to drop: max(0, (1 - q) - already_dropped).

    ``q`` is the teacher's dev score (accuracy or span F1); ``already_dropped``
    is what an earlier filter removed, so together they drop exactly 1 - q.
    """
    qv = _check_unit("q", q)
    done = _check_unit("already_dropped", already_dropped)
    return min(1.0, max(0.0, (1.0 - qv) - done))


@dataclass(frozen=True)
class FilterPlan:
    """How much each filter drops, as fractions of the original pseudo-labeled pool."""

    uncertainty_fraction: float
    tracin_fraction: float

    @property
    def total(self) -> float:
        """Everything dropped: 1 - q for every mode except "none"."""
        return self.uncertainty_fraction + self.tracin_fraction


def plan_filters(q: float, mode: str, uncertainty_share: float = 0.5) -> FilterPlan:
    """Split the 1 - q drop budget between the uncertainty and TracIn filters.

    "both" lets the cheap uncertainty filter take ``uncertainty_share`` of the
    budget first; TracIn (which needs retraining to compute) removes the rest.
    """
    total = drop_fraction(q)
    share = _check_unit("uncertainty_share", uncertainty_share)
    if mode == "none":
        return FilterPlan(0.0, 0.0)
    if mode == "uncertainty":
        return FilterPlan(total, 0.0)
    if mode == "tracin":
        return FilterPlan(0.0, total)
    if mode == "both":
        unc = total * share
        return FilterPlan(unc, drop_fraction(q, already_dropped=unc))
    raise ValueError(f"unknown filter mode {mode!r}; valid: {', '.join(FILTER_MODES)}")


def drop_count(fraction: float, n_reference: int, n_available: int | None = None) -> int:
    """round(fraction * n_reference), capped at ``n_available``: the one place counts are rounded.

    Uses Python's round() (half to even), so callers and tests agree exactly.
    """
    f = _check_unit("fraction", fraction)
    if n_reference < 0:
        raise ValueError(f"n_reference must be >= 0, got {n_reference}")
    count = int(round(f * n_reference))
    if n_available is not None:
        count = min(count, max(0, int(n_available)))
    return count


def _as_1d(name: str, values: np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def drop_least_confident(confidence: np.ndarray, fraction: float) -> np.ndarray:
    """Keep mask dropping the round(fraction * n) lowest-confidence pseudo-labels.

    Confidence is the teacher's max probability (classification) or exp(-MNLP)
    (tagging).  NaN counts as least confident: a broken prediction should not
    survive as a training label.  Ties go by index, so results are reproducible.
    """
    c = _as_1d("confidence", confidence)
    n = c.size
    keep = np.ones(n, dtype=bool)
    k = drop_count(fraction, n, n)
    if k == 0:
        return keep
    nan = np.isnan(c)
    # primary key: NaN first (~nan is False); then ascending confidence; then index
    order = np.lexsort((np.arange(n), np.where(nan, 0.0, c), ~nan))
    keep[order[:k]] = False
    return keep


def drop_most_influential(
    self_influence: np.ndarray, fraction: float, n_reference: int | None = None
) -> np.ndarray:
    """Keep mask dropping the round(fraction * n_reference) most self-influential items.

    High TracIn self-influence marks examples the model struggles to fit, which
    is where mislabelled pseudo-labels end up.  ``n_reference`` is the size of
    the ORIGINAL pool (default: this array's length) because the plan's fraction
    refers to it even after the uncertainty filter shrank the pool; the count is
    capped at what is there.  NaN counts as most influential.
    """
    s = _as_1d("self_influence", self_influence)
    n = s.size
    keep = np.ones(n, dtype=bool)
    k = drop_count(fraction, n if n_reference is None else n_reference, n)
    if k == 0:
        return keep
    nan = np.isnan(s)
    # primary key: NaN first; then descending influence (+inf first); then index
    neg = np.where(nan, 0.0, -s)
    order = np.lexsort((np.arange(n), neg, ~nan))
    keep[order[:k]] = False
    return keep
