"""Dev/test metrics shared by the PLASM teacher and every successor type.

Classification: accuracy over class ids. Tagging: strict span F1 (seqeval, IOB2 scheme, micro average).
Every model is scored on one common word segmentation (:func:`plasm.words.tokenize`), so an HF
teacher (sub-word tokenizer) and a classical successor (its own word tokenizer) are compared on the same
words: gold and predicted character spans become word-level IOB2 with the same rule
(:func:`plasm.words.spans_to_iob2`: a word overlapping a span is tagged).

Degenerate case: when neither the gold nor the predictions hold a single entity, seqeval reports 0; here the
score is 1.0 (nothing to find, nothing wrongly found), so a teacher that correctly predicts "no entity" on an
entity-free dev split is not punished with q = 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from plasm.words import spans_to_iob2, tokenize

Span = tuple[int, int, str]


def accuracy(predicted: Sequence[int], gold: Sequence[int]) -> float:
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels")
    if not len(gold):
        return 0.0
    return float(np.mean(np.asarray(predicted, dtype=np.int64) == np.asarray(gold, dtype=np.int64)))


def span_scores(texts: Sequence[str], gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> dict:
    """Strict span precision / recall / F1 (seqeval, IOB2) over the common word segmentation."""

    if not (len(texts) == len(gold) == len(predicted)):
        raise ValueError("texts, gold and predicted spans must have the same length")
    y_true, y_pred = [], []
    for text, g, p in zip(texts, gold, predicted):
        tokens = tokenize(text)
        if not tokens:
            continue
        y_true.append(spans_to_iob2(tokens, [tuple(s[:3]) for s in g]))
        y_pred.append(spans_to_iob2(tokens, [tuple(s[:3]) for s in p]))
    has_gold = any(t != "O" for seq in y_true for t in seq)
    has_pred = any(t != "O" for seq in y_pred for t in seq)
    if not has_gold and not has_pred:
        return {"f1": 1.0, "precision": 1.0, "recall": 1.0, "n": len(y_true)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns when one side has no entity
        kw = dict(mode="strict", scheme=IOB2, zero_division=0)
        return {"f1": float(f1_score(y_true, y_pred, **kw)),
                "precision": float(precision_score(y_true, y_pred, **kw)),
                "recall": float(recall_score(y_true, y_pred, **kw)), "n": len(y_true)}


def span_f1(texts: Sequence[str], gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> float:
    return span_scores(texts, gold, predicted)["f1"]
