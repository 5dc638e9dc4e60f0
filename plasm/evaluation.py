"""Scoring PLASM's models on labelled examples: the teacher (an AcquisitionModel) and any successor alike.

Classification: accuracy of the argmax; tagging: strict span F1 / precision / recall (seqeval, IOB2) over one
common word segmentation (:mod:`plasm.metrics`), so an HF teacher and a classical successor are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from plasm.metrics import accuracy, span_scores
from plasm.successors.hf import HFSuccessor

__all__ = ["HFView", "evaluate_successor", "example_targets", "metric_score"]


def example_targets(examples: Sequence[Example], spec: TaskSpec) -> list:
    """What a successor trains on and is scored against: class ids, or lists of ``(start, end, label)``."""
    if spec.kind == "tagging":
        return [[tuple(s) for s in e.spans] for e in examples]
    return [int(e.label_ids[0]) for e in examples]


def evaluate_successor(model, examples: Sequence[Example], spec: TaskSpec) -> dict:
    """Accuracy (classification) or strict span F1 / precision / recall (tagging) of any successor."""

    texts = [e.text for e in examples]
    if not texts:
        return {"n": 0}
    if spec.kind == "tagging":
        pred = model.predict_spans(texts)
        return {"metric": "f1", **span_scores(texts, example_targets(examples, spec), pred)}
    probs = np.asarray(model.predict_proba(texts))
    return {"metric": "accuracy", "accuracy": accuracy(probs.argmax(axis=1), example_targets(examples, spec)),
            "n": len(texts)}


def metric_score(metrics: dict) -> float:
    """The headline number of :func:`evaluate_successor`'s result (0.0 for an empty set)."""
    return float(metrics.get(metrics.get("metric", "accuracy"), 0.0))


class HFView:
    """An AcquisitionModel seen through the successor interface (predict_proba / predict_spans)."""

    def __init__(self, model, batch_size: int):
        self._s = HFSuccessor.from_model(model, batch_size=batch_size)

    def predict_proba(self, texts):
        return self._s.predict_proba(texts)

    def predict_spans(self, texts):
        return self._s.predict_spans(texts)
