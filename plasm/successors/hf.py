"""Hugging Face encoder successor: any HF encoder (also of another architecture than the teacher) + a head.

It wraps :class:`albackend.models.acquisition.AcquisitionModel`, so it trains with the paper's recipe
(:mod:`albackend.models.train`) and saves a directory that ``transformers.pipeline`` loads as it is
(``model.safetensors``, tokenizer files, ``config.json`` with ``id2label``), plus ``albackend.json``
(the task spec and training metadata; this file marks the directory as an HF successor).

Targets follow the :class:`~plasm.successors.base.Successor` protocol: class ids for classification,
character spans ``(start, end, label)`` for tagging; ``predict_proba`` gives ``(n, n_classes)`` or per text
``(n_words, n_tags)`` over the tokenizer's words (first sub-word of each word), tags ``O, B-X, I-X, ...``.

``config.json["model_type"]`` is the HF architecture (``"bert"``, ``"mpnet"``, ...), not ``"hf"``; the
package registers the common encoder types with :func:`~plasm.successors.base.register_successor` and
:func:`plasm.successors.load_successor` recognises any HF directory, whatever its architecture.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import META_FILE, AcquisitionModel
from albackend.models.device import pick_device
from albackend.models.train import TrainConfig, default_train_config  # the product recipe's one home
from albackend.algorithms.tagging import tag_names
from plasm.metrics import accuracy, span_f1

__all__ = ["HFSuccessor", "default_train_config", "is_hf_directory", "successor_spec"]


def successor_spec(kind: str, labels: Sequence[str]) -> TaskSpec:
    """A TaskSpec for a successor built outside a Label Studio project."""
    if kind not in ("classification", "tagging"):
        raise ValueError(f"kind must be 'classification' or 'tagging', got {kind!r}")
    return TaskSpec(kind=kind, from_name="label", to_name="text", value_key="text", labels=tuple(labels))


def is_hf_directory(directory: str | Path) -> bool:
    """True for a saved HF model directory (``config.json`` with ``architectures`` or an ``albackend.json``)."""
    directory = Path(directory)
    if (directory / META_FILE).exists():
        return True
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get("architectures")) and "format_version" not in config


class HFSuccessor:
    """An HF encoder successor; ``base`` is a packaged name (``"mpnet"``), a local directory or a hub id."""

    model_type = "hf"

    def __init__(self, base: str, labels: Sequence[str] | None = None, kind: str = "classification", *,
                 spec: TaskSpec | None = None, train: TrainConfig | None = None,
                 device: str | torch.device | None = None, max_length: int = 256, batch_size: int = 64):
        if spec is None:
            if not labels:
                raise ValueError("give the labels (and kind) or a TaskSpec")
            spec = successor_spec(kind, labels)
        if spec.multi_label:
            raise ValueError("multi-label classification is not supported by the successor interface")
        self.base = base
        self.spec = spec
        self.kind: str = spec.kind
        self.labels: list[str] = list(spec.labels)
        self.train = train
        self.device = device if device is not None else "auto"
        self.max_length = max_length
        self.batch_size = batch_size
        self.model: AcquisitionModel | None = None

    # ------------------------------------------------------------------------------------------ helpers
    @classmethod
    def from_model(cls, model: AcquisitionModel, batch_size: int = 64) -> "HFSuccessor":
        """Wrap an already trained :class:`AcquisitionModel` (e.g. the PLASM teacher)."""
        self = cls(model.meta.get("base_model", "?"), spec=model.spec, device=model.device,
                   max_length=model.max_length, batch_size=batch_size)
        self.model = model
        return self

    @property
    def tag_names(self) -> list[str]:
        return tag_names(self.labels)

    def _require_fitted(self) -> AcquisitionModel:
        if self.model is None:
            raise RuntimeError("HFSuccessor is not fitted; call fit() or load()")
        return self.model

    def _examples(self, texts: Sequence[str], targets: Sequence) -> list[Example]:
        if len(texts) != len(targets):
            raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
        out = []
        for text, y in zip(texts, targets):
            if self.kind == "tagging":
                spans = []
                for span in y:
                    start, end, label = span[:3]
                    if label not in self.labels:
                        raise ValueError(f"span label {label!r} is not one of {self.labels}")
                    if not 0 <= start < end <= len(text):
                        raise ValueError(f"span {tuple(span)!r} is out of range for a text of length {len(text)}")
                    spans.append((int(start), int(end), str(label)))
                out.append(Example(None, text, spans=spans))
            else:
                if isinstance(y, bool) or not isinstance(y, (int, np.integer)) or not 0 <= int(y) < len(self.labels):
                    raise ValueError(f"classification targets must be int class ids in [0, {len(self.labels)}), "
                                     f"got {y!r}")
                out.append(Example(None, text, label_ids=[int(y)]))
        return out

    # ------------------------------------------------------------------------------------------ training
    def fit(self, texts: list[str], targets: list, *, dev_texts: list[str] | None = None,
            dev_targets: list | None = None, seed: int = 0, progress: bool = False,
            on_step: Callable[[int, int, float], None] | None = None) -> dict:
        """Fine-tune a fresh head on ``base``; with a dev set, early stopping keeps the best epoch's weights.

        Returns the keys of the classical successors' ``fit`` (``epochs``, ``steps``, ``seconds``,
        ``best_dev_metric``, ``best_epoch``, ``dev_metric``, ``train_loss``, ``train_examples``, ``device``)
        plus ``dev_history``.
        """
        examples = self._examples(list(texts), list(targets))
        if not examples:
            raise ValueError("cannot fit on an empty training set")
        has_dev = bool(dev_texts)
        if has_dev:
            if dev_targets is None or len(dev_targets) != len(dev_texts):
                raise ValueError("dev_texts and dev_targets must have the same length")
            self._examples(list(dev_texts), list(dev_targets))  # validate
        cfg = dataclasses.replace(self.train or default_train_config(self.kind), seed=seed)
        start = time.perf_counter()
        self.model = AcquisitionModel.create(self.base, self.spec, device=self.device, max_length=self.max_length,
                                             seed=seed)
        self.model.meta["successor"] = {"type": self.model_type, "base": self.base}
        bar = None
        if progress:
            bar = tqdm(desc=f"fit {self.base}", unit="step")

        def step(i: int, total: int, loss: float) -> None:
            if bar is not None:
                bar.total = total
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if on_step is not None:
                on_step(i, total, loss)

        evaluate = (lambda: self.dev_metric(dev_texts, dev_targets)) if has_dev else None
        try:
            stats = self.model.fit(examples, cfg, evaluate=evaluate, on_step=step)
        finally:
            if bar is not None:
                bar.close()
        return {
            "epochs": stats["epochs"], "steps": stats["steps"], "seconds": time.perf_counter() - start,
            "best_dev_metric": stats.get("best_dev"), "best_epoch": stats.get("best_epoch"),
            "dev_metric": ("f1" if self.kind == "tagging" else "accuracy") if has_dev else None,
            "train_loss": stats.get("final_loss"), "train_examples": len(examples),
            "device": str(self.model.device), "dev_history": stats.get("dev_history", []),
        }

    # ------------------------------------------------------------------------------------------ inference
    def _predictions(self, texts: Sequence[str]):
        return self._require_fitted().predict(list(texts), batch_size=self.batch_size)

    def predict_proba(self, texts: list[str]) -> np.ndarray | list[np.ndarray]:
        """``(n, n_classes)`` float32, or per text ``(n_words, n_tags)`` over :attr:`tag_names`."""
        return self._predictions(texts).probs

    def predict(self, texts: list[str]) -> np.ndarray:
        """Argmax class ids (classification)."""
        if self.kind != "classification":
            raise ValueError("predict() is for classification; use predict_spans() for tagging")
        probs = self.predict_proba(texts)
        return np.asarray(probs).argmax(axis=1) if len(texts) else np.zeros(0, dtype=np.int64)

    def predict_spans(self, texts: list[str]) -> list[list[tuple[int, int, str, float]]]:
        """Per text the decoded spans ``(start, end, label, score)`` with exact character offsets."""
        if self.kind != "tagging":
            raise ValueError("predict_spans() is for tagging; use predict() for classification")
        model = self._require_fitted()
        texts = list(texts)
        preds = self._predictions(texts)
        return [model.spans(t, r, p) for t, r, p in zip(texts, preds.word_ranges, preds.probs)]

    def dev_metric(self, texts: Sequence[str], targets: Sequence) -> float:
        """Accuracy, or strict span F1 over the common word segmentation (:mod:`plasm.metrics`)."""

        texts = list(texts)
        if self.kind == "tagging":
            return span_f1(texts, list(targets), self.predict_spans(texts))
        return accuracy(self.predict(texts), [int(y) for y in targets])

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        """An HF directory: ``model.safetensors``, tokenizer, ``config.json`` (``id2label``), ``albackend.json``."""
        self._require_fitted().save(directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device | None = None) -> "HFSuccessor":
        directory = Path(directory)
        device = device if device is not None else "auto"
        if (directory / META_FILE).exists():
            model = AcquisitionModel.load(directory, device=device)
        else:
            model = _load_plain(directory, device)
        self = cls.from_model(model)
        self.base = model.meta.get("successor", {}).get("base") or model.meta.get("base_model", str(directory))
        return self


def _load_plain(directory: Path, device) -> AcquisitionModel:
    """A plain HF classifier / token classifier directory (no albackend.json): the spec comes from config.json."""

    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    names = [id2label[i] for i in sorted(id2label)]
    archs = " ".join(config.get("architectures") or [])
    if "TokenClassification" in archs:
        labels = [n[2:] for n in names if n.startswith("B-")]
        if names != ["O"] + [f"{p}-{x}" for x in labels for p in ("B", "I")]:
            raise ValueError(f"{directory}: token labels {names} are not O, B-X, I-X, ... in that order")
        spec, auto = successor_spec("tagging", labels), AutoModelForTokenClassification
    elif "SequenceClassification" in archs:
        spec, auto = successor_spec("classification", names), AutoModelForSequenceClassification
    else:
        raise ValueError(f"{directory} holds no sequence or token classification model ({archs or 'no architectures'})")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = auto.from_pretrained(directory).to(dev).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    meta = {"base_model": str(directory), "spec": spec.to_dict(), "max_length": 256}
    return AcquisitionModel(spec, tokenizer, model, meta, dev, 256)
