"""Learners: one interface over the product's models, so the AL loop never cares which kind it drives.

* :class:`HFLearner` — :class:`albackend.models.acquisition.AcquisitionModel` (packaged name, local directory or
  hub id), created afresh and fine-tuned with the product's recipe (:class:`TrainConfig`) at every ``fit``;
* :class:`ClassicalLearner` — the PLASM classical successors (CNN classifier, BiLSTM tagger), trained from
  scratch; they can also act as acquisition models (the paper's "same classical model" baseline);
* :class:`PlasmLearner` (in :mod:`bench.emulation.plasm_adapter`) — the PLASM pipeline's successor.

``predict`` returns the product's :class:`Predictions`, which :func:`albackend.predictions.uncertainty` turns
into query-strategy scores; ``predict_targets`` returns class ids or character spans for the test metric.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from albackend.examples import Example
from albackend.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel, Predictions
from albackend.models.train import TrainConfig

CLASSICAL = {"cnn": "classification", "bilstm": "tagging"}


@dataclass
class TrainOpts:
    """Fine-tuning knobs of HF models (product recipe; ``lr = 0`` = product default per task kind)."""

    epochs: int = 5
    min_steps: int = 60
    max_steps: int = 0
    batch_size: int = 16
    lr: float = 0.0
    max_length: int = 256
    infer_batch_size: int = 64

    def train_config(self, kind: str, seed: int) -> TrainConfig:
        lr = self.lr or (5e-5 if kind == "tagging" else 1e-4)  # = albackend.training.train_config defaults
        return TrainConfig(epochs=self.epochs, min_steps=self.min_steps, max_steps=self.max_steps,
                           batch_size=self.batch_size, lr=lr, seed=seed)

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrainOpts":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data or {}) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**(data or {}))


class Learner:
    name: str
    spec: TaskSpec
    supports_embeddings = False

    def fit(self, examples: Sequence[Example], seed: int) -> dict:
        raise NotImplementedError

    def predict(self, texts: Sequence[str], *, embeddings: bool = False) -> Predictions:
        raise NotImplementedError

    def predict_targets(self, texts: Sequence[str]) -> list:
        """Class ids (classification) or per-text character spans ``(start, end, label, ...)`` (tagging)."""
        raise NotImplementedError

    def release(self) -> None:
        """Drop the trained weights (models are trained from scratch each iteration anyway)."""


class HFLearner(Learner):
    supports_embeddings = True

    def __init__(self, base: str, spec: TaskSpec, opts: TrainOpts, device: str = "auto"):
        self.name, self.spec, self.opts, self.device = base, spec, opts, device
        self.model: AcquisitionModel | None = None

    def fit(self, examples: Sequence[Example], seed: int) -> dict:
        self.release()
        self.model = AcquisitionModel.create(self.name, self.spec, device=self.device,
                                             max_length=self.opts.max_length, seed=seed)
        return self.model.fit(list(examples), self.opts.train_config(self.spec.kind, seed))

    def _model(self) -> AcquisitionModel:
        if self.model is None:
            raise RuntimeError(f"learner {self.name!r} is not trained")
        return self.model

    def predict(self, texts: Sequence[str], *, embeddings: bool = False) -> Predictions:
        return self._model().predict(list(texts), batch_size=self.opts.infer_batch_size, embeddings=embeddings)

    def predict_targets(self, texts: Sequence[str]) -> list:
        model = self._model()
        preds = self.predict(texts)
        if self.spec.kind == "classification":
            return [int(i) for i in np.asarray(preds.probs).argmax(axis=1)]
        return [model.spans(t, r, p) for t, r, p in zip(texts, preds.word_ranges, preds.probs)]

    def release(self) -> None:
        self.model = None


class ClassicalLearner(Learner):
    """CNN classifier / BiLSTM tagger from :mod:`plasm.successors`, trained from scratch on the gold labels."""

    def __init__(self, name: str, spec: TaskSpec, overrides: dict | None = None, device: str = "auto"):
        if name not in CLASSICAL:
            raise ValueError(f"unknown classical model {name!r}; valid: {sorted(CLASSICAL)}")
        if CLASSICAL[name] != spec.kind:
            raise ValueError(f"{name!r} is a {CLASSICAL[name]} model, the dataset is {spec.kind}")
        self.name, self.spec, self.overrides = name, spec, dict(overrides or {})
        self.device = None if device == "auto" else device
        self.model = None

    def _new(self):
        if self.name == "cnn":
            from plasm.successors.cnn import CNNClassifierSuccessor as cls
        else:
            from plasm.successors.bilstm import BiLSTMTaggerSuccessor as cls
        return cls(list(self.spec.labels), device=self.device, **self.overrides)

    def fit(self, examples: Sequence[Example], seed: int) -> dict:
        self.model = self._new()
        texts = [e.text for e in examples]
        if self.spec.kind == "classification":
            targets = [int(e.label_ids[0]) for e in examples]
        else:
            targets = [[tuple(s) for s in e.spans] for e in examples]
        return self.model.fit(texts, targets, seed=seed)

    def predict(self, texts: Sequence[str], *, embeddings: bool = False) -> Predictions:
        if embeddings:
            raise ValueError(f"the {self.name} model gives no embeddings: Mahalanobis needs an HF model")
        if self.model is None:
            raise RuntimeError(f"learner {self.name!r} is not trained")
        probs = self.model.predict_proba(list(texts))
        if self.spec.kind == "tagging":
            n_tokens = int(sum(len(p) for p in probs))
        else:
            n_tokens = int(sum(len(t.split()) for t in texts))
        return Predictions(probs, None, None, n_tokens)

    def predict_targets(self, texts: Sequence[str]) -> list:
        if self.spec.kind == "classification":
            return [int(i) for i in self.model.predict_proba(list(texts)).argmax(axis=1)]
        return self.model.predict_spans(list(texts))

    def release(self) -> None:
        self.model = None


def make_learner(name: str, spec: TaskSpec, *, opts: TrainOpts, classical: dict | None = None,
                 device: str = "auto") -> Learner:
    """``cnn`` / ``bilstm`` -> classical model; anything else -> an HF encoder name or directory."""
    if name in CLASSICAL:
        return ClassicalLearner(name, spec, classical, device)
    return HFLearner(name, spec, opts, device)
