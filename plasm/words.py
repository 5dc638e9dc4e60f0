"""The one word segmentation of PLASM: classical successors' vocabularies, span F1 of every model, NER budgets.

The tokenizer is deterministic and lossless with respect to offsets: every token is a ``\\w+`` run or a
single non-space, non-word character (punctuation, symbols, each emoji code point), and
``text[token.start:token.end]`` is always the token's original (not lower-cased) surface form. Pure Python:
the metrics and the emulation's data loader use it without importing torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


class Token(NamedTuple):
    """One token: ``text`` (lower-cased when asked) and its ``[start, end)`` offsets in the original text."""

    text: str
    start: int
    end: int


def tokenize(text: str, *, lowercase: bool = False) -> list[Token]:
    """Split ``text`` into ``\\w+`` runs and single punctuation/symbol characters, keeping offsets.

    ``lowercase`` only changes ``Token.text``; offsets always index the original string.
    """
    tokens = []
    for match in TOKEN_PATTERN.finditer(text):
        surface = match.group()
        tokens.append(Token(surface.lower() if lowercase else surface, match.start(), match.end()))
    return tokens


def spans_to_iob2(tokens: Sequence[Token], spans: Sequence[tuple[int, int, str]]) -> list[str]:
    """Word-level IOB2 tags for character ``spans``: a word overlapping a span is tagged (first ``B-``).

    Spans are taken in order of start offset; a word already claimed by an earlier span keeps its tag.
    """
    tags = ["O"] * len(tokens)
    for start, end, label in sorted(spans, key=lambda s: (s[0], -s[1])):
        first = True
        for i, tok in enumerate(tokens):
            if tok.start < end and tok.end > start and tags[i] == "O":
                tags[i] = ("B-" if first else "I-") + label
                first = False
    return tags
