"""The successor interface, shared helpers and the training loop of the classical successors.

A *successor* is the model finally trained on the actively labelled data (paper section 4.1). The PLASM job
uses successors of any type through :class:`Successor`: HF encoders and the classical models of the paper's
section 3.2 / Appendix Tables 6-7 (:mod:`plasm.successors.cnn`, :mod:`plasm.successors.bilstm`), which are
trained from scratch here (no pretrained word embeddings are available offline).

On disk a successor directory holds ``model.safetensors``, ``config.json`` (with ``"model_type"`` and
``"kind"``) and, for the classical models, ``vocab.json``; nothing is pickled. :func:`load_successor`
dispatches on ``config.json["model_type"]``; :mod:`plasm.successors` registers every type (others call
:func:`register_successor`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from albackend.models.device import autocast, pick_device, seed_everything
from albackend.models.train import BestEpoch

from .vocab import Vocab

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"


@runtime_checkable
class Successor(Protocol):
    """What the PLASM job needs from a successor model of any type.

    ``kind`` is ``"classification"`` (targets: int class ids; ``predict_proba`` -> ``(n, n_classes)``)
    or ``"tagging"`` (targets: per text a list of character spans ``(start, end, label)``;
    ``predict_proba`` -> per text an ``(n_words, n_tags)`` array).
    """

    kind: str

    def fit(self, texts: list[str], targets: list, *, dev_texts=None, dev_targets=None, seed: int = 0,
            progress: bool = False) -> dict: ...

    def predict_proba(self, texts: list[str]) -> list[np.ndarray] | np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Successor: ...


# ----------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type] = {}  # filled by plasm.successors (the package imports every successor type)


def register_successor(model_type: str, target: type) -> None:
    """Make :func:`load_successor` know ``model_type``."""
    _REGISTRY[model_type] = target


def read_config(directory: str | Path) -> dict:
    return json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))


def load_successor(directory: str | Path, *, device: str | torch.device | None = None) -> Successor:
    """Load any saved successor, dispatching on ``config.json["model_type"]``."""
    model_type = read_config(directory).get("model_type")
    target = _REGISTRY.get(model_type)
    if target is None:
        raise ValueError(f"unknown successor model_type {model_type!r} in {directory}; known: {sorted(_REGISTRY)}")
    if device is None:
        return target.load(Path(directory))
    return target.load(Path(directory), device=device)


# ----------------------------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class TrainHParams:
    """Training hyperparameters shared by the classical successors.

    The paper (Tables 6-7) trains with SGD, momentum 0.9 (CNN: lr 0.001, 20 epochs, clip 1; BiLSTM: lr 0.015,
    50 epochs, clip 5) on top of pretrained word vectors. From scratch on the small labelled sets of active
    learning, SGD at lr 0.001 barely moves the randomly initialised embeddings in a few epochs, so the defaults
    here are Adam (lr 1e-3 / 2e-3) with the paper's batch sizes and clipping, and few epochs (CPU-friendly),
    with early stopping on a dev set when one is given. ``optimizer="sgd"`` + the paper's lr restores Table 6/7.
    """

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 256
    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    clip_norm: float = 5.0
    patience: int | None = 3  # epochs without dev improvement before stopping; None: never stop early
    lowercase: bool = True  # word vocabulary lower-cased (characters keep their case)
    min_freq: int = 1
    max_vocab_size: int | None = 50_000

    def __post_init__(self):
        for f in dataclasses.fields(self):  # JSON turns tuples into lists
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ClassicalSuccessor:
    """Common fit / save / load of the from-scratch classical successors.

    Subclasses set ``kind``, ``model_type``, ``config_cls``, ``dev_metric_name`` and implement the hooks
    ``_build_vocabs``, ``_new_model``, ``_encode`` (texts [+ targets] -> items), ``_collate`` (items -> tensors
    on the device), ``_loss``, ``_dev_metric`` and ``predict_proba``.
    """

    kind: ClassVar[str]
    model_type: ClassVar[str]
    config_cls: ClassVar[type[TrainHParams]]
    dev_metric_name: ClassVar[str]

    def __init__(self, labels: Sequence[str], config: TrainHParams | None = None, *,
                 device: str | torch.device | None = None, **overrides: Any):
        labels = list(labels)
        if not labels or len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
            raise ValueError(f"labels must be non-empty, unique, non-empty strings, got {labels!r}")
        config = copy.deepcopy(config) if config is not None else self.config_cls()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.labels: list[str] = labels
        self.config = config
        self.device = pick_device(device)
        self.vocab: Vocab | None = None
        self.char_vocab: Vocab | None = None
        self.model: nn.Module | None = None

    # -- hooks
    def _build_vocabs(self, texts: list[str]) -> None:
        raise NotImplementedError

    def _new_model(self) -> nn.Module:
        raise NotImplementedError

    def _encode(self, texts: list[str], targets: list | None = None) -> list:
        raise NotImplementedError

    def _collate(self, items: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _dev_metric(self, texts: list[str], targets: list) -> float:
        raise NotImplementedError

    def _validate_targets(self, texts: list[str], targets: list) -> None:
        raise NotImplementedError

    # -- training
    def _require_fitted(self) -> nn.Module:
        if self.model is None or self.vocab is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load()")
        return self.model

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)

    def _check_fit_data(self, texts: list[str], targets: list, dev_texts, dev_targets) -> tuple[list, list]:
        """Validate the training (and dev) data; the dev lists, empty when there is no dev set."""
        if len(texts) != len(targets):
            raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
        if not texts:
            raise ValueError("cannot fit on an empty training set")
        self._validate_targets(texts, targets)
        if dev_texts is None or len(dev_texts) == 0:
            return [], []
        if dev_targets is None or len(dev_targets) != len(dev_texts):
            raise ValueError("dev_texts and dev_targets must have the same length")
        dev_texts, dev_targets = list(dev_texts), list(dev_targets)
        self._validate_targets(dev_texts, dev_targets)
        return dev_texts, dev_targets

    def _train_epoch(self, items: list, order: list[int], optimizer: torch.optim.Optimizer) -> list[float]:
        """One pass over ``items`` in ``order``; the loss of each step."""
        c, losses = self.config, []
        self.model.train()
        for i in range(0, len(order), c.batch_size):
            batch = self._collate([items[j] for j in order[i:i + c.batch_size]])
            with autocast(self.device):
                loss = self._loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.clip_norm:
                nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
        return losses

    def fit(self, texts: list[str], targets: list, *, dev_texts: list[str] | None = None,
            dev_targets: list | None = None, seed: int = 0, progress: bool = False) -> dict:
        """Train from scratch (new vocabulary, new weights); keep the best-on-dev weights when a dev set is given.

        Returns ``{"epochs", "steps", "seconds", "best_dev_metric", "best_epoch", "dev_metric", "train_loss",
        "train_examples", "device"}`` (``best_*`` are ``None`` without a dev set).
        """
        texts, targets = list(texts), list(targets)
        dev_texts, dev_targets = self._check_fit_data(texts, targets, dev_texts, dev_targets)
        has_dev = bool(dev_texts)
        start = time.perf_counter()
        seed_everything(seed)
        generator = torch.Generator().manual_seed(seed)
        self._build_vocabs(texts)
        self.model = self._new_model().to(self.device)
        items = self._encode(texts, targets)
        if not items:
            raise ValueError("no trainable example (all texts are empty)")
        optimizer = self._make_optimizer(self.model.parameters())
        c = self.config

        epochs_iter: Any = range(1, c.epochs + 1)
        if progress:
            epochs_iter = tqdm(epochs_iter, desc=f"fit {self.model_type}", unit="epoch")
        steps, epochs_run, train_loss = 0, 0, math.nan
        best = BestEpoch(c.patience)
        for epoch in epochs_iter:
            losses = self._train_epoch(items, torch.randperm(len(items), generator=generator).tolist(), optimizer)
            steps += len(losses)
            epochs_run, train_loss = epoch, float(np.mean(losses))
            if has_dev:
                metric = float(self._dev_metric(dev_texts, dev_targets))
                stop = best.update(self.model, epoch, metric)
                if progress:
                    epochs_iter.set_postfix(loss=f"{train_loss:.4f}", **{self.dev_metric_name: f"{metric:.4f}"})
                if stop:
                    break
            elif progress:
                epochs_iter.set_postfix(loss=f"{train_loss:.4f}")
        if progress:
            epochs_iter.close()
        best.restore(self.model)
        self.model.eval()
        kept = best.stats()
        return {
            "epochs": epochs_run,
            "steps": steps,
            "seconds": time.perf_counter() - start,
            "best_dev_metric": kept["best_dev"],
            "best_epoch": kept["best_epoch"],
            "dev_metric": self.dev_metric_name if has_dev else None,
            "train_loss": train_loss,
            "train_examples": len(items),
            "device": str(self.device),
        }

    # -- inference helper
    def _run_batches(self, items: list, lengths: list[int], forward: Callable[[dict], torch.Tensor]) -> list:
        """Run ``forward`` over length-sorted batches of ``items``; per item outputs in the original order."""
        model = self._require_fitted()
        model.eval()
        order = sorted(range(len(items)), key=lambda i: (lengths[i], i))
        outputs: list = [None] * len(items)
        with torch.inference_mode(), autocast(self.device):
            for i in range(0, len(order), self.config.eval_batch_size):
                idx = order[i:i + self.config.eval_batch_size]
                result = forward(self._collate([items[j] for j in idx]))
                for j, out in zip(idx, result):
                    outputs[j] = out
        return outputs

    # -- persistence
    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors``, ``config.json`` and ``vocab.json`` into ``directory``."""
        model = self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"model_type": self.model_type})
        config = {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "kind": self.kind,
            "labels": self.labels,
            "hparams": dataclasses.asdict(self.config),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        vocabs = {"words": self.vocab.to_dict(), "chars": self.char_vocab.to_dict() if self.char_vocab else None}
        (directory / VOCAB_FILE).write_text(json.dumps(vocabs, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device | None = None):
        directory = Path(directory)
        config = read_config(directory)
        if config.get("model_type") != cls.model_type:
            raise ValueError(f"{directory} holds a {config.get('model_type')!r}, not a {cls.model_type!r}")
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {config.get('format_version')!r} in {directory}")
        self = cls(config["labels"], cls.config_cls.from_dict(config["hparams"]), device=device)
        vocabs = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
        self.vocab = Vocab.from_dict(vocabs["words"])
        self.char_vocab = Vocab.from_dict(vocabs["chars"]) if vocabs.get("chars") else None
        model = self._new_model()
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        self.model = model.to(self.device).eval()
        return self
