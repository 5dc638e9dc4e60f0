"""Incremental sync of a project's tasks from Label Studio into the local mirror (`albackend.services.taskstore`).

Why: a retrain needs every gold label and every pool text, but re-reading the whole project each time made the
fetch grow with pool size × iterations. Here a retrain fetches

* tasks imported since the last sync (LS task ids only grow: ``id > max mirrored id``), without predictions;
* tasks a webhook reported changed (ANNOTATION_CREATED/UPDATED/DELETED journal), with their annotations;

and then checks the mirror against Label Studio's own counters (``task_number``, ``total_annotations_number``).
Only when they disagree (a missed webhook, deleted tasks, a first sync, an explicit request) does it re-read the
project fully — and even then without predictions for the unlabeled tasks.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from albackend.adapters.lsclient import LabelStudioClient
from albackend.services.taskstore import TaskStore, valid_task_id

log = logging.getLogger(__name__)
NEEDS_FULL = "needs_full_sync"
ANNOTATED = {"filters": {"conjunction": "or", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0},
    {"filter": "filter:tasks:cancelled_annotations", "operator": "greater", "type": "Number", "value": 0}]}}


@dataclass
class SyncReport:
    mode: str = "incremental"
    reason: str = ""
    new_tasks: int = 0
    changed_tasks: int = 0
    tasks: int = 0
    annotations: int = 0
    bytes_fetched: int = 0
    seconds: float = 0.0
    checks: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def changed_task_ids(payload: dict) -> tuple[list[int], bool]:
    """Task ids an annotation webhook touches, and whether the payload named all of them."""
    ids: list[int] = []
    complete = True
    task = payload.get("task")
    if isinstance(task, dict) and valid_task_id(task.get("id")):
        ids.append(task["id"])
    anns = payload.get("annotations") if isinstance(payload.get("annotations"), list) else []
    if isinstance(payload.get("annotation"), dict):
        anns = [payload["annotation"], *anns]
    for ann in anns:
        tid = ann.get("task") if isinstance(ann, dict) else None
        if isinstance(tid, dict):
            tid = tid.get("id")
        if valid_task_id(tid):
            ids.append(tid)
        elif not ids:
            complete = False
    if not ids:
        complete = False
    return sorted(set(ids)), complete


def record_webhook(store: TaskStore, payload: dict) -> int:
    """Journal the tasks an annotation event changed; an event that names none forces a full re-sync."""
    ids, complete = changed_task_ids(payload)
    if not complete:
        store.set_meta(**{NEEDS_FULL: f"webhook {payload.get('action')} did not name its tasks"})
    return store.mark_dirty(ids, time.time())


def _counters(info: dict) -> tuple[int | None, int | None]:
    def num(key: str) -> int | None:
        value = info.get(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return num("task_number"), num("total_annotations_number")


def full_sync(client: LabelStudioClient, store: TaskStore, project: str) -> tuple[int, int]:
    """Re-read the project: every task's data (no predictions), then the annotated tasks with annotations."""
    dirty = store.dirty()
    tasks = {t["id"]: t for t in client.iter_tasks(project, fields="task_only", page_size=1000)
             if isinstance(t, dict) and valid_task_id(t.get("id"))}
    annotated = 0
    for t in client.iter_tasks(project, fields="all", query=ANNOTATED, page_size=200):
        if isinstance(t, dict) and t.get("id") in tasks:
            tasks[t["id"]] = {"id": t["id"], "data": t.get("data"), "annotations": t.get("annotations")}
            annotated += 1
    store.replace_all(tasks.values())
    store.clear_dirty(dirty)
    store.set_meta(**{NEEDS_FULL: None})
    return len(tasks), annotated


def incremental_sync(client: LabelStudioClient, store: TaskStore, project: str) -> tuple[int, int]:
    """New tasks since the last sync plus the tasks webhooks reported changed; returns (new, changed)."""
    dirty = store.dirty()
    new = list(client.tasks_after(project, store.counts()["max_id"]))
    store.upsert(new, with_annotations=False)
    changed = {t for t, _ in dirty}
    # tasks imported together with their annotations carry them from the start
    changed |= {t["id"] for t in new if (t.get("total_annotations") or 0) or (t.get("cancelled_annotations") or 0)}
    fetched = list(client.tasks_by_ids(project, changed)) if changed else []
    store.upsert(({"id": t["id"], "data": t.get("data"), "annotations": t.get("annotations")}
                  for t in fetched if isinstance(t, dict)), with_annotations=True)
    store.clear_dirty(dirty)
    return len(new), len(changed)


def consistent(before: dict, after: dict, local: dict) -> tuple[bool, dict]:
    """The mirror matches LS if each counter lies between LS's readings before and after the sync (events may
    arrive while it runs; their webhooks are journalled for the next sync)."""
    checks = {}
    for i, name in enumerate(("tasks", "annotations")):
        b, a = _counters(before)[i], _counters(after)[i]
        if b is not None and a is not None:
            checks[name] = {"label_studio": a, "local": local[name], "ok": min(a, b) <= local[name] <= max(a, b)}
    oks = [c.pop("ok") for c in checks.values()]
    return all(oks), checks


def sync_project(client: LabelStudioClient, store: TaskStore, project: str,
                 force_full: bool = False) -> tuple[dict, SyncReport]:
    """Bring the mirror up to date; returns the project's LS record (label config, counters) and a report."""
    t0, b0 = time.perf_counter(), client.bytes_received
    report = SyncReport()
    before = client.get_project(project)
    pending_full = store.get_meta(NEEDS_FULL)
    if force_full or pending_full or store.get_meta("synced_at") is None:
        report.mode, report.reason = "full", ("requested" if force_full else pending_full or "first sync")
        report.new_tasks, report.changed_tasks = full_sync(client, store, project)
    else:
        report.new_tasks, report.changed_tasks = incremental_sync(client, store, project)
    after = client.get_project(project)
    ok, report.checks = consistent(before, after, store.counts())
    if not ok and report.mode == "incremental":
        log.warning("project %s: local task mirror disagrees with Label Studio (%s); re-reading the project",
                    project, report.checks)
        report.mode, report.reason = "full", f"counters differ: {report.checks}"
        report.new_tasks, report.changed_tasks = full_sync(client, store, project)
        after = client.get_project(project)
        ok, report.checks = consistent(after, after, store.counts())
    counts = store.counts()
    report.tasks, report.annotations = counts["tasks"], counts["annotations"]
    report.bytes_fetched = client.bytes_received - b0
    report.seconds = round(time.perf_counter() - t0, 3)
    store.set_meta(synced_at=time.time())
    return after, report

