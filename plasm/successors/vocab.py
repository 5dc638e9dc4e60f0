"""Word-level tokenizer with character offsets and JSON-serialisable vocabularies.

Used by the classical successors (CNN classifier, BiLSTM tagger). They are trained from scratch:
no pretrained word vectors (GloVe / Word2Vec as in the paper's Tables 6-7) are available offline, so
the vocabulary is built from the successor's own training texts.

Words come from :func:`plasm.words.tokenize`, the segmentation every PLASM metric uses too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from plasm.words import Token, tokenize

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0
UNK_ID = 1
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)


class Vocab:
    """String <-> id mapping with ``<pad>`` = 0 and ``<unk>`` = 1.

    Build it with :meth:`build` (word vocabularies) or :meth:`build_chars` (character vocabularies).
    Ordering is deterministic: by decreasing frequency, ties broken by the string itself.
    """

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if itos[:2] != list(SPECIAL_TOKENS):
            raise ValueError(f"a Vocab must start with {list(SPECIAL_TOKENS)}, got {itos[:2]}")
        if len(set(itos)) != len(itos):
            raise ValueError("duplicate entries in Vocab")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(itos)}

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """Vocabulary of the items of ``sequences`` seen at least ``min_freq`` times.

        ``max_size`` bounds the total size, the two special entries included (so it must be >= 2).
        """
        if min_freq < 1:
            raise ValueError("min_freq must be >= 1")
        if max_size is not None and max_size < len(SPECIAL_TOKENS):
            raise ValueError(f"max_size must be >= {len(SPECIAL_TOKENS)}")
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(seq)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        items = sorted((item for item, c in counts.items() if c >= min_freq), key=lambda s: (-counts[s], s))
        if max_size is not None:
            items = items[: max_size - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *items])

    @classmethod
    def build_chars(
        cls,
        words: Iterable[str],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """Character vocabulary over ``words`` (each word is a sequence of characters)."""
        return cls.build((list(w) for w in words), min_freq=min_freq, max_size=max_size)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, item: object) -> bool:
        return item in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    def lookup(self, item: str) -> int:
        return self.stoi.get(item, UNK_ID)

    def encode(self, items: Iterable[str]) -> list[int]:
        return [self.stoi.get(item, UNK_ID) for item in items]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def to_dict(self) -> dict:
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        return cls(data["itos"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
