"""Test metrics and the paper's Table 1 statistic.

* classification: accuracy;
* tagging: strict span F1 (seqeval, IOB2, ``mode="strict"``) over the gold words of each test sentence; the
  predicted character spans are mapped onto the same words (a word takes the label of the span holding its
  first character), so a model whose sub-word tokenizer splits words differently is scored on equal terms;
* Table 1: the share of this iteration's *standard* query (top-q of a fresh full-pool scoring) that lies in the
  top-k% most uncertain items of the current pool ranked by the *previous* iteration's full-pool scores.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from albackend.strategies import select_top_k
from bench.emulation.data import Words, spans_to_tags

TOP_K_PERCENTS = (10, 20, 30, 40, 50)


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    p, g = np.asarray(pred), np.asarray(gold)
    return float((p == g).mean()) if g.size else float("nan")


def span_f1(pred_spans: Sequence[Sequence[tuple]], gold_spans: Sequence[Sequence[tuple]],
            words: Sequence[Words]) -> float:
    """Strict span-level F1 (seqeval, IOB2) of predicted vs gold character spans, on the gold words."""
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    y_true = [spans_to_tags(w, g) for w, g in zip(words, gold_spans)]
    y_pred = [spans_to_tags(w, [s[:3] for s in p]) for w, p in zip(words, pred_spans)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no predicted entity at all: seqeval warns and returns 0
        return float(f1_score(y_true, y_pred, mode="strict", scheme=IOB2, zero_division=0))


def topk_overlap(standard_query: np.ndarray, prev_uncertainty: np.ndarray, unlabeled: np.ndarray,
                 percents: Sequence[int] = TOP_K_PERCENTS) -> dict[str, float]:
    """Table 1: share of ``standard_query`` inside the top-k% of ``unlabeled`` ranked by ``prev_uncertainty``.

    ``prev_uncertainty`` is indexed by pool position (NaN where the previous model did not score an item);
    ``unlabeled`` are the pool positions of the current unlabeled pool, ``standard_query`` a subset of them.
    The ranking is over the current pool (what UPS ranks), with the product's tie-breaking (select_top_k).
    """
    q = np.asarray(standard_query, dtype=np.int64)
    if q.size == 0 or unlabeled.size == 0:
        return {}
    order = unlabeled[select_top_k(prev_uncertainty[unlabeled], unlabeled.size)]
    out = {}
    for k in percents:
        top = order[: int(np.ceil(unlabeled.size * k / 100.0))]
        out[str(k)] = float(np.isin(q, top).mean())
    return out


def share_in(query: np.ndarray, subset: np.ndarray) -> float:
    """Fraction of ``query`` items that are in ``subset`` (NaN for an empty query)."""
    q = np.asarray(query)
    return float(np.isin(q, np.asarray(subset)).mean()) if q.size else float("nan")
