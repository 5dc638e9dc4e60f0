"""Tests for albackend.domain.examples: LS tasks/annotations -> Example, with every problem a Skip or a log line."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from albackend.domain.examples import (Example, Skip, TaskError, gold_example, gold_examples, is_labeled,
                                latest_annotation, task_text)
from albackend.domain.labelconfig import TaskSpec

CLS = TaskSpec("classification", "label", "text", "text", ("Sports", "Politics", "Tech"))
MULTI = TaskSpec("classification", "label", "text", "text", ("Sports", "Politics", "Tech"), multi_label=True)
NER = TaskSpec("tagging", "ner", "text", "text", ("PER", "ORG", "LOC"))


def choice(*names, from_name="label"):
    return {"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": list(names)}}


def region(start, end, label, from_name="ner"):
    return {"from_name": from_name, "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "labels": [label]}}


def task(text, *annotations, tid=1):
    return {"id": tid, "data": {"text": text}, "annotations": list(annotations)}


def ann(result, *, aid=1, updated="2025-01-01T00:00:00Z", cancelled=False):
    return {"id": aid, "result": result, "updated_at": updated, "created_at": updated, "was_cancelled": cancelled}


# ------------------------------------------------------------------------------------------ task_text


@pytest.mark.parametrize("bad, message", [
    ("not a dict", "not a JSON object"),
    ({"id": 1}, "no 'data'"),
    ({"id": 1, "data": None}, "no 'data'"),
    ({"id": 1, "data": {"other": "x"}}, "no field 'text'"),
    ({"id": 1, "data": {"text": 12}}, "int, not text"),
    ({"id": 1, "data": {"text": None}}, "NoneType, not text"),
    ({"id": 1, "data": {"text": ["a"]}}, "list, not text"),
])
def test_task_text_errors(bad, message):
    with pytest.raises(TaskError, match=message):
        task_text(bad, CLS, 100)


def test_task_text_truncates_to_max_chars():
    assert task_text(task("x" * 50), CLS, 10) == "x" * 10
    assert task_text(task("abc"), CLS, 10) == "abc"
    assert task_text(task("y" * 50), CLS, 0) == "y" * 50  # 0 = no limit


def test_empty_text_is_a_skip():
    out = gold_example(task("   \n", ann([choice("Sports")])), CLS, 100)
    assert isinstance(out, Skip) and out.reason == "empty text"
    out = gold_example(task("", ann([choice("Sports")])), CLS, 100)
    assert isinstance(out, Skip) and out.reason == "empty text"


@pytest.mark.parametrize("bad", [{"id": 7, "data": {}}, {"id": 7, "data": {"text": 3}}, "garbage"])
def test_bad_task_becomes_skip_not_crash(bad):
    out = gold_example(bad, CLS, 100)
    assert isinstance(out, Skip)
    assert out.task_id == (7 if isinstance(bad, dict) else None)
    assert out.reason


# ----------------------------------------------------------------------------------- annotations


def test_latest_non_cancelled_annotation_is_used():
    t = task("some text",
             ann([choice("Sports")], aid=1, updated="2025-01-01T10:00:00Z"),
             ann([choice("Tech")], aid=3, updated="2025-01-03T10:00:00Z"),
             ann([choice("Politics")], aid=2, updated="2025-01-02T10:00:00Z"))
    assert latest_annotation(t)["id"] == 3
    out = gold_example(t, CLS, 100)
    assert isinstance(out, Example) and out.label_ids == [2]


def test_cancelled_annotation_is_ignored():
    t = task("some text",
             ann([choice("Sports")], aid=1, updated="2025-01-01T10:00:00Z"),
             ann([], aid=2, updated="2025-01-05T10:00:00Z", cancelled=True))
    assert latest_annotation(t)["id"] == 1
    assert gold_example(t, CLS, 100).label_ids == [0]


def test_only_cancelled_annotations_means_unlabeled():
    t = task("some text", ann([choice("Sports")], cancelled=True))
    assert latest_annotation(t) is None and not is_labeled(t)
    out = gold_example(t, CLS, 100)
    assert isinstance(out, Skip) and "no non-cancelled annotation" in out.reason
    assert not is_labeled(task("x"))
    assert not is_labeled({"id": 1, "data": {"text": "x"}, "annotations": None})
    assert not is_labeled({"id": 1, "data": {"text": "x"}, "annotations": ["junk", {"result": "not a list"}]})


def test_same_timestamp_breaks_ties_by_id():
    t = task("t", ann([choice("Sports")], aid=5), ann([choice("Tech")], aid=9))
    assert latest_annotation(t)["id"] == 9


def test_unknown_labels_skipped_with_reason():
    out = gold_example(task("t", ann([choice("Cooking")])), CLS, 100)
    assert isinstance(out, Skip)
    assert "Cooking" in out.reason and "not in the label config" in out.reason


def test_unknown_label_next_to_a_known_one_keeps_the_known():
    out = gold_example(task("t", ann([choice("Cooking", "Tech")])), MULTI, 100)
    assert isinstance(out, Example) and out.label_ids == [2]


def test_choice_of_another_control_is_not_used():
    out = gold_example(task("t", ann([choice("Sports", from_name="other")])), CLS, 100)
    assert isinstance(out, Skip) and "no choice for 'label'" in out.reason


def test_multi_label():
    out = gold_example(task("t", ann([choice("Tech", "Sports"), choice("Tech")])), MULTI, 100)
    assert out.label_ids == [0, 2]  # sorted, deduplicated


def test_single_label_keeps_one():
    out = gold_example(task("t", ann([choice("Tech", "Sports")])), CLS, 100)
    assert out.label_ids == [2]


def test_gold_examples_splits_examples_and_skips():
    tasks = [task("a", ann([choice("Sports")]), tid=1), task("b", tid=2), {"id": 3, "data": {}},
             task("c", ann([choice("Politics")]), tid=4)]
    examples, skips = gold_examples(tasks, CLS, 100)
    assert [e.task_id for e in examples] == [1, 4]
    assert sorted(s.task_id for s in skips) == [2, 3]


# ---------------------------------------------------------------------------------------- spans


def test_spans_kept_and_sorted():
    text = "Ada Lovelace worked in London."
    out = gold_example(task(text, ann([region(23, 29, "LOC"), region(0, 12, "PER")])), NER, 1000)
    assert out.spans == [(0, 12, "PER"), (23, 29, "LOC")]
    assert [text[s:e] for s, e, _ in out.spans] == ["Ada Lovelace", "London"]


@pytest.mark.parametrize("bad", [region(-1, 3, "PER"), region(5, 5, "PER"), region(6, 4, "PER"),
                                 region(0, 999, "PER"), region("0", 3, "PER"), region(0, 3.5, "PER"),
                                 {"from_name": "ner", "value": {"start": 0, "end": 3, "labels": []}},
                                 {"from_name": "ner", "value": None}, region(0, 3, "FOOD")])
def test_bad_regions_are_dropped_with_a_logged_reason(bad, caplog):
    text = "Bob went to Paris"
    with caplog.at_level(logging.INFO, logger="albackend.domain.examples"):
        out = gold_example(task(text, ann([bad, region(12, 17, "LOC")])), NER, 1000)
    assert isinstance(out, Example)
    assert out.spans == [(12, 17, "LOC")]
    assert "skipped a region" in caplog.text


def test_span_beyond_truncated_text_is_dropped():
    text = "Bob went to Paris"
    out = gold_example(task(text, ann([region(0, 3, "PER"), region(12, 17, "LOC")])), NER, 10)
    assert out.text == text[:10]
    assert out.spans == [(0, 3, "PER")]


def test_overlapping_spans_keep_the_first_longest():
    text = "New York City is big"
    result = [region(4, 8, "LOC"), region(0, 13, "LOC"), region(10, 16, "ORG"), region(14, 16, "PER")]
    out = gold_example(task(text, ann(result)), NER, 1000)
    assert out.spans == [(0, 13, "LOC"), (14, 16, "PER")]


def test_regions_of_another_control_are_ignored():
    out = gold_example(task("Bob", ann([region(0, 3, "PER", from_name="other")])), NER, 100)
    assert isinstance(out, Example) and out.spans == []


def test_unicode_rtl_emoji_offsets():
    """LS offsets are Python string indices (code points): spans must slice the exact entity text."""
    text = "Ça va 🙂 מוחמד בירושלים — Zoë a visité Łódź 👩‍👩‍👧."
    ents = {"מוחמד": "PER", "בירושלים": "LOC", "Zoë": "PER", "Łódź": "LOC"}
    result = []
    for word, label in ents.items():
        s = text.index(word)
        result.append(region(s, s + len(word), label))
    out = gold_example(task(text, ann(result)), NER, 10_000)
    assert {text[s:e]: lab for s, e, lab in out.spans} == ents
    cls = gold_example(task("🙂 مرحبا بالعالم", ann([choice("Tech")])), CLS, 100)
    assert cls.text == "🙂 مرحبا بالعالم" and cls.label_ids == [2]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(min_size=1, max_size=40),
       regions=st.lists(st.tuples(st.integers(-5, 50), st.integers(-5, 50), st.sampled_from(["PER", "ORG", "X"])),
                        max_size=8))
def test_any_regions_give_valid_non_overlapping_spans(text, regions):
    t = task(text, ann([region(s, e, lab) for s, e, lab in regions]))
    out = gold_example(t, NER, 30)
    if not text[:30].strip():
        assert isinstance(out, Skip)
        return
    assert isinstance(out, Example)
    prev_end = 0
    for s, e, lab in out.spans:
        assert 0 <= s < e <= len(out.text)
        assert s >= prev_end
        assert lab in NER.labels
        prev_end = e
