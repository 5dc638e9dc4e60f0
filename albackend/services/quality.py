"""Prequential bookkeeping of a project: when an annotation arrives for a task that carried one of this backend's
predictions, keep both, so the dashboard, /metrics and the Label Studio summary can say how often each model
version agreed with the annotators (the figures: `albackend.algorithms.prequential`).

Which prediction is judged: the task's last prediction in the prediction store (`predstore`: the version that
really computed it, also when /predict served it stale under a newer label), and only when that version was
named before the annotation was created (`store.version_time`): a version trained after the annotation may
have learned it. (If a retrain pushed a newer prediction between the annotator opening the task and submitting
it, the newer one is judged: still a prediction made without that label.) The first judged annotation of a task
fixes the prediction; a later update of the annotation changes the gold side only, a deletion removes the
outcome. Stored in ``quality.sqlite`` in the project's
directory (WAL: web processes write while the dashboard reads). Webhooks must be answered within a second, so
everything here is a few SQLite reads and one write, and any problem is a logged skip, never an error.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

from albackend.algorithms.prequential import CLASSIFICATION, Outcome
from albackend.domain.examples import Example, gold_example
from albackend.domain.labelconfig import ConfigError, TaskSpec, parse_label_config
from albackend.models.acquisition import META_FILE
from albackend.services.predstore import PredictionStore
from albackend.services import sqlitedb
from albackend.services.publish import own_version_key
from albackend.services.store import ModelStore, version_time
from albackend.services.taskstore import valid_task_id

log = logging.getLogger(__name__)
FILE_NAME = "quality.sqlite"
JUDGED_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"})
DELETE_ACTIONS = frozenset({"ANNOTATION_DELETED", "ANNOTATIONS_DELETED"})
_SCHEMA = ("CREATE TABLE IF NOT EXISTS outcomes (task_id INTEGER PRIMARY KEY, annotation_id INTEGER, "
           "model_version TEXT NOT NULL, iteration INTEGER NOT NULL, kind TEXT NOT NULL, pred TEXT NOT NULL, "
           "gold TEXT NOT NULL, at REAL NOT NULL)",
           "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
_BUMP = "INSERT INTO meta VALUES ('writes', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1"


class QualityStore:
    """The outcomes of one project; every method opens its own connection (threads, processes)."""

    def __init__(self, project_dir: Path):
        self.path = Path(project_dir) / FILE_NAME

    def _connect(self) -> sqlite3.Connection:
        return sqlitedb.connect(self.path, _SCHEMA, timeout=10)

    def writes(self) -> int:
        """A counter every change bumps (in the same transaction): readers cache figures by it."""
        if not self.path.exists():
            return 0
        with closing(self._connect()) as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'writes'").fetchone()
        return int(row[0]) if row else 0

    def get(self, task_id: int) -> dict | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT model_version, iteration, kind, pred FROM outcomes WHERE task_id = ?",
                              (task_id,)).fetchone()
        return None if row is None else {"model_version": row[0], "iteration": row[1], "kind": row[2],
                                         "pred": json.loads(row[3])}

    def put(self, task_id: int, annotation_id: int | None, version: str, iteration: int, kind: str,
            pred: tuple, gold: tuple, at: float) -> None:
        with closing(self._connect()) as con, con:
            con.execute("INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (task_id, annotation_id, version, iteration, kind, json.dumps(pred), json.dumps(gold), at))
            con.execute(_BUMP)

    def delete_annotations(self, annotation_ids: list[int]) -> int:
        with closing(self._connect()) as con, con:
            deleted = sum(con.execute("DELETE FROM outcomes WHERE annotation_id = ?", (a,)).rowcount
                          for a in annotation_ids)
            con.execute(_BUMP)
            return deleted

    def outcomes(self) -> tuple[str | None, list[Outcome]]:
        """(task kind, every outcome of that kind); (None, []) before the first one."""
        if not self.path.exists():
            return None, []
        with closing(self._connect()) as con:
            rows = con.execute("SELECT iteration, model_version, at, pred, gold, kind FROM outcomes "
                               "ORDER BY at, task_id").fetchall()
        if not rows:
            return None, []
        kind = rows[-1][5]
        rows = [r for r in rows if r[5] == kind]
        preds = json.loads("[" + ",".join(r[3] for r in rows) + "]")  # one parse, not one per row
        golds = json.loads("[" + ",".join(r[4] for r in rows) + "]")
        return kind, [Outcome(r[0], r[1], r[2], _tuple(p), _tuple(g)) for r, p, g in zip(rows, preds, golds)]


def _tuple(items: list) -> tuple:
    """JSON lists back to hashable tuples (spans are [start, end, label])."""
    return tuple(tuple(x) if isinstance(x, list) else x for x in items)


def project_spec(store: ModelStore, project: str, payload: dict) -> TaskSpec | None:
    """The label config the payload's project carries, else the one the current model was trained for."""
    config = payload.get("project", {}).get("label_config") if isinstance(payload.get("project"), dict) else None
    if isinstance(config, str) and config.strip():
        try:
            return parse_label_config(config)
        except ConfigError:
            return None
    current = store.current(project)
    try:
        return TaskSpec.from_dict(json.loads((Path(current["path"]) / META_FILE).read_text())["spec"])
    except (TypeError, OSError, ValueError, KeyError):
        return None


