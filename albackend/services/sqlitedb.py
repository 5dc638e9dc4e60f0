"""One way the backend's per-project SQLite files (task mirror, prediction store, prequential outcomes, fetched
texts) are opened: WAL mode and the schema are set up once per file and process, not on every connection.

Why: the stores open a connection per call (safe across threads and processes), and several calls sit on hot paths
(every annotation webhook, large /predict batches). Re-running PRAGMA journal_mode and CREATE TABLE on each of them
is a write-lock round trip per call for nothing: WAL mode is persistent and the tables exist after the first time.
A file removed since (a project reset) is set up again.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence

_ready: set[Path] = set()
_lock = threading.Lock()


def connect(path: Path, schema: Sequence[str], timeout: float = 30.0) -> sqlite3.Connection:
    """A connection to ``path`` (parent folders created), its WAL mode and ``schema`` applied once per process."""
    path = Path(path)
    if path not in _ready or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock:
            con = sqlite3.connect(path, timeout=timeout)
            try:
                with con:
                    con.execute("PRAGMA journal_mode=WAL")
                    for stmt in schema:
                        con.execute(stmt)
            finally:
                con.close()
            _ready.add(path)
    return sqlite3.connect(path, timeout=timeout)
