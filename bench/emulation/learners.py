"""Learners: one interface over the product's models, so the AL loop never cares which kind it drives.

* :class:`HFLearner` — :class:`albackend.models.acquisition.AcquisitionModel` (packaged name, local directory or
  hub id), created afresh and fine-tuned with the product's recipe (:class:`TrainConfig`) at every ``fit``, or,
  with ``TrainOpts.warm_start``, warm-started from its previous fit (saved and reloaded through the product's
  ``AcquisitionModel.create(init_from=...)``) with a from-scratch retrain every ``scratch_every`` fits;
* :class:`ClassicalLearner` — the PLASM classical successors (CNN classifier, BiLSTM tagger), trained from
  scratch; they can also act as acquisition models (the paper's "same classical model" baseline);
* :class:`PlasmLearner` (in :mod:`bench.emulation.plasm_adapter`) — the PLASM pipeline's successor.

``predict`` returns the product's :class:`Predictions`, which :func:`albackend.services.predictions.uncertainty` turns
into query-strategy scores; ``predict_targets`` returns class ids or character spans for the test metric.
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel, Predictions
from albackend.models.train import TrainConfig, default_train_config, warm_train_config
from albackend.algorithms.warmstart import retrain_mode

CLASSICAL = {"cnn": "classification", "bilstm": "tagging"}


@dataclass
class TrainOpts:
    """Fine-tuning knobs of HF models (product recipe; ``lr``/``head_lr`` 0 = product default per task kind).

    ``warm_start``: each fit after the first fine-tunes the previous model on all gold labels for
    ``warm_steps_fraction`` of the from-scratch steps, except every ``scratch_every``-th fit (0 = never),
    which starts from scratch (:func:`albackend.algorithms.warmstart.retrain_mode`, as the backend decides).
    """

    epochs: int = 5
    min_steps: int = 60
    max_steps: int = 0
    batch_size: int = 16
    lr: float = 0.0
    head_lr: float = 0.0  # 0 = product default per task kind (albackend.models.train.default_head_lr)
    max_length: int = 256
    infer_batch_size: int = 64
    warm_start: bool = False
    scratch_every: int = 0
    warm_steps_fraction: float = 0.5

    def train_config(self, kind: str, seed: int) -> TrainConfig:
        overrides = {k: v for k, v in (("lr", self.lr), ("head_lr", self.head_lr)) if v}
        return default_train_config(kind, seed, epochs=self.epochs, min_steps=self.min_steps,
                                    max_steps=self.max_steps, batch_size=self.batch_size, **overrides)

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
        self.fits = 0  # fits since the last release: the AL iteration, for the warm/scratch decision
        self._previous: tempfile.TemporaryDirectory | None = None

    def fit(self, examples: Sequence[Example], seed: int) -> dict:
        mode = retrain_mode(self.fits, self.opts.scratch_every, enabled=self.opts.warm_start,
                            has_previous=self._previous is not None)
        init_from = self._previous.name if mode == "warm" else None
        self.model = AcquisitionModel.create(self.name, self.spec, device=self.device,
                                             max_length=self.opts.max_length, seed=seed, init_from=init_from)
        cfg = self.opts.train_config(self.spec.kind, seed)
        if self.model.warm_started:
            cfg = warm_train_config(cfg, len(examples), self.opts.warm_steps_fraction)
        stats = self.model.fit(list(examples), cfg)
        stats["mode"] = "warm" if self.model.warm_started else "scratch"
        self.fits += 1
        if self.opts.warm_start:
            self._keep(self.model)
        return stats

    def _keep(self, model: AcquisitionModel) -> None:
        """Save the model as the next fit's warm-start source (through the product's save/load path)."""
        if self._previous is None:
            self._previous = tempfile.TemporaryDirectory(prefix="al-warm-")
        model.save(self._previous.name)

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
        self.fits = 0
        if self._previous is not None:
            self._previous.cleanup()
            self._previous = None


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
