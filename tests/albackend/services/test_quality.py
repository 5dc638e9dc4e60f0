"""albackend.services.quality: which annotation webhooks become prequential outcomes, against a real prediction store."""
from __future__ import annotations

import dataclasses
import time

import pytest

from albackend.services.insights import quality_figures
from albackend.services.predstore import PredictionStore
from albackend.services.quality import QualityStore, project_spec, record_annotation
from albackend.settings import Settings
from albackend.services.store import ModelStore, version_time
from tests.support.published import CLS_CONFIG, NER_CONFIG

P = "5"
V0 = "al-5-it0-20240101000000-abcdef"  # named long before the annotations below
V_LATER = "al-5-it3-20990101000000-abcdef"  # named after them: may have trained on them


def choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def region(start: int, end: int, label: str) -> dict:
    return {"from_name": "ner", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "labels": [label]}}


def event(task_id: int, result: list, *, action="ANNOTATION_CREATED", config=CLS_CONFIG, ann_id=None, text="t x",
          created="2025-06-01T10:00:00.000000Z", **ann) -> dict:
    return {"action": action, "project": {"id": int(P), "label_config": config},
            "task": {"id": task_id, "data": {"text": text}, "project": int(P)},
            "annotation": {"id": ann_id or 1000 + task_id, "task": task_id, "result": result, "created_at": created,
                           "was_cancelled": False, **ann}}


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path)


def predict(store: ModelStore, task_id: int, version: str, result: list) -> None:
    PredictionStore(store.project_dir(P) / "predictions.sqlite").put([(task_id, version, 0.5, result)])


def outcomes(store: ModelStore):
    return QualityStore(store.project_dir(P)).outcomes()


def test_version_time_reads_the_name_stamp(store):
    assert version_time(V0) == 1704067200.0
    assert version_time(store.next_version_name(P, 2)) == pytest.approx(time.time(), abs=2)
    assert version_time("untrained-5") is None and version_time("al-5-it1-2024-x") is None


def test_an_annotation_of_a_predicted_task_is_judged(store):
    predict(store, 1, V0, choice("Sports"))
    predict(store, 2, V0, choice("Sports"))
    assert record_annotation(store, P, event(1, choice("Sports")), 1000) == {"recorded": 1}
    assert record_annotation(store, P, event(2, choice("Politics")), 1000) == {"recorded": 1}
    kind, outs = outcomes(store)
    assert kind == "classification"
    assert [(o.iteration, o.version, o.pred, o.gold) for o in outs] == [
        (0, V0, ("Sports",), ("Sports",)), (0, V0, ("Sports",), ("Politics",))]


@pytest.mark.parametrize("version,why", [
    (V_LATER, "the prediction's model was trained after the annotation was made"),
    ("imported-v1", "prediction of 'imported-v1' is not from a trained version of this backend"),
])
def test_predictions_that_cannot_be_judged_are_skipped_with_the_reason(store, version, why):
    predict(store, 1, version, choice("Sports"))
    assert record_annotation(store, P, event(1, choice("Sports")), 1000) == {why: 1}
    assert outcomes(store) == (None, [])


def test_skips_without_prediction_cancelled_or_empty(store):
    assert record_annotation(store, P, event(1, choice("Sports")), 1000) == {"no prediction of this backend": 1}
    predict(store, 2, V0, choice("Sports"))
    assert record_annotation(store, P, event(2, [], was_cancelled=True), 1000) == {"cancelled (skipped task)": 1}
    assert record_annotation(store, P, event(2, []), 1000) == {"annotation has no usable result": 1}
    assert record_annotation(store, P, {"action": "PROJECT_UPDATED"}, 1000) == {}


def test_an_update_changes_the_gold_and_keeps_the_judged_prediction(store):
    predict(store, 1, V0, choice("Sports"))
    record_annotation(store, P, event(1, choice("Sports")), 1000)
    predict(store, 1, V_LATER, choice("Politics"))  # e.g. "Retrieve predictions" after the model trained on it
    assert record_annotation(store, P, event(1, choice("Politics"), action="ANNOTATION_UPDATED"), 1000) == {
        "updated": 1}
    (o,) = outcomes(store)[1]
    assert (o.version, o.pred, o.gold) == (V0, ("Sports",), ("Politics",))


