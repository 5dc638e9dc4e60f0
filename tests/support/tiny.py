"""Tiny random transformer models for unit tests: real HF directories, seconds to train, no hub.

The tokenizer comes from the packaged MiniLM vocabulary (a real WordPiece vocab), the weights are a random
2-layer BERT with hidden size 32, so tests exercise the real loading/training/scoring code paths.
"""
from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from albackend.models.registry import resolve_model


def make_tiny_bert(directory: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0, mlm: bool = False) -> Path:
    """Write a random tiny BERT (with its tokenizer) to `directory` and return it."""
    import torch

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=128)
    model = BertForMaskedLM(config)
    if not mlm:
        model = model.bert
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
