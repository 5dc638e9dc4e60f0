"""Prequential ("test, then train") quality: how often the prediction an annotator was shown agreed with the
annotation that followed.

Why: the model version that made the prediction never trained on that annotation, so comparing the two gives an
honest learning curve on the project's own data at no labeling cost (Dawid's prequential principle). Under active
learning the annotated tasks are the ones the model was least sure of, so the figure is pessimistic against the
whole pool; its trend across versions is what tells whether labeling still pays.

Classification: accuracy (the predicted label set equals the annotated one) and macro-F1 over the labels present
in either. NER: strict span precision / recall / F1 (a predicted span counts only with the annotated start, end
and label), micro-averaged over the annotated tasks, plus the share of tasks whose spans all match.

Pure numpy: the backend (`albackend.services.quality`) and the emulation (`bench/emulation/loop.py`) call the same code.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

CLASSIFICATION = "classification"


@dataclass(frozen=True)
class Outcome:
    """One annotated task that carried a prediction: what the model said and what the annotator said."""

    iteration: int
    version: str
    at: float  # annotation time (epoch seconds): the order of the sliding window
    pred: tuple  # class labels, or spans (start, end, label)
    gold: tuple


def label_scores(pred: Sequence[Sequence[Hashable]], gold: Sequence[Sequence[Hashable]]) -> dict:
    """Accuracy (exact label-set match) and macro-F1 (labels in gold or pred) of label sets per task."""
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} annotations")
    n = len(gold)
    if n == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None}
    labels = sorted({label for row in (*pred, *gold) for label in row}, key=str)
    index = {label: i for i, label in enumerate(labels)}
    p, g = np.zeros((n, len(labels)), bool), np.zeros((n, len(labels)), bool)
    for matrix, sets in ((p, pred), (g, gold)):  # one fancy assignment each: no per-row numpy calls
        matrix[[r for r, row in enumerate(sets) for _ in row], [index[x] for row in sets for x in row]] = True
    tp, fp, fn = (p & g).sum(0), (p & ~g).sum(0), (~p & g).sum(0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)  # every listed label occurs, so the denominator is > 0
    return {"n": n, "accuracy": float((p == g).all(axis=1).mean()),
            "macro_f1": float(f1.mean()) if labels else 1.0}


def span_counts(pred: Sequence[Hashable], gold: Sequence[Hashable]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of one task's spans under exact matching."""
    tp = sum((Counter(pred) & Counter(gold)).values())
    return tp, len(pred) - tp, len(gold) - tp


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den else empty


def prf(tp: float, fp: float, fn: float) -> dict:
    """Precision, recall, F1 from counts; an empty denominator gives 1.0 when nothing was missed, else 0.0."""
    return {"precision": _ratio(tp, tp + fp, float(fn == 0)), "recall": _ratio(tp, tp + fn, float(fp == 0)),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn, 1.0)}


def span_scores(pred: Sequence[Sequence[Hashable]], gold: Sequence[Sequence[Hashable]]) -> dict:
    """Strict span P/R/F1 micro-averaged over tasks, and the share of tasks whose spans all match."""
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} annotations")
    if not gold:
        return {"n": 0, "precision": None, "recall": None, "f1": None, "exact": None}
    counts = np.array([span_counts(p, g) for p, g in zip(pred, gold)], dtype=np.int64)
    exact = float(((counts[:, 1] == 0) & (counts[:, 2] == 0)).mean())
    return {"n": len(gold), **prf(*counts.sum(axis=0).tolist()), "exact": exact}


def scores(kind: str, outcomes: Sequence[Outcome]) -> dict:
    pred, gold = [o.pred for o in outcomes], [o.gold for o in outcomes]
    return label_scores(pred, gold) if kind == CLASSIFICATION else span_scores(pred, gold)


def headline(kind: str, figures: dict) -> float | None:
    """The one agreement figure of a summary: accuracy for classification, span F1 for NER."""
    return figures.get("accuracy" if kind == CLASSIFICATION else "f1")


def by_version(kind: str, outcomes: Sequence[Outcome]) -> list[dict]:
    """Scores per model version, in iteration order: the prequential learning curve."""
    groups: dict[tuple[int, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.iteration, o.version), []).append(o)
    return [{"iteration": it, "model_version": v, **scores(kind, groups[(it, v)]),
             "first_at": min(o.at for o in groups[(it, v)]), "last_at": max(o.at for o in groups[(it, v)])}
            for it, v in sorted(groups)]


def recent(outcomes: Sequence[Outcome], window: int) -> list[Outcome]:
    """The last ``window`` outcomes by annotation time (all of them for window <= 0)."""
    ordered = sorted(outcomes, key=lambda o: o.at)
    return ordered[-window:] if window > 0 else ordered


def rolling(kind: str, outcomes: Sequence[Outcome], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(annotation times, headline agreement over the trailing ``window`` outcomes at each of them).

    Cumulative sums keep it linear in the number of outcomes: accuracy from exact matches, span F1 from the
    summed counts of the window (micro, as `span_scores`)."""
    ordered = recent(outcomes, 0)
    at = np.array([o.at for o in ordered], dtype=np.float64)
    if not ordered:
        return at, np.zeros(0)
    if kind == CLASSIFICATION:
        parts = np.array([[set(o.pred) == set(o.gold)] for o in ordered], dtype=np.float64)
    else:
        parts = np.array([span_counts(o.pred, o.gold) for o in ordered], dtype=np.float64)
    csum = np.vstack([np.zeros((1, parts.shape[1])), np.cumsum(parts, axis=0)])
    end = np.arange(1, len(ordered) + 1)
    sums = csum[end] - csum[np.maximum(end - max(window, 1), 0)]
    size = end - np.maximum(end - max(window, 1), 0)
    if kind == CLASSIFICATION:
        return at, sums[:, 0] / size
    tp, fp, fn = sums.T
    den = 2 * tp + fp + fn
    return at, np.where(den > 0, 2 * tp / np.maximum(den, 1e-12), 1.0)
