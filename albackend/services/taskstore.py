"""A local mirror of a project's tasks (data + latest annotations) in one SQLite file per project.

Why: re-reading every task of a 17k-100k task project from Label Studio on each retrain cost most of an
iteration, and the cost grew with every iteration because each task carried every prediction ever pushed.
With the mirror a retrain fetches only what changed (new tasks, tasks whose annotations changed, as reported
by webhooks) and checks the result against Label Studio's own counters; see `albackend.services.tasksync`.

Tables: ``tasks(id, data, annotations, n_annotations)`` — the task's ``data`` object and its annotation list as
JSON (NULL when none), ``n_annotations`` = non-cancelled annotations (what LS counts as
``total_annotations_number``); ``dirty(task_id)`` — tasks a webhook reported changed, not yet re-fetched;
``meta(key, value)`` — sync bookkeeping. WAL mode: web processes append to ``dirty`` while a job reads.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Iterable, Iterator

from albackend.services import sqlitedb

FILE_NAME = "tasks.sqlite"
_SQLITE_INT = (-(2**63), 2**63 - 1)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, data TEXT NOT NULL, annotations TEXT, "
    "n_annotations INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS dirty (task_id INTEGER PRIMARY KEY, at REAL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
)


def counted_annotations(task: dict) -> int:
    """Non-cancelled annotations with a result list: LS's ``total_annotations_number`` counts the same."""
    anns = task.get("annotations") or []
    return sum(1 for a in anns if isinstance(a, dict) and not a.get("was_cancelled"))


def valid_task_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _SQLITE_INT[0] <= value <= _SQLITE_INT[1]


class TaskStore:
    """The mirror of one project; every method opens its own connection (safe across threads/processes)."""

    def __init__(self, project_dir: Path):
        self.path = Path(project_dir) / FILE_NAME

    def _connect(self) -> sqlite3.Connection:
        con = sqlitedb.connect(self.path, _SCHEMA)
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    # --- tasks ------------------------------------------------------------------------------------------------
    def upsert(self, tasks: Iterable[dict], *, with_annotations: bool) -> int:
        """Insert or replace tasks. Without annotations (a task_only page) the stored annotations are kept."""
        rows = [(t["id"], json.dumps(t.get("data") if isinstance(t.get("data"), dict) else {}),
                 json.dumps(t.get("annotations")) if t.get("annotations") else None, counted_annotations(t))
                for t in tasks if isinstance(t, dict) and valid_task_id(t.get("id"))]
        with closing(self._connect()) as con, con:
            if with_annotations:
                con.executemany("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)", rows)
            else:
                con.executemany("INSERT INTO tasks (id, data) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
                                "data = excluded.data", [(r[0], r[1]) for r in rows])
        return len(rows)

    def replace_all(self, tasks: Iterable[dict]) -> int:
        """A full re-sync: the mirror becomes exactly ``tasks`` (annotations included)."""
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM tasks")
        return self.upsert(tasks, with_annotations=True)

    def iter_tasks(self) -> Iterator[dict]:
        """Every mirrored task as an LS-shaped dict ({id, data, annotations}), in id order."""
        with closing(self._connect()) as con:
            for tid, data, anns in con.execute("SELECT id, data, annotations FROM tasks ORDER BY id"):
                yield {"id": tid, "data": json.loads(data), "annotations": json.loads(anns) if anns else []}

    def data_by_id(self, task_ids: list[int]) -> dict[int, dict]:
        """The ``data`` object of each given task that is mirrored."""
        out: dict[int, dict] = {}
        with closing(self._connect()) as con:
            for i in range(0, len(task_ids), 900):  # SQLite's bound-parameter limit
                part = [int(t) for t in task_ids[i:i + 900]]
                q = f"SELECT id, data FROM tasks WHERE id IN ({','.join('?' * len(part))})"
                out.update((tid, json.loads(data)) for tid, data in con.execute(q, part))
        return out

    def counts(self) -> dict:
        with closing(self._connect()) as con:
            n, ann, max_id = con.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_annotations), 0), COALESCE(MAX(id), 0) FROM tasks").fetchone()
        return {"tasks": int(n), "annotations": int(ann), "max_id": int(max_id)}

    def annotated_ids(self) -> list[int]:
        with closing(self._connect()) as con:
            return [r[0] for r in con.execute("SELECT id FROM tasks WHERE annotations IS NOT NULL")]

    # --- the webhook journal --------------------------------------------------------------------------------
    def mark_dirty(self, task_ids: Iterable[int], at: float) -> int:
        """Remember tasks a webhook reported changed; returns how many are waiting now."""
        ids = [(t, at) for t in task_ids if valid_task_id(t)]
        with closing(self._connect()) as con, con:
            con.executemany("INSERT OR REPLACE INTO dirty VALUES (?, ?)", ids)
        return self.dirty_count()

    def dirty_count(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM dirty").fetchone()[0])

    def dirty(self) -> list[tuple[int, float]]:
        with closing(self._connect()) as con:
            return [(int(t), float(a)) for t, a in con.execute("SELECT task_id, at FROM dirty ORDER BY task_id")]

    def clear_dirty(self, entries: Iterable[tuple[int, float]]) -> None:
        """Forget journal entries that were fetched; an entry re-marked since (newer ``at``) stays."""
        with closing(self._connect()) as con, con:
            con.executemany("DELETE FROM dirty WHERE task_id = ? AND at <= ?", list(entries))

    # --- bookkeeping ----------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: object = None) -> object:
        with closing(self._connect()) as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, **values: object) -> None:
        with closing(self._connect()) as con, con:
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in values.items()])
