"""Model outputs -> query-strategy uncertainty and Label Studio prediction results.

`score` follows LS's convention for uncertainty sampling: lower = more uncertain = served first.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from albackend.algorithms import strategies
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel, Predictions

MAHALANOBIS_FILE = "mahalanobis.npz"


class StrategyError(ValueError):
    """QUERY_STRATEGY names no strategy, or one for the other task kind: a configuration error, not a bug."""


def resolve_strategy(spec: TaskSpec, name: str) -> str:
    """`auto` picks the paper's defaults: LC for classification, MNLP for tagging."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if spec.kind == "tagging":
            return "mnlp"
        return "least_confident_multilabel" if spec.multi_label else "least_confident"
    try:
        info = strategies.get_strategy(name)
    except ValueError as exc:
        raise StrategyError(str(exc)) from None
    if info.kind not in ("both", spec.kind):
        raise StrategyError(f"query strategy {name!r} is for {info.kind}, this project is {spec.kind}")
    if name == "least_confident" and spec.multi_label:
        return "least_confident_multilabel"
    return info.name


def save_mahalanobis(directory: Path, fit: strategies.MahalanobisFit) -> None:
    np.savez(directory / MAHALANOBIS_FILE, centroids=fit.centroids, precision=fit.precision,
             classes=fit.classes, jitter=np.array(fit.jitter))


def load_mahalanobis(directory: Path) -> strategies.MahalanobisFit | None:
    path = Path(directory) / MAHALANOBIS_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return strategies.MahalanobisFit(z["centroids"], z["precision"], z["classes"], float(z["jitter"]))


def uncertainty(preds: Predictions, spec: TaskSpec, strategy: str, *, seed: int = 0,
                fit: strategies.MahalanobisFit | None = None) -> np.ndarray:
    n = len(preds.probs)
    if n == 0:
        return np.zeros(0)
    if strategy == "random":
        return strategies.random_scores(n, np.random.default_rng(seed))
    if spec.kind == "tagging":
        if strategy != "mnlp":
            raise ValueError(f"strategy {strategy!r} is not available for tagging")
        return strategies.mnlp(preds.probs)
    if strategy == "mahalanobis":
        if fit is None or preds.embeddings is None:
            raise ValueError("mahalanobis needs embeddings and a fit from the labeled data")
        return strategies.mahalanobis(preds.embeddings, fit)
    fn = {"least_confident": strategies.least_confident, "margin": strategies.margin,
          "entropy": strategies.entropy, "least_confident_multilabel": strategies.least_confident_multilabel}
    return fn[strategy](np.asarray(preds.probs))


def choice_result(spec: TaskSpec, labels: Sequence[str]) -> list[dict]:
    """The LS `result` of a Choices control naming ``labels``."""
    return [{"from_name": spec.from_name, "to_name": spec.to_name, "type": "choices",
             "value": {"choices": list(labels)}}]


def span_result(spec: TaskSpec, text: str, spans: Iterable[Sequence]) -> list[dict]:
    """The LS `result` of a Labels control over Text: one region per ``(start, end, label[, score])``."""
    regions = []
    for start, end, label, *score in spans:
        region = {"id": uuid.uuid4().hex[:10], "from_name": spec.from_name, "to_name": spec.to_name,
                  "type": "labels",
                  "value": {"start": int(start), "end": int(end), "text": text[start:end], "labels": [label]}}
        if score:
            region["score"] = round(float(score[0]), 6)
        regions.append(region)
    return regions


def result_items(model: AcquisitionModel, texts: Sequence[str], preds: Predictions) -> list[list[dict]]:
    """The `result` list of each task's prediction."""
    spec = model.spec
    out: list[list[dict]] = []
    for i, text in enumerate(texts):
        if spec.kind == "tagging":
            out.append(span_result(spec, text, model.spans(text, preds.word_ranges[i], preds.probs[i])))
            continue
        probs = np.asarray(preds.probs[i])
        if spec.multi_label:
            chosen = [spec.labels[j] for j in np.flatnonzero(probs >= 0.5)] or [spec.labels[int(probs.argmax())]]
        else:
            chosen = [spec.labels[int(probs.argmax())]]
        out.append(choice_result(spec, chosen))
    return out


def ls_predictions(model: AcquisitionModel, texts: Sequence[str], preds: Predictions, unc: np.ndarray,
                   strategy: str, model_version: str) -> list[dict]:
    scores = strategies.confidence(np.asarray(unc, dtype=np.float64), strategy)
    return [{"result": items, "score": float(s), "model_version": model_version}
            for items, s in zip(result_items(model, texts, preds), scores)]
