"""The local task mirror: upserts keep annotations, the webhook journal, counters."""
from __future__ import annotations

from albackend.services.taskstore import TaskStore


def ann(i, cancelled=False):
    return {"id": i, "result": [], "was_cancelled": cancelled}


def test_upsert_without_annotations_keeps_them(tmp_path):
    s = TaskStore(tmp_path)
    s.upsert([{"id": 1, "data": {"text": "a"}, "annotations": [ann(1), ann(2, True)]}], with_annotations=True)
    s.upsert([{"id": 1, "data": {"text": "a2"}}, {"id": 2, "data": {"text": "b"}}], with_annotations=False)
    tasks = list(s.iter_tasks())
    assert [t["data"]["text"] for t in tasks] == ["a2", "b"]
    assert len(tasks[0]["annotations"]) == 2 and tasks[1]["annotations"] == []
    assert s.counts() == {"tasks": 2, "annotations": 1, "max_id": 2}
    s.replace_all([{"id": 3, "data": {}}])
    assert s.counts() == {"tasks": 1, "annotations": 0, "max_id": 3}


def test_bad_ids_are_left_out(tmp_path):
    s = TaskStore(tmp_path)
    assert s.upsert([{"id": 2**63}, {"id": "1"}, {"id": True}, "x", {"id": 4, "data": "x"}],
                    with_annotations=False) == 1
    assert list(s.iter_tasks()) == [{"id": 4, "data": {}, "annotations": []}]


def test_dirty_journal_keeps_entries_marked_again_after_the_fetch(tmp_path):
    s = TaskStore(tmp_path)
    assert s.mark_dirty([1, 2, 2**64], at=1.0) == 2
    seen = s.dirty()
    s.mark_dirty([2], at=2.0)  # a webhook arrived while the job fetched task 2
    s.clear_dirty(seen)
    assert s.dirty() == [(2, 2.0)]
    s.set_meta(a={"x": 1})
    assert s.get_meta("a") == {"x": 1} and s.get_meta("missing", 5) == 5
