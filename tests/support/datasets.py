"""Label Studio tasks and annotation results built from the shared datasets, or generated here.

Data root and file readers: :mod:`bench.emulation.data` (env ``SHARED_DATA`` or ``<repo>/../shared/data``;
``ag_news/*.csv`` with columns ``text,label,label_name``; ``conll2003/*.jsonl`` with ``{"id", "tokens", "tags"}``
in IOB2). A fresh clone has no shared data: :func:`news_tasks` generates short news-like texts of the same four
classes from templates in this file (deterministic, no licence beyond the repository's), so the real-Label-Studio
end-to-end tests of the first run need nothing outside the repository. LS results come from the backend's own
builders (:mod:`albackend.services.predictions`).
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


# --------------------------------------------------------------------------------------------- generated news
_NEWS = {
    "World": ("{a} and {b} leaders met in {city} to discuss the {issue}",
              "Protesters gathered in {city} as {a} debated new {issue} rules",
              "The {a} government recalled its ambassador over the {issue} dispute with {b}",
              "Voters in {a} go to the polls on {day} after a campaign dominated by {issue} policy"),
    "Sports": ("{team} beat {team2} {n}-{m} in the {cup} final on {day}",
               "The {team} striker scored twice as {team2} lost {n}-{m} at home",
               "{team} sacked their coach after a {n}-{m} defeat in the {cup}",
               "The {cup} semifinal between {team} and {team2} went to penalties"),
    "Business": ("{firm} shares rose {n} percent after quarterly profit beat forecasts",
                 "{firm} agreed to buy {firm2} for {n} billion dollars",
                 "Oil prices fell for a {ord} day as {firm} cut its sales outlook",
                 "The central bank kept interest rates at {n} percent, lifting {firm} stock"),
    "Sci/Tech": ("Researchers at {lab} unveiled a {tech} that runs on {n} watts",
                 "{firm} released a software update fixing a {tech} security flaw",
                 "A new {tech} from {lab} doubles battery life of phones",
                 "Astronomers at {lab} found {n} planets with a {tech} telescope"),
}
_SLOTS = {
    "a": ("France", "Japan", "Brazil", "Kenya", "Canada", "India", "Norway", "Chile"),
    "b": ("Germany", "China", "Mexico", "Egypt", "Spain", "Peru", "Turkey", "Poland"),
    "city": ("Geneva", "Nairobi", "Lima", "Oslo", "Cairo", "Seoul", "Vienna", "Quito"),
    "issue": ("border", "refugee", "trade", "climate", "water", "election", "nuclear", "fishing"),
    "team": ("Rovers", "United", "Athletic", "Wanderers", "City", "Rangers", "Albion", "Dynamo"),
    "team2": ("Harriers", "Rovers Reserve", "Olympic", "Sporting", "Celtic", "Real", "Lokomotiv", "Inter"),
    "cup": ("league cup", "champions cup", "national cup", "super cup"),
    "firm": ("Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Hooli", "Vandelay", "Stark Inc", "Wayne Group"),
    "firm2": ("Soylent", "Tyrell", "Cyberdyne", "Wonka", "Oscorp", "Gringotts", "Nakatomi", "Monarch"),
    "lab": ("MIT", "ETH Zurich", "Caltech", "Oxford", "CERN", "NASA", "Tsinghua", "Max Planck"),
    "tech": ("chip", "quantum sensor", "laser", "robot", "solar cell", "battery", "browser", "radio"),
    "day": ("Monday", "Tuesday", "Friday", "Sunday"),
    "ord": ("second", "third", "fourth", "fifth"),
}


def news_tasks(n: int, seed: int = 0) -> tuple[list[dict], list[str]]:
    """``n`` distinct generated news sentences as LS tasks and their labels (AGNEWS_LABELS), drawn round-robin
    over the classes like :func:`agnews_tasks` (any prefix of length >= 4 holds every class). Deterministic."""
    rng = random.Random(seed)
    tasks: list[dict] = []
    labels: list[str] = []
    seen: set[str] = set()
    while len(tasks) < n:
        label = AGNEWS_LABELS[len(tasks) % len(AGNEWS_LABELS)]
        fill = {k: rng.choice(v) for k, v in _SLOTS.items()}
        text = rng.choice(_NEWS[label]).format(n=rng.randint(1, 9), m=rng.randint(0, 4), **fill) + "."
        if text not in seen:
            seen.add(text)
            tasks.append({"data": {"text": text}})
            labels.append(label)
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
