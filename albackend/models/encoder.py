"""Sentence embeddings of the acquisition model's pretrained encoder (mean-pooled), for the cold start.

Why the *base* encoder and mean pooling: before the first retrain there is no fine-tuned model, and the packaged
encoders (all-MiniLM-L6-v2, all-mpnet-base-v2) were trained as mean-pooled sentence embedders, so cosine
similarity in this space means "says the same thing" — what representativeness and near-duplicate checks need.
The same space is kept after training, so embeddings computed once serve every later near-duplicate check.
Inference goes through the product's batched, length-sorted path (`albackend.models.infer.run_model`).
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from albackend.models.device import pick_device
from albackend.models.infer import encode, run_model
from albackend.models.registry import ModelNotFound, resolve_model


class _MeanPooled(torch.nn.Module):
    """The encoder with its mask-weighted mean over tokens exposed as ``logits`` (what `run_model` reads)."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return SimpleNamespace(logits=(hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))


class SentenceEncoder:
    """``embed(texts) -> (N, H) float32``; loaded once per process and reused."""

    def __init__(self, name: str, *, device: str | torch.device = "auto", max_length: int = 256):
        path = resolve_model(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.net = _MeanPooled(AutoModel.from_pretrained(path)).eval()
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"cannot load encoder {name!r}: {exc}") from exc
        self.name, self.max_length = name, max_length
        self.device = pick_device(device)
        self.seconds, self.texts = 0.0, 0  # cumulated, for throughput figures

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        t0 = time.perf_counter()
        ids = encode(self.tokenizer, list(texts), self.max_length, words=False).input_ids
        rows, _ = run_model(self.net, ids, batch_size=batch_size, device=self.device,
                            pad_id=self.tokenizer.pad_token_id or 0,
                            head=lambda pooled, mask: pooled.cpu().numpy())
        self.seconds += time.perf_counter() - t0
        self.texts += len(ids)
        if not rows:
            return np.zeros((0, int(self.net.encoder.config.hidden_size)), np.float32)
        return np.stack(rows).astype(np.float32)
