"""When labeling stops paying: stopping criteria for active learning on the backend's own data (numpy only).

- **Stabilizing predictions** (Bloodgood & Vijay-Shanker, CoNLL 2009): Cohen's kappa between the predictions of
  consecutive model versions on a fixed random sample of the pool (the *stop set*); stop once the mean kappa of
  the last ``window`` pairs of versions (they use 3) is at least ``threshold`` (0.99).
- **KappaAverage as small-text implements it** (`small_text.stopping_criteria.KappaAverage`): the same kappas,
  but it stops when the mean absolute *change* of kappa over the last ``window`` kappas is below
  ``1 - threshold``: kappa has stopped moving, whatever its level. Reported beside the first, not counted twice.
- **Overall uncertainty** (Zhu, Wang & Hovy 2008; small-text `OverallUncertainty`): the mean normalized entropy
  of the model's predictions on the stop set falls below ``threshold`` (0.05).
- **Plateau of a learning curve** (here: the prequential agreement per version): the mean of the last ``window``
  points gained less than ``min_gain`` over the mean of the ``window`` before.

`recommend` combines the three independent signals (stabilizing predictions, overall uncertainty, plateau):
none met -> continue, one -> consider stopping, two or more -> stop, with the reason and the figures.
The backend (`albackend.services.stopset`) and the emulation (`bench/emulation/loop.py`) call the same functions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

CONTINUE, CONSIDER, STOP = "continue", "consider stopping", "stop"
_EPS = 1e-12


@dataclass(frozen=True)
class Criterion:
    name: str
    fired: bool
    value: float | None  # the figure compared with the threshold (None: not enough data yet)
    threshold: float
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def stop_sample(task_ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed, seeded random sample of ``size`` ids (all of them when fewer), sorted."""
    ids = np.unique(np.asarray(task_ids, dtype=np.int64))
    if size <= 0 or ids.size <= size:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size=size, replace=False))


def item_labels(probs: np.ndarray | Sequence[np.ndarray], kind: str, multi_label: bool = False) -> list[np.ndarray]:
    """What the model predicts per item, as small int arrays: the class (one value), the label set as a bit code
    (multi-label; labels past the 62nd share bits), or the tag of every word (tagging: (n_words, n_tags) each)."""
    if kind == "tagging":
        return [np.asarray(p).argmax(axis=1).astype(np.int64) if np.asarray(p).size else np.zeros(0, np.int64)
                for p in probs]
    p = np.asarray(probs, dtype=np.float64)
    if multi_label:
        bits = np.left_shift(np.int64(1), np.arange(p.shape[1], dtype=np.int64) % 62)
        return [np.array([int(bits[row >= 0.5].sum())], dtype=np.int64) for row in p]
    return [np.array([int(i)], dtype=np.int64) for i in p.argmax(axis=1)]


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label arrays; 1.0 when both use one and the same label throughout (p_e = 1)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.size != b.size or a.size == 0:
        raise ValueError(f"kappa needs two non-empty label arrays of one length, got {a.size} and {b.size}")
    _, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
    ca, cb = codes[: a.size], codes[a.size:]
    k = int(codes.max()) + 1
    p_o = float(np.mean(ca == cb))
    p_e = float(np.dot(np.bincount(ca, minlength=k), np.bincount(cb, minlength=k))) / a.size ** 2
    return 1.0 if p_e >= 1.0 - _EPS else (p_o - p_e) / (1.0 - p_e)


def paired_kappa(prev: Mapping[int, np.ndarray], cur: Mapping[int, np.ndarray]) -> float | None:
    """Kappa over the items both versions labeled (words of a sentence pair up when its length matches)."""
    keys = [k for k in prev if k in cur and len(prev[k]) == len(cur[k]) and len(cur[k])]
    if not keys:
        return None
    return cohen_kappa(np.concatenate([prev[k] for k in keys]), np.concatenate([cur[k] for k in keys]))


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