def test_deleting_the_annotation_removes_the_outcome(store):
    predict(store, 1, V0, choice("Sports"))
    record_annotation(store, P, event(1, choice("Sports"), ann_id=77), 1000)
    deleted = {"action": "ANNOTATIONS_DELETED", "project": {"id": 5}, "annotations": [{"id": 77}, {"id": 78}]}
    assert record_annotation(store, P, deleted, 1000) == {"deleted": 1}
    assert outcomes(store) == (None, [])


def test_bulk_created_annotations_pair_with_their_tasks(store):
    for tid in (1, 2):
        predict(store, tid, V0, choice("Sports"))
    a, b = event(1, choice("Sports")), event(2, choice("Politics"))
    bulk = {"action": "ANNOTATIONS_CREATED", "project": a["project"], "task": [b["task"], a["task"]],
            "annotation": [a["annotation"], b["annotation"]]}
    assert record_annotation(store, P, bulk, 1000) == {"recorded": 2}
    assert sorted(o.gold for o in outcomes(store)[1]) == [("Politics",), ("Sports",)]


def test_ner_spans_are_trimmed_and_compared_strictly(store):
    text = "Bob met Ann in Paris"
    predict(store, 3, V0, [region(0, 3, "PER"), region(15, 20, "LOC")])
    gold = [region(0, 4, "PER"), region(8, 11, "PER"), region(15, 20, "LOC")]  # "Bob " = Bob
    assert record_annotation(store, P, event(3, gold, config=NER_CONFIG, text=text), 1000) == {"recorded": 1}
    kind, (o,) = outcomes(store)
    assert kind == "tagging"
    assert o.pred == ((0, 3, "PER"), (15, 20, "LOC"))
    assert o.gold == ((0, 3, "PER"), (8, 11, "PER"), (15, 20, "LOC"))


def test_the_spec_falls_back_to_the_current_model(store):
    assert project_spec(store, P, {"project": {"label_config": "<View"}}) is None
    assert project_spec(store, P, {"project": 5}) is None  # no config and no model yet
    assert project_spec(store, P, {"project": {"label_config": CLS_CONFIG}}).kind == "classification"


@pytest.mark.parametrize("payload", [
    {"action": "ANNOTATION_CREATED"}, {"action": "ANNOTATION_CREATED", "annotation": [1, None], "task": "x"},
    {"action": "ANNOTATION_CREATED", "project": {"label_config": CLS_CONFIG}, "annotation": {"task": {"id": -1}},
     "task": {"id": 2**70}},
    {"action": "ANNOTATIONS_DELETED", "annotations": "all"},
    event(1, choice("Sports"), created=None), event(1, [{"value": None}], created="0001-01-01T00:00:00"),
])
def test_malformed_payloads_never_raise(store, payload):
    assert isinstance(record_annotation(store, P, payload, 1000), dict)


def test_every_change_bumps_the_write_counter_the_figures_are_cached_by(store):
    settings = dataclasses.replace(Settings.from_env(), quality_window=10)
    qs = QualityStore(store.project_dir(P))
    assert qs.writes() == 0 and quality_figures(settings, store.project_dir(P))["n"] == 0
    predict(store, 1, V0, choice("Sports"))
    record_annotation(store, P, event(1, choice("Sports"), ann_id=5), 1000)
    assert qs.writes() == 1 and quality_figures(settings, store.project_dir(P))["agreement"] == 1.0
    record_annotation(store, P, event(1, choice("Politics"), action="ANNOTATION_UPDATED", ann_id=5), 1000)
    assert qs.writes() == 2 and quality_figures(settings, store.project_dir(P))["agreement"] == 0.0
    record_annotation(store, P, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}]}, 1000)
    assert qs.writes() == 3 and quality_figures(settings, store.project_dir(P))["n"] == 0
