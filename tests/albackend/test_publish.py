"""Which model versions the backend prunes from Label Studio, and the retrain policy."""
from __future__ import annotations

from albackend.publish import own_version_key, superseded_versions
from albackend.retrain import decide
from albackend.tasksync import changed_task_ids, consistent


def test_only_own_older_versions_are_superseded():
    versions = ["al-7-it0-20260101000000-aaaaaa", "al-7-it1-20260101000100-bbbbbb", "al-7-it2-20260101000200-cccccc",
                "al-7-it3-20260101000300-dddddd", "untrained-7", "imported-v1", "al-8-it0-20260101000000-eeeeee",
                "albackend"]
    current = "al-7-it3-20260101000300-dddddd"
    assert superseded_versions("7", versions, current, keep=1) == [
        "al-7-it1-20260101000100-bbbbbb", "al-7-it0-20260101000000-aaaaaa", "untrained-7"]
    assert superseded_versions("7", versions, current, keep=0)[0] == "al-7-it2-20260101000200-cccccc"
    assert superseded_versions("7", versions, current, keep=10) == []
    assert own_version_key("7", "al-77-it1-x") is None and own_version_key("7", "imported-v1") is None


def test_iterations_sort_numerically():
    versions = [f"al-1-it{i}-2026-x{i}" for i in (2, 10, 9)]
    assert superseded_versions("1", versions, "al-1-it11-2026-y", keep=1) == ["al-1-it9-2026-x9", "al-1-it2-2026-x2"]


def test_retrain_policy():
    assert decide("START_TRAINING", 0, 10).queue
    assert not decide("ANNOTATION_CREATED", 9, 10).queue
    assert decide("ANNOTATION_CREATED", 10, 10).queue


def test_changed_task_ids_from_webhook_payloads():
    assert changed_task_ids({"task": {"id": 5}, "annotation": {"id": 1, "task": 5}}) == ([5], True)
    assert changed_task_ids({"annotations": [{"id": 1, "task": 3}, {"id": 2, "task": {"id": 4}}]}) == ([3, 4], True)
    assert changed_task_ids({"annotations": [{"id": 1}]}) == ([], False)
    assert changed_task_ids({"task": {"id": 2**70}}) == ([], False)
    assert changed_task_ids({"task": "x", "annotation": None}) == ([], False)


def test_mirror_consistency_tolerates_events_during_the_sync():
    before = {"task_number": 100, "total_annotations_number": 10}
    after = {"task_number": 100, "total_annotations_number": 12}
    assert consistent(before, after, {"tasks": 100, "annotations": 11})[0]
    assert not consistent(before, after, {"tasks": 99, "annotations": 11})[0]
    assert not consistent(before, before, {"tasks": 100, "annotations": 9})[0]
