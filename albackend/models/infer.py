"""Fast batched inference: tokenize once, sort by length, pad each batch to its own longest sequence,
run under `torch.inference_mode` (bf16 autocast on GPU), restore the input order.

Never padding to the maximum length is what makes pool scoring cheap: AG News texts average ~50
sub-words against a 256 limit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from albackend.models.device import autocast
from albackend.models.train import collate
from albackend.algorithms.tagging import word_spans

# A sub-word averages 4-5 characters of English; 16 leaves room for long words, numbers and whitespace runs.
# Fast tokenizers tokenize the whole text before truncating (0.35 s for 100 KB), so cut characters first.
CHARS_PER_TOKEN = 16


def clip_chars(texts: Sequence[str], max_length: int) -> list[str]:
    """Prefixes the tokenizer can cover within max_length sub-words; offsets into the text stay valid."""
    limit = max(1, max_length) * CHARS_PER_TOKEN
    return [t if len(t) <= limit else t[:limit] for t in texts]


@dataclass
class Encoded:
    """Tokenized texts, with word geometry for tagging."""

    input_ids: list[list[int]]
    word_first: list[list[int]] = field(default_factory=list)
    word_ranges: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)


def encode(tokenizer, texts: Sequence[str], max_length: int, *, words: bool) -> Encoded:
    if len(texts) == 0:  # a fast tokenizer raises IndexError on an empty batch
        return Encoded(input_ids=[])
    enc = tokenizer(clip_chars(texts, max_length), truncation=True, max_length=max_length,
                    return_offsets_mapping=words)
    out = Encoded(input_ids=enc["input_ids"])
    if words:
        for i in range(len(texts)):
            first, ranges = word_spans(enc["offset_mapping"][i], enc.word_ids(i))
            out.word_first.append(first)
            out.word_ranges.append(ranges)
    return out


def classifier_linear(model: torch.nn.Module) -> torch.nn.Module | None:
    """The final linear layer: its input is the pre-classifier embedding Mahalanobis uses."""
    head = getattr(model, "classifier", None)
    if isinstance(head, torch.nn.Linear):
        return head
    for name in ("out_proj", "dense_out"):
        if isinstance(getattr(head, name, None), torch.nn.Linear):
            return getattr(head, name)
    return None


@torch.inference_mode()
def run_model(model: torch.nn.Module, input_ids: list[list[int]], *, batch_size: int, device: torch.device,
              pad_id: int, head: Callable[[torch.Tensor, torch.Tensor], object],
              embeddings: bool = False) -> tuple[list, np.ndarray | None]:
    """Apply `head(logits, attention_mask)` per batch in length order; results back in input order."""
    model.to(device).eval()
    order = np.argsort([len(x) for x in input_ids], kind="stable")
    results: list = [None] * len(input_ids)
    captured: list[torch.Tensor] = []
    hook = None
    if embeddings:
        lin = classifier_linear(model)
        if lin is None:
            raise ValueError("this model has no linear classifier layer to take embeddings from")
        hook = lin.register_forward_hook(lambda m, args, out: captured.append(args[0].detach()))
    emb = None
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate([{"input_ids": input_ids[i]} for i in idx], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device):
                logits = model(**batch).logits.float()
            outs = head(logits, batch["attention_mask"])
            for j, i in enumerate(idx):
                results[i] = outs[j]
            if embeddings:
                e = captured.pop().float()
                if e.dim() == 3:
                    e = e[:, 0]
                if emb is None:
                    emb = np.zeros((len(input_ids), e.shape[-1]), dtype=np.float32)
                emb[idx] = e.cpu().numpy()
    finally:
        if hook is not None:
            hook.remove()
    return results, emb
