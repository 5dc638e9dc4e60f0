"""Test metrics and the paper's Table 1 statistic.

* classification: accuracy;
* tagging: strict span F1 (seqeval, IOB2, ``mode="strict"``), computed by :mod:`plasm.metrics` (the PLASM
  teacher's dev score q comes from the same code): gold and predicted character spans are mapped onto one
  common word segmentation, so models with different sub-word tokenizers are scored on equal terms;
* Table 1: the share of this iteration's *standard* query (top-q of a fresh full-pool scoring) that lies in the
  top-k% most uncertain items of the current pool ranked by the *previous* iteration's full-pool scores.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from albackend.algorithms.strategies import select_top_k

TOP_K_PERCENTS = (10, 20, 30, 40, 50)


def evaluate_targets(pred: list, test_examples: list, kind: str) -> float:
    """Accuracy, or strict span F1 (seqeval, IOB2) on :mod:`plasm.metrics`' common word segmentation."""
    from plasm.metrics import accuracy, span_f1

    if kind == "classification":
        return accuracy([int(p) for p in pred], [e.label_ids[0] for e in test_examples])
    return span_f1([e.text for e in test_examples], [e.spans for e in test_examples], pred)


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
