"""Unlabeled pool subsampling (UPS, paper section 4.2) and the full-pool schedule.

Why: scoring the whole unlabeled pool is the slowest step of an AL iteration, yet the most *certain* items
barely change score between iterations. UPS rescores the previous top-γ most uncertain items for sure, plus a
random tail whose keep probability decays exponentially with rank, so an item that was once wrongly scored as
certain can still come back.

Rank conventions (they matter at the γ boundary, so they are fixed here once):

* items are ranked by their last uncertainty, most uncertain first (rank 0); ties are broken by position
  (stable sort), so the same input and seed always give the same subsample;
* the normalised rank is ``r_i = i / n`` as in the authors' code (the paper writes ``i / M`` with
  ``M`` the last index; ``i / n`` keeps ``r < 1``, so ``γ = 1`` keeps everything for any T);
* the **always-kept set** is ``K = {i : r_i <= γ}``, the *same set for every T >= 0*. It holds the top-γ
  fraction (the ``ceil(γ·n)`` most uncertain items) plus, when ``γ·n`` is an integer, the one boundary item
  ``r_i == γ`` that the authors' formula also gives P = exp(0) = 1. ``|K| = min(n, floor(γ·n) + 1)``
  (compared in floating point as ``i/n <= γ``);
* ``T > 0``: ``P(i) = exp(-max(0, r_i − γ) / max(T, 1e-8))`` — the authors' formula;
* ``T == 0``: exactly ``K`` (P = 1 for ``r_i <= γ``, else 0) — the paper's "top-k only" ablation. This is the
  T → 0⁺ limit of the formula (which the authors' ``max(T, 1e-8)`` floor approximates), so T = 0 keeps
  exactly the set that every T > 0 keeps with certainty. Consequence: the most uncertain scored item (r_0 = 0) is always kept,
  so a non-empty pool never yields an empty selection (a single-task pool is always kept, even at γ = 0).
  At most one item more than ``ceil(γ·n)`` is kept, so the kept fraction is in ``[γ, γ + 1/n]``.

Never-scored items (NaN uncertainty, e.g. tasks imported since the last iteration) have no score to rank by;
they are always kept and are *not* counted in the ranking, so a large import does not push the previous top-γ
out of the rescored set.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FullPoolSchedule",
    "expected_kept_fraction",
    "keep_probabilities",
    "rank_descending",
    "ups_subsample",
]

_MIN_T = 1e-8  # the authors' floor on T: avoids a division by zero while keeping T→0 behaviour


def _validate(gamma: float, temperature: float) -> None:
    if not (isinstance(gamma, (int, float, np.floating, np.integer)) and 0.0 <= float(gamma) <= 1.0):
        raise ValueError(f"UPS gamma must be in [0, 1], got {gamma!r}")
    if not (isinstance(temperature, (int, float, np.floating, np.integer)) and float(temperature) >= 0.0):
        raise ValueError(f"UPS temperature must be >= 0, got {temperature!r}")
    if math.isinf(float(temperature)):
        raise ValueError(f"UPS temperature must be finite, got {temperature!r}")


def keep_probabilities(n: int, gamma: float, temperature: float) -> np.ndarray:
    """Keep probability for ranks 0..n-1 (0 = most uncertain), float64 of length ``n``.

    See the module docstring for the boundary convention: P = 1 exactly on ``i/n <= γ`` for every T.
    """
    _validate(gamma, temperature)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    r = np.arange(n, dtype=np.float64) / max(n, 1)
    gamma = float(gamma)
    if float(temperature) == 0.0:
        return (r <= gamma).astype(np.float64)
    excess = np.maximum(0.0, r - gamma)
    return np.exp(-excess / max(float(temperature), _MIN_T))


def rank_descending(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores`` (no NaN) from highest to lowest, ties in position order (i.e. a stable sort).

    Why not ``np.argsort(-s, kind="stable")``: that is a merge sort, ~170 ms at 1M items. For float32 (what the
    score cache stores) each score maps to a monotone uint32 key; packing it with the position into one unique
    uint64 lets numpy's fast (unstable, SIMD) sort produce the stable order, ~10x faster.
    """
    s = np.asarray(scores)
    n = s.shape[0]
    if s.dtype.itemsize > 4 or not np.issubdtype(s.dtype, np.floating) or n >= 2**32:
        return np.argsort(-s.astype(np.float64, copy=False), kind="stable")
    bits = (s.astype(np.float32, copy=False) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    sign = np.uint32(0x80000000)
    ascending = np.where(bits & sign, ~bits, bits | sign)  # IEEE order -> unsigned order
    keys = (~ascending).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def ups_subsample(
    uncertainty: np.ndarray, gamma: float, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean keep mask aligned with ``uncertainty`` (higher = more uncertain; NaN = never scored, kept).

    One Bernoulli draw per ranked item (``rng.random(m) < p``), so the sample size is random, as in the
    paper; the number of draws depends only on the number of scored items, which keeps runs reproducible.
    """
    _validate(gamma, temperature)
    u = np.asarray(uncertainty)
    if u.ndim != 1:
        raise ValueError(f"uncertainty must be 1-D, got shape {u.shape}")
    n = u.shape[0]
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    if not (np.issubdtype(u.dtype, np.floating) and u.dtype.itemsize <= 8):
        u = u.astype(np.float64)
    unscored = np.isnan(u)
    keep[unscored] = True
    scored_idx = np.flatnonzero(~unscored)
    m = scored_idx.shape[0]
    if m == 0:
        return keep
    order = scored_idx[rank_descending(u[scored_idx])]
    p = keep_probabilities(m, gamma, temperature)
    draws = rng.random(m) < p
    keep[order] = draws
    return keep


def expected_kept_fraction(gamma: float, temperature: float) -> float:
    """Continuous-rank expectation of the kept fraction: ``γ + T(1 − e^{−(1−γ)/T})`` (``γ`` when T = 0).

    The discrete mean over ``r_i = i/n`` differs from it by at most ``1/n`` (P is monotone in [0, 1]).
    """
    _validate(gamma, temperature)
    gamma, t = float(gamma), float(temperature)
    if t == 0.0:
        return gamma
    return gamma + t * -math.expm1(-(1.0 - gamma) / t)


@dataclass(frozen=True)
class FullPoolSchedule:
    """Which iterations score the whole pool instead of a UPS subsample.

    Why: early models are trained on very little data, so their uncertainty ranking is unreliable (warm-up);
    interleaving occasional full passes (``every``) refreshes stale scores of items UPS keeps skipping.
    Iterations are 0-based.
    """

    warmup: tuple[int, ...] = (0, 1, 4, 8)
    every: int = 0
    enabled: bool = True

    def __post_init__(self) -> None:
        warmup = tuple(self.warmup)
        for w in warmup:
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 0:
                raise ValueError(f"warm-up iterations must be non-negative integers, got {w!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, (int, np.integer)) or self.every < 0:
            raise ValueError(f"'every' must be a non-negative integer (0 = off), got {self.every!r}")
        object.__setattr__(self, "warmup", tuple(sorted({int(w) for w in warmup})))
        object.__setattr__(self, "every", int(self.every))
        object.__setattr__(self, "enabled", bool(self.enabled))

    def is_full(self, iteration: int) -> bool:
        """True when ``iteration`` must rescore the whole pool (always, when UPS is disabled)."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        if not self.enabled:
            return True
        if iteration in self.warmup:
            return True
        return self.every > 0 and iteration % self.every == 0

    @classmethod
    def parse(cls, spec: str, every: int = 0, enabled: bool = True) -> "FullPoolSchedule":
        """Build from a settings string such as ``"0,1,4,8"`` (blank = no warm-up); whitespace is ignored."""
        if spec is None:
            raise ValueError("UPS warm-up spec must be a string like '0,1,4,8' (empty for none), got None")
        text = str(spec).strip()
        warmup: list[int] = []
        if text:
            for token in text.split(","):
                token = token.strip()
                if not re.fullmatch(r"[0-9]+", token):  # rejects '', '-1', '1.5', 'a'
                    raise ValueError(
                        f"bad UPS warm-up spec {spec!r}: {token!r} is not a non-negative integer "
                        "(expected comma-separated 0-based iterations, e.g. '0,1,4,8', or '' for none)"
                    )
                warmup.append(int(token))
        try:
            every_i = int(every)
        except (TypeError, ValueError):
            raise ValueError(f"'every' must be a non-negative integer (0 = off), got {every!r}") from None
        if every_i != every:
            raise ValueError(f"'every' must be a non-negative integer (0 = off), got {every!r}")
        return cls(warmup=tuple(warmup), every=every_i, enabled=bool(enabled))
