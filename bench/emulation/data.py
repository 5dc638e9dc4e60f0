"""Labeled datasets for the emulation: classification (CSV / JSONL) and NER (CoNLL / JSONL), as product objects.

Every item becomes an :class:`albackend.domain.examples.Example` (text + class ids, or text + character spans), the
same object the backend builds from Label Studio annotations, so the emulation trains through the product's own
code paths. NER items also keep their *words* (character ranges of the source tokens): the tagging budget is
counted in words (the paper's "2% of tokens").

Accepted files:

* classification CSV with a header (``text`` and ``label_name`` or ``label`` columns; names configurable),
  or JSONL ``{"text": ..., "label": ...}``; labels may be names or integers;
* NER CoNLL (``token ... tag`` per line, blank line between sentences, ``-DOCSTART-`` skipped; the tag is the
  last column), JSONL ``{"tokens": [...], "tags": [...]}`` in IOB2/IOB1, or JSONL
  ``{"text": ..., "spans": [{"start", "end", "label"}]}`` (also ``entities``; or ``[start, end, label]`` lists).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from plasm.words import tokenize

REPO_ROOT = Path(__file__).resolve().parents[2]
Words = list[tuple[int, int]]


def shared_data_dir() -> Path:
    """``$SHARED_DATA`` or ``<repo>/../shared/data`` (where AG News and CoNLL-2003 live)."""
    return Path(os.environ.get("SHARED_DATA") or (REPO_ROOT.parent / "shared" / "data")).expanduser().resolve()


BUILTIN = {
    "agnews": ("classification", "ag_news/train_pool.csv", "ag_news/test.csv"),
    "conll2003": ("tagging", "conll2003/train.jsonl", "conll2003/test.jsonl"),
}


@dataclass
class Split:
    """Examples of one split; ``words[i]`` are the character ranges of example i's words (tagging only)."""

    examples: list[Example]
    words: list[Words] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    def lengths(self) -> np.ndarray:
        """Budget units per item: words for tagging, 1 per item for classification."""
        if self.words:
            return np.array([max(1, len(w)) for w in self.words], dtype=np.int64)
        return np.ones(len(self.examples), dtype=np.int64)

    def subset(self, idx: Sequence[int]) -> "Split":
        return Split([self.examples[i] for i in idx], [self.words[i] for i in idx] if self.words else [])


@dataclass
class Dataset:
    name: str
    spec: TaskSpec
    pool: Split
    test: Split

    @property
    def kind(self) -> str:
        return self.spec.kind

    def describe(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "labels": list(self.spec.labels),
               "pool": len(self.pool), "test": len(self.test)}
        if self.kind == "tagging":
            out["pool_words"] = int(self.pool.lengths().sum())
            out["test_words"] = int(self.test.lengths().sum())
        return out


