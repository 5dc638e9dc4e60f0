"""CNN-BiLSTM sequence-tagging successor (paper section 3.2, Appendix Table 6; Ma and Hovy, 2016).

Per word: a word embedding (100-d) concatenated with a character CNN (30-d char embeddings, 30 filters of
widths 2 and 3, max-pooled) -> locked dropout -> 1-layer BiLSTM (200 per direction) -> locked dropout ->
feed-forward (200, tanh) -> linear to IOB2 tags. Differences from Table 6, by design:

* no CRF: tags are predicted with a per-word softmax (the successor interface needs per-word probabilities
  anyway); invalid IOB2 output (``I-X`` not after ``B-X``/``I-X``) is decoded as the start of a new span;
* word embeddings are trained from scratch (GloVe is not available offline);
* "word dropout" replaces word ids by ``<unk>`` (so the unknown-word embedding gets trained), instead of
  zeroing whole word vectors;
* Adam instead of SGD lr 0.015 (see :class:`~plasm.successors.base.TrainHParams`).

Targets are character spans ``(start, end, label)``; they are converted to word-level IOB2 with the
offsets of :func:`~plasm.words.tokenize`: a word is tagged when it overlaps a span, its first
word ``B-``, the rest ``I-``. Decoded spans run from the first word's start to the last word's end.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from plasm.words import Token, spans_to_iob2, tokenize

from .base import ClassicalSuccessor, TrainHParams
from .vocab import PAD_ID, UNK_ID, Vocab

IGNORE_INDEX = -100


# ------------------------------------------------------------------------------------------------ IOB2


def iob2_to_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Word-index spans ``(first, last + 1, label)``; an ``I-X`` not continuing an ``X`` span starts one."""
    spans: list[tuple[int, int, str]] = []
    current: list | None = None  # [first, end, label]
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current[2] == label and current[1] == i:
            current[1] = i + 1
            continue
        if current is not None:
            spans.append(tuple(current))
            current = None
        if prefix in ("B", "I") and label:
            current = [i, i + 1, label]
    if current is not None:
        spans.append(tuple(current))
    return spans


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite tags so that they decode, under strict IOB2, to the spans of :func:`iob2_to_spans`."""
    fixed = ["O"] * len(tags)
    for first, end, label in iob2_to_spans(tags):
        fixed[first] = "B-" + label
        for i in range(first + 1, end):
            fixed[i] = "I-" + label
    return fixed


# ----------------------------------------------------------------------------------------------- model


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared across time steps (``x``: ``(B, T, D)``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = torch.empty(x.size(0), 1, x.size(2), device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * mask / (1 - self.p)


class BiLSTMTagger(nn.Module):
    """``forward(word_ids (B, T), char_ids (B, T, C), lengths (B,), char_lengths (B, T)) -> logits (B, T, tags)``.

    ``C`` must be at least ``max(char_widths)``; every length must be >= 1.
    """

    def __init__(self, vocab_size: int, char_vocab_size: int, num_tags: int, *, word_dim: int = 100,
                 char_dim: int = 30, char_filters: int = 30, char_widths: tuple[int, ...] = (2, 3),
                 hidden_size: int = 200, ff_size: int = 200, word_dropout: float = 0.05,
                 locked_dropout: float = 0.2):
        super().__init__()
        self.char_widths = tuple(char_widths)
        self.word_dropout = word_dropout
        self.word_embedding = nn.Embedding(vocab_size, word_dim, padding_idx=PAD_ID)
        self.char_embedding = nn.Embedding(char_vocab_size, char_dim, padding_idx=PAD_ID)
        self.char_convs = nn.ModuleList(nn.Conv1d(char_dim, char_filters, w) for w in self.char_widths)
        self.locked_dropout = LockedDropout(locked_dropout)
        self.lstm = nn.LSTM(word_dim + char_filters * len(self.char_widths), hidden_size, num_layers=1,
                            bidirectional=True, batch_first=True)
        self.feed_forward = nn.Linear(2 * hidden_size, ff_size)
        self.output = nn.Linear(ff_size, num_tags)

    def _char_features(self, char_ids: torch.Tensor, char_lengths: torch.Tensor) -> torch.Tensor:
        b, t, c = char_ids.shape
        x = self.char_embedding(char_ids.reshape(b * t, c)).transpose(1, 2)  # (B*T, D, C)
        lengths = char_lengths.reshape(b * t)
        features = []
        for conv, w in zip(self.char_convs, self.char_widths):
            h = conv(x)  # (B*T, F, C - w + 1)
            positions = torch.arange(h.size(2), device=h.device)
            valid = positions[None, :] < (lengths - w + 1).clamp(min=1)[:, None]
            h = h.masked_fill(~valid[:, None, :], torch.finfo(h.dtype).min)
            features.append(h.amax(dim=2))
        return torch.cat(features, dim=1).reshape(b, t, -1)

    def forward(self, word_ids: torch.Tensor, char_ids: torch.Tensor, lengths: torch.Tensor,
                char_lengths: torch.Tensor) -> torch.Tensor:
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(word_ids.shape, device=word_ids.device) < self.word_dropout) & (word_ids != PAD_ID)
            word_ids = word_ids.masked_fill(drop, UNK_ID)
        chars = self._char_features(char_ids, char_lengths)
        x = torch.cat([self.word_embedding(word_ids).to(chars.dtype), chars], dim=-1)
        x = self.locked_dropout(x)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=word_ids.size(1))
        out = self.locked_dropout(out)
        return self.output(torch.tanh(self.feed_forward(out)))


@dataclasses.dataclass
class BiLSTMConfig(TrainHParams):
    """Table 6 architecture (batch 32, clip 5); training defaults per :class:`TrainHParams`."""

    word_dim: int = 100
    char_dim: int = 30
    char_filters: int = 30
    char_widths: tuple[int, ...] = (2, 3)
    hidden_size: int = 200
    ff_size: int = 200
    word_dropout: float = 0.05
    locked_dropout: float = 0.2
    max_word_chars: int = 30  # longer words keep their first characters for the char CNN
    batch_size: int = 32
    clip_norm: float = 5.0
    lr: float = 2e-3


class BiLSTMTaggerSuccessor(ClassicalSuccessor):
    """Tagging successor: targets are per-text character spans ``(start, end, label)``, labels in ``labels``."""

    kind = "tagging"
    model_type = "bilstm_tagger"
    config_cls = BiLSTMConfig
    dev_metric_name = "f1"
    config: BiLSTMConfig

    @property
    def tag_names(self) -> list[str]:
        """``["O", "B-X", "I-X", ...]`` in the order of ``labels``."""
        return ["O"] + [f"{p}-{label}" for label in self.labels for p in ("B", "I")]

    def _build_vocabs(self, texts: list[str]) -> None:
        c = self.config
        token_lists = [tokenize(x) for x in texts]
        words = ([t.text.lower() if c.lowercase else t.text for t in toks] for toks in token_lists)
        self.vocab = Vocab.build(words, min_freq=c.min_freq, max_size=c.max_vocab_size)
        self.char_vocab = Vocab.build_chars(t.text for toks in token_lists for t in toks)

    def _new_model(self) -> nn.Module:
        c = self.config
        return BiLSTMTagger(len(self.vocab), len(self.char_vocab), len(self.tag_names), word_dim=c.word_dim,
                            char_dim=c.char_dim, char_filters=c.char_filters, char_widths=c.char_widths,
                            hidden_size=c.hidden_size, ff_size=c.ff_size, word_dropout=c.word_dropout,
                            locked_dropout=c.locked_dropout)

    def _validate_targets(self, texts: list[str], targets: list) -> None:
        known = set(self.labels)
        for text, spans in zip(texts, targets):
            for span in spans:
                start, end, label = span
                if label not in known:
                    raise ValueError(f"span label {label!r} is not one of {self.labels}")
                if not 0 <= start < end <= len(text):
                    raise ValueError(f"span {tuple(span)!r} is out of range for a text of length {len(text)}")

    def _encode(self, texts: list[str], targets: list | None = None) -> list:
        """Items ``(word_ids, char_ids, tag_ids | None)``; empty texts give empty items (skipped in training)."""
        c = self.config
        tag_index = {t: i for i, t in enumerate(self.tag_names)}
        items = []
        for i, text in enumerate(texts):
            tokens = tokenize(text)
            if targets is not None and not tokens:
                continue
            word_ids = self.vocab.encode(t.text.lower() if c.lowercase else t.text for t in tokens)
            char_ids = [self.char_vocab.encode(t.text[: c.max_word_chars]) for t in tokens]
            tags = None
            if targets is not None:
                tags = [tag_index[t] for t in spans_to_iob2(tokens, [tuple(s) for s in targets[i]])]
            items.append((word_ids, char_ids, tags))
        return items

    def _collate(self, items: list) -> dict[str, torch.Tensor]:
        b, t = len(items), max(len(w) for w, _, _ in items)
        c = max([max(self.config.char_widths)] + [len(ch) for _, chars, _ in items for ch in chars])
        word_ids = torch.full((b, t), PAD_ID, dtype=torch.long)
        char_ids = torch.full((b, t, c), PAD_ID, dtype=torch.long)
        char_lengths = torch.zeros((b, t), dtype=torch.long)
        tags = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
        for row, (words, chars, tag_ids) in enumerate(items):
            word_ids[row, : len(words)] = torch.tensor(words, dtype=torch.long)
            for col, ch in enumerate(chars):
                char_ids[row, col, : len(ch)] = torch.tensor(ch, dtype=torch.long)
                char_lengths[row, col] = len(ch)
            if tag_ids is not None:
                tags[row, : len(tag_ids)] = torch.tensor(tag_ids, dtype=torch.long)
        return {
            "word_ids": word_ids.to(self.device),
            "char_ids": char_ids.to(self.device),
            "lengths": torch.tensor([len(w) for w, _, _ in items], dtype=torch.long, device=self.device),
            "char_lengths": char_lengths.to(self.device),
            "tags": tags.to(self.device),
        }

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["word_ids"], batch["char_ids"], batch["lengths"], batch["char_lengths"])

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self._logits(batch)
        return nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch["tags"].reshape(-1),
                                           ignore_index=IGNORE_INDEX)

    def predict_proba(self, texts: list[str]) -> list[np.ndarray]:
        """Per text an ``(n_words, n_tags)`` float32 array over :attr:`tag_names` (words of :func:`tokenize`)."""
        self._require_fitted()
        texts = list(texts)
        items = self._encode(texts)
        n_tags = len(self.tag_names)
        result = [np.zeros((0, n_tags), dtype=np.float32) for _ in texts]
        nonempty = [i for i, (words, _, _) in enumerate(items) if words]
        if not nonempty:
            return result

        def forward(batch):
            probs = torch.softmax(self._logits(batch).float(), dim=-1).cpu().numpy()
            return [probs[row, :n] for row, n in enumerate(batch["lengths"].tolist())]

        sub = [items[i] for i in nonempty]
        for i, probs in zip(nonempty, self._run_batches(sub, [len(w) for w, _, _ in sub], forward)):
            result[i] = np.ascontiguousarray(probs, dtype=np.float32)
        return result

    def predict_tags(self, texts: list[str]) -> list[list[str]]:
        """Argmax IOB2 tag per word (not repaired)."""
        names = self.tag_names
        return [[names[j] for j in probs.argmax(axis=1)] for probs in self.predict_proba(texts)]

    def predict_spans(self, texts: list[str]) -> list[list[tuple[int, int, str, float]]]:
        """Per text the decoded spans ``(start, end, label, score)`` with exact character offsets.

        ``score`` is the mean probability of the argmax tags over the span's words.
        """
        names = self.tag_names
        out = []
        for text, probs in zip(texts, self.predict_proba(texts)):
            tokens = tokenize(text)
            best = probs.argmax(axis=1)
            spans = []
            for first, end, label in iob2_to_spans([names[j] for j in best]):
                score = float(probs[np.arange(first, end), best[first:end]].mean())
                spans.append((tokens[first].start, tokens[end - 1].end, label, score))
            out.append(spans)
        return out

    def _dev_metric(self, texts: list[str], targets: list) -> float:
        gold = [spans_to_iob2(tokenize(x), [tuple(s) for s in spans]) for x, spans in zip(texts, targets)]
        pred = [repair_iob2(tags) for tags in self.predict_tags(texts)]
        pairs = [(g, p) for g, p in zip(gold, pred) if g]
        if not pairs:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no gold/predicted entity: seqeval warns and returns 0
            return float(f1_score([g for g, _ in pairs], [p for _, p in pairs], mode="strict", scheme=IOB2))
