"""Label Studio tasks and annotation results built from the shared datasets.

Data root and file readers: :mod:`bench.emulation.data` (env ``SHARED_DATA`` or ``<repo>/../shared/data``;
``ag_news/*.csv`` with columns ``text,label,label_name``; ``conll2003/*.jsonl`` with ``{"id", "tokens", "tags"}``
in IOB2). LS results come from the backend's own builders (:mod:`albackend.services.predictions`).
"""

from __future__ import annotations

import random
from functools import lru_cache

from albackend.domain.labelconfig import TaskSpec
from albackend.services.predictions import choice_result, span_result
from bench.emulation.data import read_classification, read_jsonl, shared_data_dir, tokens_to_text

AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
CONLL_LABELS = ["PER", "ORG", "LOC", "MISC"]

CLASSIFICATION_CONFIG = (
    '<View>'
    '<Text name="text" value="$text"/>'
    '<Choices name="label" toName="text">'
    + "".join(f'<Choice value="{v}"/>' for v in AGNEWS_LABELS)
    + '</Choices>'
    '</View>'
)

NER_CONFIG = (
    '<View>'
    '<Labels name="label" toName="text">'
    + "".join(f'<Label value="{v}"/>' for v in CONLL_LABELS)
    + '</Labels>'
    '<Text name="text" value="$text"/>'
    '</View>'
)

Span = tuple[int, int, str]


def have_shared_data() -> bool:
    d = shared_data_dir()
    return (d / "ag_news" / "train_pool.csv").is_file() and (d / "conll2003" / "train.jsonl").is_file()


# --------------------------------------------------------------------------------------------- AG News
@lru_cache(maxsize=4)
def _agnews_rows(split: str) -> tuple[tuple[str, str], ...]:
    return tuple(read_classification(shared_data_dir() / "ag_news" / f"{split}.csv", label_column="label_name"))


def agnews_tasks(n: int, seed: int = 0, split: str = "train_pool",
                 balanced: bool = True) -> tuple[list[dict], list[str]]:
    """``n`` AG News rows as LS tasks ``{"data": {"text": ...}}`` and their gold label names (AGNEWS_LABELS).

    ``balanced``: draw round-robin over the four classes (so any prefix of length >= 4 holds every class);
    otherwise a plain random sample. Deterministic for a given seed.
    """
    rows = _agnews_rows(split)
    rng = random.Random(seed)
    if balanced:
        by_label: dict[str, list[int]] = {lab: [] for lab in AGNEWS_LABELS}
        for i, (_, lab) in enumerate(rows):
            by_label[lab].append(i)
        for idx in by_label.values():
            rng.shuffle(idx)
        picked = []
        k = 0
        while len(picked) < n:
            lab = AGNEWS_LABELS[k % len(AGNEWS_LABELS)]
            pos = k // len(AGNEWS_LABELS)
            if pos >= len(by_label[lab]):
                raise ValueError(f"not enough {lab!r} rows for n={n}")
            picked.append(by_label[lab][pos])
            k += 1
    else:
        picked = rng.sample(range(len(rows)), n)
    tasks = [{"data": {"text": rows[i][0]}} for i in picked]
    labels = [rows[i][1] for i in picked]
    return tasks, labels


# --------------------------------------------------------------------------------------------- CoNLL-2003
@lru_cache(maxsize=4)
def _conll_rows(split: str) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    rows = read_jsonl(shared_data_dir() / "conll2003" / f"{split}.jsonl")
    return tuple((tuple(d["tokens"]), tuple(d["tags"])) for d in rows)


def conll_tasks(n: int, seed: int = 0, split: str = "train", min_entities: int = 1, min_tokens: int = 4,
                max_tokens: int | None = 40) -> tuple[list[dict], list[list[Span]]]:
    """``n`` CoNLL sentences as LS tasks ``{"data": {"text": " ".join(tokens)}}`` and their gold character spans.

    Only sentences with >= ``min_entities`` entities and ``min_tokens``..``max_tokens`` tokens are drawn.
    """
    rows = _conll_rows(split)
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    tasks: list[dict] = []
    gold: list[list[Span]] = []
    for i in order:
        tokens, tags = rows[i]
        if len(tokens) < min_tokens or (max_tokens is not None and len(tokens) > max_tokens):
            continue
        text, _, spans = tokens_to_text(tokens, tags)
        if len(spans) < min_entities:
            continue
        tasks.append({"data": {"text": text}})
        gold.append(spans)
        if len(tasks) == n:
            return tasks, gold
    raise ValueError(f"only {len(tasks)} CoNLL sentences match the filters (asked for {n})")


# --------------------------------------------------------------------------------------------- LS results
def _spec(kind: str, from_name: str, to_name: str, labels) -> TaskSpec:
    return TaskSpec(kind, from_name, to_name, to_name, tuple(labels))


def choices_result(label: str, from_name: str = "label", to_name: str = "text") -> list[dict]:
    """An LS annotation/prediction result for a Choices control (the backend's own builder)."""
    return choice_result(_spec("classification", from_name, to_name, [label]), [label])


def spans_result(text: str, spans, from_name: str = "label", to_name: str = "text") -> list[dict]:
    """An LS result for a Labels control over Text: one region per ``(start, end, label)``; spans must fit."""
    for start, end, _ in spans:
        if not (0 <= start < end <= len(text)):
            raise ValueError(f"span {(start, end)} outside text of length {len(text)}")
    return span_result(_spec("tagging", from_name, to_name, {s[2] for s in spans}), text, spans)