def targets(spec: TaskSpec, task: dict, result: list, max_chars: int) -> tuple | None:
    """Class labels, or whitespace-trimmed spans (start, end, label), of an annotation or prediction result."""
    found = gold_example({"id": task.get("id"), "data": task.get("data"), "annotations": [{"result": result}]},
                         spec, max_chars)
    if not isinstance(found, Example):
        return None
    if spec.kind == CLASSIFICATION:
        return tuple(sorted(spec.labels[i] for i in found.label_ids))
    return tuple(sorted(_trim(found.text, s, e, label) for s, e, label in found.spans))


def _trim(text: str, start: int, end: int, label: str) -> tuple[int, int, str]:
    """A span without surrounding blanks: an annotator's trailing space is not a different entity."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end, label


def _created_at(annotation: dict) -> float:
    raw = annotation.get("created_at")
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return time.time()  # after the creation: at worst a prediction is judged that could have been newer


def _pairs(payload: dict) -> list[tuple[dict, dict]]:
    """(annotation, task) of an ANNOTATION(S)_CREATED / UPDATED payload; ANNOTATIONS_CREATED carries lists."""
    anns, tasks = payload.get("annotation"), payload.get("task")
    anns = [a for a in (anns if isinstance(anns, list) else [anns]) if isinstance(a, dict)]
    tasks = [t for t in (tasks if isinstance(tasks, list) else [tasks]) if isinstance(t, dict)]
    by_id = {t.get("id"): t for t in tasks}
    out = []
    for ann in anns:
        tid = ann.get("task")
        tid = tid.get("id") if isinstance(tid, dict) else tid
        task = by_id.get(tid) or (tasks[0] if len(anns) == 1 and tasks else None)
        if task is not None:
            out.append((ann, task))
    return out


def _judge(qs: QualityStore, preds: PredictionStore, spec: TaskSpec, project: str, ann: dict, task: dict,
           max_chars: int) -> str:
    """Record one annotation's outcome; returns what happened ("recorded", "updated" or why it was skipped)."""
    tid = task.get("id") if valid_task_id(task.get("id")) else ann.get("task")
    if not valid_task_id(tid):
        return "no task id"
    if ann.get("was_cancelled"):
        return "cancelled (skipped task)"
    gold = targets(spec, task, ann.get("result") if isinstance(ann.get("result"), list) else [], max_chars)
    if gold is None:
        return "annotation has no usable result"
    ann_id = ann.get("id") if valid_task_id(ann.get("id")) else None
    at = _created_at(ann)
    known = qs.get(tid)
    if known is not None and known["kind"] == spec.kind:
        qs.put(tid, ann_id, known["model_version"], known["iteration"], spec.kind, _tuple(known["pred"]), gold, at)
        return "updated"
    stored = preds.get([tid]).get(tid)
    if stored is None:
        return "no prediction of this backend"
    version, _, result = stored
    key, named = own_version_key(project, version), version_time(version)
    if key is None or named is None:
        return f"prediction of {version!r} is not from a trained version of this backend"
    if named > at:
        return "the prediction's model was trained after the annotation was made"
    pred = targets(spec, task, result, max_chars)
    if pred is None:
        return "stored prediction unreadable"
    qs.put(tid, ann_id, version, key[0], spec.kind, pred, gold, at)
    return "recorded"


def record_annotation(store: ModelStore, project: str, payload: dict, max_chars: int) -> dict[str, int]:
    """Bookkeeping for one annotation webhook: outcome counts by what happened. Never raises."""
    action = payload.get("action")
    try:
        qs = QualityStore(store.project_dir(project))
        if action in DELETE_ACTIONS:
            anns = payload.get("annotations") or [payload.get("annotation")]
            ids = [a.get("id") for a in anns if isinstance(a, dict) and valid_task_id(a.get("id"))]
            return {"deleted": qs.delete_annotations(ids)} if ids and qs.path.exists() else {}
        if action not in JUDGED_ACTIONS:
            return {}
        spec = project_spec(store, project, payload)
        if spec is None:
            return {"no label config": 1}
        preds = PredictionStore(store.project_dir(project) / "predictions.sqlite")
        counts: dict[str, int] = {}
        for ann, task in _pairs(payload):
            what = _judge(qs, preds, spec, project, ann, task, max_chars)
            counts[what] = counts.get(what, 0) + 1
        if set(counts) - {"recorded", "updated"}:
            log.info("project %s: %s not judged for the prequential curve: %s", project, action, counts)
        return counts
    except (sqlite3.Error, OSError, ValueError) as exc:
        log.warning("project %s: %s not recorded for the prequential curve: %s", project, action, exc)
        return {"error": 1}