# --------------------------------------------------------------------------------------------- tagging
def iob_to_spans(words: Words, tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Character spans from word ranges and IOB2 (or IOB1) tags: B-X opens, I-X continues an open X."""
    spans: list[tuple[int, int, str]] = []
    cur: list | None = None
    for (start, end), tag in zip(words, tags):
        tag = str(tag or "O")
        if tag == "O" or "-" not in tag:
            if cur:
                spans.append(tuple(cur))
            cur = None
            continue
        prefix, _, label = tag.partition("-")
        if prefix in ("I", "E") and cur is not None and cur[2] == label:
            cur[1] = end
        else:
            if cur:
                spans.append(tuple(cur))
            cur = [start, end, label]
    if cur:
        spans.append(tuple(cur))
    return spans


def tokens_to_text(tokens: Sequence[str], tags: Sequence[str]) -> tuple[str, Words, list[tuple[int, int, str]]]:
    """(``" ".join(tokens)``, each token's character range, the entity spans of the IOB tags)."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    words: Words = []
    pos = 0
    for tok in tokens:
        words.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), words, iob_to_spans(words, tags)


def _read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    sentences, toks, tags = [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                if toks:
                    sentences.append((toks, tags))
                toks, tags = [], []
                continue
            cols = line.split()
            if cols[0] == "-DOCSTART-":
                continue
            toks.append(cols[0])
            tags.append(cols[-1] if len(cols) > 1 else "O")
    if toks:
        sentences.append((toks, tags))
    return sentences


def _span_of(item) -> tuple[int, int, str]:
    if isinstance(item, dict):
        label = item.get("label", item.get("labels"))
        if isinstance(label, list):
            label = label[0]
        return int(item["start"]), int(item["end"]), str(label)
    start, end, label = item[:3]
    return int(start), int(end), str(label)


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _tagging_row(d: dict, where: str) -> tuple[str, Words, list[tuple[int, int, str]]]:
    if "tokens" in d:
        return tokens_to_text(d["tokens"], d.get("tags") or d.get("ner_tags") or [])
    if "text" in d:
        text = str(d["text"])
        spans = [_span_of(s) for s in d.get("spans", d.get("entities", []))]
        return text, [(t.start, t.end) for t in tokenize(text)], spans
    raise ValueError(f"{where}: a NER JSONL line needs 'tokens'+'tags' or 'text'+'spans'")


def read_tagging(path: str | Path) -> tuple[list[Example], list[Words]]:
    path = Path(path)
    examples, words_all = [], []
    if path.suffix.lower() in (".conll", ".txt", ".iob", ".bio"):
        rows = [tokens_to_text(t, g) for t, g in _read_conll(path)]
    else:
        rows = [_tagging_row(d, f"{path} item {n}") for n, d in enumerate(read_jsonl(path), 1)]
    for i, (text, words, spans) in enumerate(rows):
        if not words or not text.strip():
            continue
        examples.append(Example(i, text, spans=sorted(spans)))
        words_all.append(words)
    return examples, words_all


# --------------------------------------------------------------------------------------------- classification
def read_classification(path: str | Path, text_column: str = "text",
                        label_column: str | None = None) -> list[tuple[str, str]]:
    """(text, label name) pairs; ``label_column`` defaults to ``label_name`` when present, else ``label``."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = read_jsonl(path)
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} holds no rows")
    col = label_column or ("label_name" if "label_name" in rows[0] else "label")
    for key in (text_column, col):
        if key not in rows[0]:
            raise ValueError(f"{path}: no column {key!r} (columns: {sorted(rows[0])})")
    return [(str(r[text_column]), str(r[col])) for r in rows if str(r[text_column]).strip()]


def _label_order(names: set[str]) -> list[str]:
    """Integers in numeric order, names alphabetically: stable ids whatever the file order."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


# --------------------------------------------------------------------------------------------- loading
def _sample(split: Split, size: int, rng: np.random.Generator) -> Split:
    """A random subset (in random order) of ``size`` items; 0 or >= len keeps everything, shuffled."""
    idx = rng.permutation(len(split))
    if 0 < size < len(split):
        idx = idx[:size]
    return split.subset([int(i) for i in idx])


def load_dataset(*, dataset: str | None = None, train: str | None = None, test: str | None = None,
                 task: str | None = None, pool_size: int = 0, test_size: int = 0, data_seed: int = 0,
                 text_column: str = "text", label_column: str | None = None) -> Dataset:
    """Load, then subsample the pool and the test set with ``data_seed`` (files sorted by label are shuffled).

    The same pool and test subsets are used by every configuration and AL seed, so curves are comparable.
    """
    if dataset:
        if dataset not in BUILTIN:
            raise ValueError(f"unknown dataset {dataset!r}; built in: {', '.join(BUILTIN)} (or pass --train/--test)")
        kind, tr, te = BUILTIN[dataset]
        root = shared_data_dir()
        train, test, task = str(root / tr), str(root / te), kind
        name = dataset
    else:
        if not train or not test:
            raise ValueError("give --dataset, or both --train and --test")
        name = Path(train).stem
    for p in (train, test):
        if not Path(p).is_file():
            raise FileNotFoundError(f"dataset file not found: {p}")
    if task is None:
        suffix = Path(train).suffix.lower()
        task = "tagging" if suffix in (".conll", ".iob", ".bio") else "classification"
        if suffix == ".jsonl":
            with open(train, encoding="utf-8") as fh:
                first = json.loads(next(line for line in fh if line.strip()))
            task = "tagging" if ("tokens" in first or "spans" in first or "entities" in first) else "classification"
    rng = np.random.default_rng(data_seed)
    if task == "tagging":
        tr_ex, tr_w = read_tagging(train)
        te_ex, te_w = read_tagging(test)
        labels = sorted({s[2] for e in tr_ex + te_ex for s in e.spans})
        if not labels:
            raise ValueError(f"{train} has no entity spans")
        spec = TaskSpec("tagging", "label", "text", "text", tuple(labels))
        pool, tst = Split(tr_ex, tr_w), Split(te_ex, te_w)
    elif task == "classification":
        tr_rows = read_classification(train, text_column, label_column)
        te_rows = read_classification(test, text_column, label_column)
        labels = _label_order({lab for _, lab in tr_rows + te_rows})
        if len(labels) < 2:
            raise ValueError(f"{train} has fewer than 2 classes")
        index = {lab: i for i, lab in enumerate(labels)}
        spec = TaskSpec("classification", "label", "text", "text", tuple(labels))
        pool = Split([Example(i, t, [index[lab]]) for i, (t, lab) in enumerate(tr_rows)])
        tst = Split([Example(i, t, [index[lab]]) for i, (t, lab) in enumerate(te_rows)])
    else:
        raise ValueError(f"task must be 'classification' or 'tagging', got {task!r}")
    pool = _sample(pool, pool_size, rng)
    tst = _sample(tst, test_size, rng)
    for i, e in enumerate(pool.examples):  # pool ids = positions: the UPS score cache keys on them
        e.task_id = i
    return Dataset(name, spec, pool, tst)