def normalized_entropy(probs: np.ndarray | Sequence[np.ndarray], kind: str, multi_label: bool = False) -> np.ndarray:
    """Per item, the prediction entropy divided by its maximum (0 = certain, 1 = uniform). Tagging: the sentence's
    most uncertain word (one wrong word is a wrong span; the mean over words let the ~83% of confident "O" words
    of CoNLL-2003 push it under 0.05 at 300 sentences, F1 0.48 of a reachable 0.58); multi-label: the mean binary
    entropy over the labels."""
    if kind == "tagging":
        out = np.zeros(len(probs))
        for i, p in enumerate(probs):
            p = np.asarray(p, dtype=np.float64)
            if p.size and p.shape[1] > 1:
                out[i] = float(np.max(_entropy(p) / np.log(p.shape[1])))
        return out
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        return np.zeros(0)
    if multi_label:
        return (_entropy(np.stack([p, 1.0 - p], axis=-1)) / np.log(2.0)).mean(axis=1)
    return _entropy(p) / np.log(max(p.shape[1], 2))


def stabilizing_predictions(kappas: Sequence[float], window: int = 3, threshold: float = 0.99) -> Criterion:
    """Bloodgood & Vijay-Shanker: mean kappa of the last ``window`` pairs of consecutive versions >= threshold."""
    if len(kappas) < window:
        return Criterion("stabilizing predictions", False, None, threshold,
                         f"needs {window} kappas ({window + 1} versions), has {len(kappas)}")
    mean = float(np.mean(kappas[-window:]))
    return Criterion("stabilizing predictions", mean >= threshold, mean, threshold,
                     f"mean κ of the last {window} version pairs {mean:.3f} {'≥' if mean >= threshold else '<'} "
                     f"{threshold:g}")


def kappa_average(kappas: Sequence[float], window: int = 3, threshold: float = 0.99) -> Criterion:
    """small-text's KappaAverage: mean |Δκ| over the last ``window`` kappas < 1 - threshold."""
    if len(kappas) < max(window, 2):
        return Criterion("kappa average (small-text)", False, None, 1.0 - threshold,
                         f"needs {max(window, 2)} kappas, has {len(kappas)}")
    delta = float(np.mean(np.abs(np.diff(np.asarray(kappas[-window:], dtype=np.float64)))))
    fired = delta < 1.0 - threshold
    return Criterion("kappa average (small-text)", fired, delta, 1.0 - threshold,
                     f"mean |Δκ| over the last {window} kappas {delta:.4f} {'<' if fired else '≥'} "
                     f"{1.0 - threshold:g}")


def overall_uncertainty(value: float | None, threshold: float = 0.05) -> Criterion:
    """Zhu et al. / small-text OverallUncertainty: mean normalized entropy on the stop set < threshold."""
    if value is None:
        return Criterion("overall uncertainty", False, None, threshold, "no stop-set scoring yet")
    fired = value < threshold
    return Criterion("overall uncertainty", fired, float(value), threshold,
                     f"mean normalized entropy {value:.3f} {'<' if fired else '≥'} {threshold:g}")


def plateau_index(values: Sequence[float], window: int = 2, min_gain: float = 0.01) -> int | None:
    """First index i where mean(values[i-w+1..i]) - mean(values[i-2w+1..i-w]) < min_gain; None if none."""
    v = np.asarray(values, dtype=np.float64)
    w = max(int(window), 1)
    for i in range(2 * w - 1, v.size):
        if v[i - w + 1:i + 1].mean() - v[i - 2 * w + 1:i - w + 1].mean() < min_gain:
            return i
    return None


def curve_plateau(values: Sequence[float], window: int = 2, min_gain: float = 0.01,
                  name: str = "prequential plateau") -> Criterion:
    """Whether the curve's latest point is on a plateau: the last ``window`` points gained < min_gain."""
    if len(values) < 2 * window:
        return Criterion(name, False, None, min_gain, f"needs {2 * window} points, has {len(values)}")
    v = np.asarray(values, dtype=np.float64)
    gain = float(v[-window:].mean() - v[-2 * window:-window].mean())
    fired = gain < min_gain
    return Criterion(name, fired, gain, min_gain,
                     f"gain of the last {window} points {gain:+.3f} {'<' if fired else '≥'} {min_gain:g}")


def recommend(criteria: Sequence[Criterion]) -> dict:
    """continue / consider stopping / stop, by how many of the independent criteria are met, with the reason."""
    fired = [c for c in criteria if c.fired]
    decision = STOP if len(fired) >= 2 else CONSIDER if fired else CONTINUE
    if fired:
        reason = "; ".join(f"{c.name}: {c.detail}" for c in fired)
    else:
        reason = "no criterion met: " + "; ".join(f"{c.name}: {c.detail}" for c in criteria)
    return {"decision": decision, "reason": reason, "met": len(fired), "of": len(criteria),
            "criteria": [c.as_dict() for c in criteria]}
