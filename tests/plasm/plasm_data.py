"""Tiny synthetic data and Label Studio exports for the PLASM tests (seconds to train with tiny models)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec

CLS_LABELS = ("sports", "finance")
NER_LABELS = ("PER", "LOC")
CLS_CONFIG = ('<View><Text name="text" value="$text"/><Choices name="topic" toName="text">'
              '<Choice value="sports"/><Choice value="finance"/></Choices></View>')
NER_CONFIG = ('<View><Labels name="ner" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>'
              '<Text name="text" value="$text"/></View>')
CLS_SPEC = TaskSpec("classification", "topic", "text", "text", CLS_LABELS)
NER_SPEC = TaskSpec("tagging", "ner", "text", "text", NER_LABELS)

_SPORTS = ["the team won the match", "a late goal decided the game", "the striker scored twice",
           "fans cheered the home side", "the coach praised the players", "the league title race tightened"]
_FINANCE = ["shares fell on the stock market", "the bank raised interest rates", "investors sold bonds",
            "profits rose this quarter", "the company reported strong earnings", "oil prices hit a record"]
_NAMES = ["alice", "bob", "carol", "david", "emma", "frank", "grace", "henry"]
_PLACES = ["paris", "london", "berlin", "madrid", "tokyo", "boston"]
_TEMPLATES = ["{P} flew to {L} today", "yesterday {P} met friends in {L}", "{P} lives near {L}",
              "the trip of {P} to {L} was short", "{P} said {L} is lovely"]


def classification_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        y = int(rng.integers(2))
        src = _SPORTS if y == 0 else _FINANCE
        texts.append(f"{src[int(rng.integers(len(src)))]} {src[int(rng.integers(len(src)))]}")
        labels.append(y)
    return texts, labels


def ner_texts(n: int, seed: int) -> tuple[list[str], list[list[tuple[int, int, str]]]]:
    rng = np.random.default_rng(seed)
    texts, spans = [], []
    for _ in range(n):
        t = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
        p, l = _NAMES[int(rng.integers(len(_NAMES)))], _PLACES[int(rng.integers(len(_PLACES)))]
        text, out, i = "", [], 0
        while i < len(t):
            if t.startswith("{P}", i) or t.startswith("{L}", i):
                word, lab = (p, "PER") if t[i + 1] == "P" else (l, "LOC")
                out.append((len(text), len(text) + len(word), lab))
                text += word
                i += 3
            else:
                text += t[i]
                i += 1
        texts.append(text)
        spans.append(out)
    return texts, spans


def cls_examples(n: int, seed: int) -> list[Example]:
    texts, labels = classification_texts(n, seed)
    return [Example(i, t, label_ids=[y]) for i, (t, y) in enumerate(zip(texts, labels))]


def ner_examples(n: int, seed: int) -> list[Example]:
    texts, spans = ner_texts(n, seed)
    return [Example(i, t, spans=s) for i, (t, s) in enumerate(zip(texts, spans))]


def ls_export(kind: str, n_gold: int, n_pool: int, seed: int = 0) -> list[dict]:
    """An LS JSON export: annotated tasks (one cancelled extra), then unannotated ones."""
    tasks = []
    if kind == "classification":
        texts, labels = classification_texts(n_gold + n_pool, seed)
        for i, text in enumerate(texts):
            task = {"id": i + 1, "data": {"text": text}, "annotations": [], "predictions": []}
            if i < n_gold:
                task["annotations"] = [{"id": 100 + i, "was_cancelled": False, "created_at": "2024-01-01T00:00:00Z",
                                        "result": [{"from_name": "topic", "to_name": "text", "type": "choices",
                                                    "value": {"choices": [CLS_LABELS[labels[i]]]}}]}]
            tasks.append(task)
    else:
        texts, spans = ner_texts(n_gold + n_pool, seed)
        for i, text in enumerate(texts):
            task = {"id": i + 1, "data": {"text": text}, "annotations": [], "predictions": []}
            if i < n_gold:
                task["annotations"] = [{"id": 100 + i, "was_cancelled": False, "created_at": "2024-01-01T00:00:00Z",
                                        "result": [{"from_name": "ner", "to_name": "text", "type": "labels",
                                                    "value": {"start": s, "end": e, "text": text[s:e],
                                                              "labels": [lab]}} for s, e, lab in spans[i]]}]
            tasks.append(task)
    # a cancelled annotation does not make a task gold: it stays in the pool
    tasks.append({"id": 10_000, "data": {"text": texts[-1]}, "annotations": [
        {"id": 9999, "was_cancelled": True, "result": []}]})
    return tasks


def write_export(directory: Path, kind: str, n_gold: int, n_pool: int, seed: int = 0) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    export = directory / f"{kind}.json"
    export.write_text(json.dumps(ls_export(kind, n_gold, n_pool, seed)))
    config = directory / f"{kind}.xml"
    config.write_text(CLS_CONFIG if kind == "classification" else NER_CONFIG)
    return export, config


def make_tiny_mpnet(directory: Path, *, layers: int = 1, hidden: int = 32, seed: int = 1) -> Path:
    """A random tiny MPNet (a different architecture from the tiny BERT teacher), with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from albackend.models.registry import resolve_model

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    config = MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=130,
                         pad_token_id=tokenizer.pad_token_id)
    MPNetModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


# Fast settings for tiny models: a few steps at a high learning rate, small classical successors.
FAST_TRAIN = {"lr": 2e-3, "min_steps": 12, "epochs": 3, "batch_size": 16}
FAST_CLASSICAL_CNN = {"epochs": 3, "embedding_dim": 24, "num_filters": 8}
FAST_CLASSICAL_TAGGER = {"epochs": 3, "word_dim": 16, "char_dim": 8, "char_filters": 8, "hidden_size": 16,
                         "ff_size": 16}


def fast_config(teacher: str, successor: str, kind: str, **overrides):
    from plasm.pipeline import PlasmConfig

    classical = FAST_CLASSICAL_TAGGER if kind == "tagging" else FAST_CLASSICAL_CNN
    base = dict(teacher=teacher, successor=successor, device="cpu", max_length=32, seed=0,
                teacher_train=FAST_TRAIN, successor_train=FAST_TRAIN, tracin_train={**FAST_TRAIN, "min_steps": 6},
                classical=classical if successor in ("cnn", "bilstm", "classical") else {}, tracin_batch_size=8)
    base.update(overrides)
    return PlasmConfig(**base)
