"""Last prediction per task (result JSON, score, model version), in a per-project SQLite file.

The UPS score cache only ranks tasks; serving a large /predict batch from the UPS subsample also needs
each skipped task's last result, which this store keeps. SQLite in WAL mode lets every web and worker
process on the machine read while a job writes.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

from albackend.services import sqlitedb


_SCHEMA = ("CREATE TABLE IF NOT EXISTS predictions (task_id INTEGER PRIMARY KEY, model_version TEXT, "
           "score REAL, result TEXT)",)


class PredictionStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        return sqlitedb.connect(self.path, _SCHEMA)

    def put(self, rows: Iterable[tuple[int, str, float, list]]) -> None:
        """rows of (task_id, model_version, score, result items)."""
        con = self._connect()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?)",
                                ((int(t), v, float(s), json.dumps(r)) for t, v, s, r in rows))
        finally:
            con.close()

    def get(self, task_ids: Sequence[int]) -> dict[int, tuple[str, float, list]]:
        if not task_ids:
            return {}
        con = self._connect()
        out: dict[int, tuple[str, float, list]] = {}
        try:
            ids = [int(t) for t in task_ids]
            for i in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                chunk = ids[i:i + 900]
                q = f"SELECT task_id, model_version, score, result FROM predictions WHERE task_id IN ({','.join('?' * len(chunk))})"
                for tid, version, score, result in con.execute(q, chunk):
                    out[tid] = (version, score, json.loads(result))
        finally:
            con.close()
        return out
