"""The acquisition model: a Hugging Face encoder with a classification or token-classification head.

It is also the building block of the PLASM teacher and of HF-encoder successors: one class knows how to
turn gold examples into features, fine-tune, score texts, and save a directory that
`transformers.pipeline` can load (safetensors, tokenizer, id2label) plus `albackend.json` metadata.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.device import pick_device, seed_everything
from albackend.models.infer import clip_chars, encode, run_model
from albackend.models.precision import ScoringPrecision
from albackend.models.registry import ModelNotFound, resolve_model
from albackend.models.train import TrainConfig, fine_tune
from albackend.algorithms.tagging import align_labels, decode_spans, tag_names
from albackend.algorithms.warmstart import warm_start_mismatch

log = logging.getLogger(__name__)
META_FILE = "albackend.json"


@dataclass
class Predictions:
    """Model outputs for a list of texts, in input order."""

    probs: np.ndarray | list[np.ndarray]  # (N, C) for classification, per-text (n_words, n_tags) for tagging
    word_ranges: list[list[tuple[int, int]]] | None = None
    embeddings: np.ndarray | None = None
    n_tokens: int = 0
    seconds: float = 0.0
    precision: str = "fp32"  # what scored them: "fp32" (bf16 autocast on CUDA) or "int8"


class AcquisitionModel:
    """Encoder + head for one TaskSpec; train, score, save, load."""

    def __init__(self, spec: TaskSpec, tokenizer, model: torch.nn.Module, meta: dict, device: torch.device,
                 max_length: int = 256, scoring_precision: str = "auto"):
        self.spec, self.tokenizer, self.model, self.meta = spec, tokenizer, model, meta
        self.device, self.max_length = device, max_length
        # The caller passes the SCORING_PRECISION setting (read once at its entry point); the model reads no env.
        self._scoring = ScoringPrecision(scoring_precision)
        self.new_params: frozenset[str] = frozenset()  # not in the checkpoint: the fresh head (own lr in fit)

    @property
    def scoring_precision(self) -> str:
        """The requested scoring precision (auto | fp32 | int8); training always uses the fp32 weights."""
        return self._scoring.requested

    @scoring_precision.setter
    def scoring_precision(self, value: str) -> None:
        self._scoring = ScoringPrecision(value)

    @property
    def label_names(self) -> list[str]:
        return tag_names(self.spec.labels) if self.spec.kind == "tagging" else list(self.spec.labels)

    @property
    def warm_started(self) -> bool:
        """True when `create(init_from=...)` started from a previous version's weights."""
        return "warm_start" in self.meta

    @classmethod
    def create(cls, base: str, spec: TaskSpec, *, device: str | torch.device = "auto", max_length: int = 256,
               seed: int = 42, init_from: str | Path | None = None,
               scoring_precision: str = "auto") -> "AcquisitionModel":
        """A fresh head on a pretrained encoder (packaged name, local directory or hub id).

        With `init_from` (a saved version's directory) the model starts from that version's weights, head
        included, when it was trained from the same `base` for the same task (`warm_started` says so);
        otherwise, or if it cannot be read, from scratch with the reason logged: a stale or broken previous
        version must never fail a retrain.
        """
        if init_from is not None:
            warm = cls._warm(Path(init_from), base, spec, device, max_length, seed)
            if warm is not None:
                warm.scoring_precision = scoring_precision
                return warm
        path = resolve_model(base)
        seed_everything(seed)
        names = tag_names(spec.labels) if spec.kind == "tagging" else list(spec.labels)
        kwargs = dict(num_labels=len(names), id2label=dict(enumerate(names)),
                      label2id={n: i for i, n in enumerate(names)})
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            if spec.kind == "tagging":
                model, info = AutoModelForTokenClassification.from_pretrained(path, output_loading_info=True,
                                                                              **kwargs)
            else:
                if spec.multi_label:
                    kwargs["problem_type"] = "multi_label_classification"
                model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True,
                                                                                 **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"cannot load model {base!r}: {exc}") from exc
        if not getattr(tokenizer, "is_fast", False):
            raise ModelNotFound(f"model {base!r} has no fast tokenizer: character offsets need one")
        dev = device if isinstance(device, torch.device) else pick_device(device)
        meta = {"base_model": base, "spec": spec.to_dict(), "max_length": max_length}
        teacher = _read_meta(Path(path)).get("teacher") if Path(path).is_dir() else None
        if teacher:
            meta["teacher"] = teacher
        out = cls(spec, tokenizer, model, meta, dev, max_length, scoring_precision)
        out.new_params = frozenset(info.get("missing_keys") or ())
        return out

    @classmethod
    def _warm(cls, directory: Path, base: str, spec: TaskSpec, device, max_length: int,
              seed: int) -> "AcquisitionModel | None":
        previous = _read_meta(directory)
        reason = warm_start_mismatch(previous, base, spec.to_dict())
        if reason is None:
            try:
                model = cls.load(directory, device=device)
            except Exception as exc:  # noqa: BLE001 - safetensors, torch, json...: any unreadable version
                reason = f"cannot load it: {type(exc).__name__}: {exc}"
        if reason is not None:
            log.warning("no warm start from %s (%s): training from scratch", directory, reason)
            return None
        seed_everything(seed)
        model.spec, model.max_length = spec, max_length  # tag/from names may differ; labels match
        model.meta = {"base_model": base, "spec": spec.to_dict(), "max_length": max_length,
                      "warm_start": {"from": str(directory), "model_version": previous.get("model_version")},
                      **({"teacher": previous["teacher"]} if previous.get("teacher") else {})}
        return model

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "auto",
             scoring_precision: str = "auto") -> "AcquisitionModel":
        directory = Path(directory)
        meta = _read_meta(directory)
        spec = TaskSpec.from_dict(meta["spec"])
        auto = AutoModelForTokenClassification if spec.kind == "tagging" else AutoModelForSequenceClassification
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = auto.from_pretrained(directory)
        dev = device if isinstance(device, torch.device) else pick_device(device)
        return cls(spec, tokenizer, model.to(dev).eval(), meta, dev, int(meta.get("max_length", 256)),
                   scoring_precision)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        (directory / META_FILE).write_text(json.dumps(self.meta, indent=2, default=str))

    # ---- training -------------------------------------------------------------------------------------
    def features(self, examples: Sequence[Example]) -> list[dict]:
        texts = clip_chars([e.text for e in examples], self.max_length)
        if self.spec.kind == "tagging":
            enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
            return [{"input_ids": enc["input_ids"][i],
                     "labels": align_labels(enc["offset_mapping"][i], enc.word_ids(i), ex.spans, self.spec.labels)}
                    for i, ex in enumerate(examples)]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        feats = []
        for i, ex in enumerate(examples):
            if self.spec.multi_label:
                target = [0.0] * len(self.spec.labels)
                for j in ex.label_ids:
                    target[j] = 1.0
                feats.append({"input_ids": enc["input_ids"][i], "labels": target})
            else:
                feats.append({"input_ids": enc["input_ids"][i], "labels": int(ex.label_ids[0])})
        return feats

    def fit(self, examples: Sequence[Example], cfg: TrainConfig, *, evaluate: Callable[[], float] | None = None,
            on_step: Callable[[int, int, float], None] | None = None) -> dict:
        seed_everything(cfg.seed)
        stats = fine_tune(self.model, self.features(examples), cfg, self.device,
                          pad_id=self.tokenizer.pad_token_id or 0, evaluate=evaluate, on_step=on_step,
                          new_params=self.new_params)
        stats["n_examples"] = len(examples)
        self.meta["training"] = stats
        self.meta["trained_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return stats

    # ---- scoring --------------------------------------------------------------------------------------
    def predict(self, texts: Sequence[str], *, batch_size: int = 64, embeddings: bool = False) -> Predictions:
        t0 = time.perf_counter()
        tagging = self.spec.kind == "tagging"
        enc = encode(self.tokenizer, texts, self.max_length, words=tagging)
        pad = self.tokenizer.pad_token_id or 0
        if tagging:
            def head(logits, mask):
                return [p[: int(m.sum())].cpu().numpy() for p, m in zip(torch.softmax(logits, -1), mask)]
        elif self.spec.multi_label:
            def head(logits, mask):
                return torch.sigmoid(logits).cpu().numpy()
        else:
            def head(logits, mask):
                return torch.softmax(logits, -1).cpu().numpy()
        net, precision = self.scoring_module()
        outs, emb = run_model(net, enc.input_ids, batch_size=batch_size, device=self.device,
                              pad_id=pad, head=head, embeddings=embeddings)
        if tagging:
            probs = [o[first] if len(first) else np.zeros((0, len(self.label_names)), np.float32)
                     for o, first in zip(outs, enc.word_first)]
            return Predictions(probs, enc.word_ranges, emb, enc.n_tokens, time.perf_counter() - t0, precision)
        probs = np.stack(outs) if outs else np.zeros((0, len(self.label_names)), np.float32)
        return Predictions(probs.astype(np.float32), None, emb, enc.n_tokens, time.perf_counter() - t0, precision)

    def scoring_module(self) -> tuple[torch.nn.Module, str]:
        """(module that scores, "fp32" | "int8"): the int8 copy is derived from the current weights and cached."""
        kind = "multi_label" if self.spec.kind == "classification" and self.spec.multi_label else self.spec.kind
        return self._scoring.module(self.model, self.device, kind)

    def spans(self, text: str, word_ranges, word_probs: np.ndarray) -> list[tuple[int, int, str, float]]:
        return decode_spans(text, word_ranges, word_probs, self.spec.labels)


def _read_meta(directory: Path) -> dict:
    path = directory / META_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("unreadable %s in %s", META_FILE, directory)
        return {}
