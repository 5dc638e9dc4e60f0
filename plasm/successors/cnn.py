"""CNN text classifier successor (paper section 3.2, Appendix Table 7; Le et al., 2018 / Kim-style CNN).

Word embeddings (300-d) -> parallel 1-d convolutions (widths 3, 4, 5; 100 filters each) -> ReLU ->
max-pool over time -> dropout 0.5 -> linear. The embeddings are trained from scratch: the paper initialises
them with Word2Vec, which is not available offline. See :class:`~plasm.successors.base.TrainHParams` for
the optimiser deviation (Adam instead of SGD lr 0.001) and why.

Max-pooling is masked to windows that contain at least one real token, so a text's probabilities do not
depend on the other texts of its batch (padding never wins the max).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from .base import ClassicalSuccessor, TrainHParams
from .vocab import PAD_ID, UNK_ID, Vocab, tokenize


class CNNClassifier(nn.Module):
    """Kim-style CNN over word ids: ``forward(ids (B, L), lengths (B,)) -> logits (B, num_classes)``.

    ``L`` must be at least ``max(filter_sizes)`` (pad with ``PAD_ID``). ``word_dropout`` replaces real word
    ids by ``UNK_ID`` during training (0 by default, as in Table 7).
    """

    def __init__(self, vocab_size: int, num_classes: int, *, embedding_dim: int = 300, num_filters: int = 100,
                 filter_sizes: tuple[int, ...] = (3, 4, 5), dropout: float = 0.5, word_dropout: float = 0.0):
        super().__init__()
        self.filter_sizes = tuple(filter_sizes)
        self.word_dropout = word_dropout
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, num_filters, k) for k in self.filter_sizes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_filters * len(self.filter_sizes), num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & (ids != PAD_ID)
            ids = ids.masked_fill(drop, UNK_ID)
        x = self.embedding(ids).transpose(1, 2)  # (B, E, L)
        features = []
        for conv, k in zip(self.convs, self.filter_sizes):
            h = torch.relu(conv(x))  # (B, F, L - k + 1), >= 0
            positions = torch.arange(h.size(2), device=h.device)
            valid = positions[None, :] < (lengths - k + 1).clamp(min=1)[:, None]
            # zero is <= every valid (ReLU) value and at least one position is valid: masked max == exact max
            features.append(h.masked_fill(~valid[:, None, :], 0.0).amax(dim=2))
        return self.classifier(self.dropout(torch.cat(features, dim=1)))


@dataclasses.dataclass
class CNNConfig(TrainHParams):
    """Table 7 architecture; training defaults per :class:`TrainHParams` (batch 128, clip 1 as in Table 7)."""

    embedding_dim: int = 300
    num_filters: int = 100
    filter_sizes: tuple[int, ...] = (3, 4, 5)
    dropout: float = 0.5
    word_dropout: float = 0.0
    max_length: int = 512  # words per text; longer texts are truncated
    batch_size: int = 128
    clip_norm: float = 1.0
    lr: float = 1e-3


class CNNClassifierSuccessor(ClassicalSuccessor):
    """Classification successor: targets are class ids into ``labels``; ``predict_proba`` -> ``(n, n_classes)``."""

    kind = "classification"
    model_type = "cnn_classifier"
    config_cls = CNNConfig
    dev_metric_name = "accuracy"
    config: CNNConfig

    def _build_vocabs(self, texts: list[str]) -> None:
        c = self.config
        self.vocab = Vocab.build(([t.text for t in tokenize(x, lowercase=c.lowercase)] for x in texts),
                                 min_freq=c.min_freq, max_size=c.max_vocab_size)
        self.char_vocab = None

    def _new_model(self) -> nn.Module:
        c = self.config
        return CNNClassifier(len(self.vocab), len(self.labels), embedding_dim=c.embedding_dim,
                             num_filters=c.num_filters, filter_sizes=c.filter_sizes, dropout=c.dropout,
                             word_dropout=c.word_dropout)

    def _validate_targets(self, texts: list[str], targets: list) -> None:
        n = len(self.labels)
        for y in targets:
            if isinstance(y, bool) or not isinstance(y, (int, np.integer)) or not 0 <= int(y) < n:
                raise ValueError(f"classification targets must be int class ids in [0, {n}), got {y!r}")

    def _encode(self, texts: list[str], targets: list | None = None) -> list:
        c = self.config
        items = []
        for i, text in enumerate(texts):
            ids = self.vocab.encode(t.text for t in tokenize(text, lowercase=c.lowercase))[: c.max_length]
            items.append((ids, int(targets[i]) if targets is not None else -1))
        return items

    def _collate(self, items: list) -> dict[str, torch.Tensor]:
        width = max(max(len(ids) for ids, _ in items), max(self.config.filter_sizes))
        ids = torch.full((len(items), width), PAD_ID, dtype=torch.long)
        for row, (seq, _) in enumerate(items):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return {
            "ids": ids.to(self.device),
            "lengths": torch.tensor([len(seq) for seq, _ in items], dtype=torch.long, device=self.device),
            "labels": torch.tensor([y for _, y in items], dtype=torch.long, device=self.device),
        }

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.model(batch["ids"], batch["lengths"])
        return nn.functional.cross_entropy(logits.float(), batch["labels"])

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, ``(len(texts), len(labels))`` float32."""
        self._require_fitted()
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        items = self._encode(texts)

        def forward(batch):
            logits = self.model(batch["ids"], batch["lengths"])
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()

        return np.stack(self._run_batches(items, [len(ids) for ids, _ in items], forward)).astype(np.float32)

    def predict(self, texts: list[str]) -> np.ndarray:
        """Argmax class ids."""
        return self.predict_proba(texts).argmax(axis=1)

    def _dev_metric(self, texts: list[str], targets: list) -> float:
        return float((self.predict(texts) == np.asarray(targets, dtype=np.int64)).mean())
