"""Tests for albackend.algorithms.tagging with the real packaged MiniLM fast tokenizer: char spans -> IOB2 on first
sub-words -> (one-hot word probabilities) -> decode_spans gives back the same spans, offsets exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from albackend.algorithms.tagging import IGNORE, align_labels, decode_spans, tag_names, word_spans

LABELS = ("PER", "ORG", "LOC")
NAMES = tag_names(LABELS)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from albackend.models.registry import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    assert tok.is_fast
    return tok


def encode(tok, text):
    enc = tok(text, return_offsets_mapping=True)
    return enc["offset_mapping"], enc.word_ids()


def round_trip(tok, text, spans, labels=LABELS):
    """spans -> token tags -> one-hot word probs -> decoded (start, end, label)."""
    offsets, word_ids = encode(tok, text)
    tags = align_labels(offsets, word_ids, spans, labels)
    first, ranges = word_spans(offsets, word_ids)
    names = tag_names(labels)
    # only first sub-words carry a tag; special tokens and continuation pieces are ignored
    assert [i for i, t in enumerate(tags) if t != IGNORE] == first
    probs = np.zeros((len(first), len(names)), np.float32)
    probs[np.arange(len(first)), [tags[p] for p in first]] = 1.0
    decoded = decode_spans(text, ranges, probs, labels)
    assert all(score == pytest.approx(1.0) for *_, score in decoded)
    return tags, [(s, e, lab) for s, e, lab, _ in decoded]


def spans_of(text, *pairs):
    out = []
    for entity, label in pairs:
        s = text.index(entity)
        out.append((s, s + len(entity), label))
    return out


def test_tag_names_order():
    assert NAMES == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def test_iob2_on_first_sub_words(tokenizer):
    text = "Ada Lovelace met Babbage in London"
    offsets, word_ids = encode(tokenizer, text)
    tags = align_labels(offsets, word_ids, spans_of(text, ("Ada Lovelace", "PER"), ("London", "LOC")), LABELS)
    first, ranges = word_spans(offsets, word_ids)
    word_tags = [NAMES[tags[p]] for p in first]
    assert [text[s:e] for s, e in ranges] == ["Ada", "Lovelace", "met", "Babbage", "in", "London"]
    assert word_tags == ["B-PER", "I-PER", "O", "O", "O", "B-LOC"]
    # "Lovelace" and "Babbage" are several sub-words: only the first carries a label
    assert len(first) < sum(w is not None for w in word_ids)
    assert tags[0] == IGNORE and tags[-1] == IGNORE  # [CLS], [SEP]


@pytest.mark.parametrize("text, entities", [
    ("Ada Lovelace met Babbage in London", [("Ada Lovelace", "PER"), ("London", "LOC")]),
    ("unbelievably Lovelace worked at Hewlett-Packard", [("unbelievably Lovelace", "PER"),
                                                        ("Hewlett-Packard", "ORG")]),
    ("Zoë a visité Łódź et São Paulo", [("Zoë", "PER"), ("Łódź", "LOC"), ("São Paulo", "LOC")]),
    ("e\u0301cole Polytechnique in Montréal", [("e\u0301cole Polytechnique", "ORG"), ("Montréal", "LOC")]),
    ("🙂 מוחמד גר בירושלים 👩\u200d👩\u200d👧 !", [("מוחמד", "PER"), ("בירושלים", "LOC")]),
    ("مرحبا محمد من القاهرة", [("محمد", "PER"), ("القاهرة", "LOC")]),
    ("  Bob   went\tto\n\nNew  York   ", [("Bob", "PER"), ("New  York", "LOC")]),
    ("the U.S. and 東京 agreed", [("U.S.", "LOC"), ("東京", "LOC")]),
    ("IBM IBM Apple", [("IBM", "ORG")]),
])
def test_round_trip_exact(tokenizer, text, entities):
    spans = spans_of(text, *entities)
    _, decoded = round_trip(tokenizer, text, spans)
    assert decoded == sorted(spans)
    assert [text[s:e] for s, e, _ in decoded] == [e for e, _ in sorted(entities, key=lambda x: text.index(x[0]))]


def test_adjacent_spans_of_the_same_label_stay_apart(tokenizer):
    text = "Alice Bob Carol"
    spans = [(0, 5, "PER"), (6, 9, "PER"), (10, 15, "PER")]
    tags, decoded = round_trip(tokenizer, text, spans)
    assert decoded == spans


def test_no_spans_all_o(tokenizer):
    tags, decoded = round_trip(tokenizer, "nothing to see here", [])
    assert decoded == []
    assert {NAMES[t] for t in tags if t != IGNORE} == {"O"}


def test_span_inside_a_word_snaps_to_the_word(tokenizer):
    text = "visit Newcastle today"
    _, decoded = round_trip(tokenizer, text, [(9, 15, "LOC")])  # "castle" only
    assert decoded == [(6, 15, "LOC")]


def test_decode_lenient_iob_and_scores():
    text = "aa bb cc dd"
    ranges = [(0, 2), (3, 5), (6, 8), (9, 11)]
    idx = {n: i for i, n in enumerate(NAMES)}
    probs = np.full((4, len(NAMES)), 0.0, np.float32)
    # I-PER without B starts a span; I-LOC after PER starts a new one; O closes
    for row, (tag, p) in enumerate([("I-PER", 0.9), ("I-PER", 0.7), ("I-LOC", 0.6), ("O", 0.8)]):
        probs[row, :] = (1 - p) / (len(NAMES) - 1)
        probs[row, idx[tag]] = p
    out = decode_spans(text, ranges, probs, LABELS)
    assert [(s, e, lab) for s, e, lab, _ in out] == [(0, 5, "PER"), (6, 8, "LOC")]
    assert out[0][3] == pytest.approx(0.8)
    assert out[1][3] == pytest.approx(0.6)


def test_decode_empty():
    assert decode_spans("", [], np.zeros((0, len(NAMES))), LABELS) == []


# ------------------------------------------------------------------------------------------- property

WORDS = ["Ada", "Lovelace", "London", "unbelievably", "the", "of", "Zoë", "Łódź", "naïve", "São", "Paulo",
         "Hewlett-Packard", "U.S.", "don't", "東京", "מוחמד", "القاهرة", "Montréal", "e\u0301cole", "42",
         "co-operation", "internationalization", "Müller", "ÅNGSTRÖM", "x", "a.b.c"]


@st.composite
def sentences_with_spans(draw):
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14))
    seps = draw(st.lists(st.sampled_from([" ", "  ", "\t", " \n "]), min_size=len(words) - 1,
                         max_size=len(words) - 1))
    lead = draw(st.sampled_from(["", " ", "\n"]))
    text, starts = lead, []
    for i, w in enumerate(words):
        starts.append(len(text))
        text += w + (seps[i] if i < len(seps) else "")
    text += draw(st.sampled_from(["", " ", "  "]))
    # random non-overlapping word ranges, each a span over whole words
    spans, i = [], 0
    while i < len(words):
        if draw(st.booleans()):
            j = draw(st.integers(i, min(len(words) - 1, i + 3)))
            spans.append((starts[i], starts[j] + len(words[j]), draw(st.sampled_from(LABELS))))
            i = j + 1
        else:
            i += 1
    return text, spans


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sentences_with_spans())
def test_round_trip_property(tokenizer, case):
    text, spans = case
    _, decoded = round_trip(tokenizer, text, spans)
    assert decoded == spans
    for (s, e, _), (s2, e2, _) in zip(decoded, spans):
        assert text[s:e] == text[s2:e2]
