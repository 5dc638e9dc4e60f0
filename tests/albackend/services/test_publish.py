"""Which model versions the backend prunes from Label Studio, and the retrain policy."""
from __future__ import annotations

import logging
import time

from albackend.services.publish import own_version_key, superseded_versions
from albackend.services.retrain import decide
from albackend.services.tasksync import changed_task_ids, consistent
from tests.support.fakes import _Server


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


class PredictionsLS(_Server):
    """A stand-in Label Studio over real HTTP: stores imported predictions, refuses the ``fail_on``-th import;
    lists two versions and refuses to delete them (a delete that outlives the client's patience)."""

    def __init__(self, fail_on: int | None = None, import_delay: float = 0.0):
        super().__init__()
        self.fail_on, self.imports, self.patches, self.import_delay = fail_on, [], [], import_delay
        self.start()

    def handle(self, h, rec):
        if rec["path"].endswith("/model-versions/"):
            if rec["method"] == "GET":
                return h.reply({"al-1-it0-a": 5, "al-1-it1-b": 5, "al-1-it2-c": 5})
            return h.reply({"detail": "gateway timeout"}, 400)
        if rec["method"] == "PATCH":
            self.patches.append(rec["body"])
            return h.reply({"id": 1})
        if self.fail_on is not None and len(self.imports) + 1 == self.fail_on:
            return h.reply({"detail": "task not found"}, 400)
        time.sleep(self.import_delay)
        self.imports.append(rec["body"])
        return h.reply({"created": len(rec["body"])}, 201)


def _publisher(ls: PredictionsLS):
    import dataclasses

    from albackend.adapters.lsclient import LabelStudioClient
    from albackend.services.publish import Publisher
    from albackend.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), push_batch=3, set_sampling=True)
    return Publisher(LabelStudioClient(ls.url, "token"), "1", "al-1-it0-x", settings, {"sampling": "Sequential"})


def chunk(start: int, n: int) -> list[dict]:
    return [{"task": t, "result": [], "score": 0.5, "model_version": "al-1-it0-x"} for t in range(start, start + n)]


def test_first_chunk_is_made_current_and_later_chunks_are_pushed_in_the_background():
    ls = PredictionsLS()
    pub = _publisher(ls)
    pub(chunk(0, 4), 4, 14)
    assert ls.patches == [{"model_version": "al-1-it0-x", "sampling": "Uncertainty sampling"}]
    assert pub.current_after_s is not None and pub.pushed == 4
    pub(chunk(4, 5), 9, 14)
    pub(chunk(9, 5), 14, 14)
    pub.finish()
    assert pub.pushed == 14 and sorted(p["task"] for part in ls.imports for p in part) == list(range(14))
    assert max(len(part) for part in ls.imports) == 3  # PUSH_BATCH
    ls.stop()


def test_a_failed_background_push_fails_the_round():
    import pytest

    from albackend.adapters.lsclient import LabelStudioError

    ls = PredictionsLS(fail_on=3)  # the third POST (the second chunk's first batch) is refused
    pub = _publisher(ls)
    pub(chunk(0, 4), 4, 20)
    pub(chunk(4, 4), 8, 20)
    with pytest.raises(LabelStudioError, match="400"):
        pub.finish()
    ls.stop()


def test_a_failed_prune_is_left_for_the_next_retrain():
    from albackend.adapters.lsclient import LabelStudioClient
    from albackend.services.publish import prune_versions

    ls = PredictionsLS()
    deleted, error = prune_versions(LabelStudioClient(ls.url, "token"), "1", "al-1-it2-c", keep=0)
    assert deleted == {} and "400" in error
    ls.stop()


def test_a_slow_label_studio_import_names_the_setting_that_fixes_it(caplog, monkeypatch):
    from albackend.services.publish import LS_BATCHED_IMPORT_FLAG, Publisher

    monkeypatch.setattr(Publisher, "SLOW_REQUEST_S", 0.05)
    ls = PredictionsLS(import_delay=0.1)
    with caplog.at_level(logging.WARNING, logger="albackend.services.publish"):
        pub = _publisher(ls)
        pub(chunk(0, 2), 2, 2)
        pub.finish()
    assert any(LS_BATCHED_IMPORT_FLAG in r.getMessage() for r in caplog.records)
    caplog.clear()
    fast = PredictionsLS()
    with caplog.at_level(logging.WARNING, logger="albackend.services.publish"):
        pub = _publisher(fast)
        pub(chunk(0, 2), 2, 2)
        pub.finish()
    assert not any(LS_BATCHED_IMPORT_FLAG in r.getMessage() for r in caplog.records)
    ls.stop()
    fast.stop()
