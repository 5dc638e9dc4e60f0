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

__all__ = ["HFView", "evaluate_successor", "example_targets", "metric_score", "successor_warnings"]

# how far below the teacher's dev score the successor's may fall before the report warns: the dev split is small
# (10% of the gold labels), so a few examples' difference is noise, not a verdict
WARN_MARGIN = 0.1


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
        return {"metric": "f1", **span_scores(texts, example_targets(examples, spec), pred),
                "predicted_spans": sum(len(p) for p in pred)}
    probs = np.asarray(model.predict_proba(texts))
    return {"metric": "accuracy", "accuracy": accuracy(probs.argmax(axis=1), example_targets(examples, spec)),
            "n": len(texts)}


def metric_score(metrics: dict) -> float:
    """The headline number of :func:`evaluate_successor`'s result (0.0 for an empty set)."""
    return float(metrics.get(metrics.get("metric", "accuracy"), 0.0))


def successor_warnings(dev_metrics: dict, margin: float = WARN_MARGIN) -> list[str]:
    """What a user must know before deploying the successor, from the teacher's and successor's dev metrics.

    A successor trained on gold + pseudo-labels that ends far below its teacher, or that tags no entity at all,
    is usually undertrained for its larger training set (the step cap does not grow with the pseudo-labels), and
    the run still completes: the report has to say so, since nothing else will.
    """
    teacher, successor = dev_metrics.get("teacher") or {}, dev_metrics.get("successor") or {}
    if not successor.get("n") or not teacher.get("n"):
        return []
    name = successor.get("metric", "accuracy")
    t, s = metric_score(teacher), metric_score(successor)
    notes = []
    if successor.get("predicted_spans") == 0:
        notes.append(f"the successor tags no entity in the {successor['n']} dev examples")
    if s < t - margin:
        notes.append(f"the successor's dev {name} {s:.3f} is {t - s:.3f} below the teacher's {t:.3f} "
                     f"(dev n={successor['n']}): it may be undertrained for gold + pseudo-labels (raise its "
                     f"max_steps / epochs) or misled by the pseudo-labels; check it before deploying")
    return notes


class HFView:
    """An AcquisitionModel seen through the successor interface (predict_proba / predict_spans)."""

    def __init__(self, model, batch_size: int):
        self._s = HFSuccessor.from_model(model, batch_size=batch_size)

    def predict_proba(self, texts):
        return self._s.predict_proba(texts)

    def predict_spans(self, texts):
        return self._s.predict_spans(texts)
