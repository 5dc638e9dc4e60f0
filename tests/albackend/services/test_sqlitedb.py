"""The stores' shared SQLite opener: schema and WAL once per file, and again for a file removed since."""
from __future__ import annotations

from contextlib import closing

from albackend.services import sqlitedb

SCHEMA = ("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)",)


def test_schema_and_wal_once_then_again_after_removal(tmp_path):
    path = tmp_path / "p" / "x.sqlite"
    with closing(sqlitedb.connect(path, SCHEMA)) as con, con:
        con.execute("INSERT INTO t VALUES (1, 'a')")
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with closing(sqlitedb.connect(path, SCHEMA)) as con:
        assert con.execute("SELECT v FROM t").fetchall() == [("a",)]
    for f in path.parent.iterdir():
        f.unlink()
    with closing(sqlitedb.connect(path, SCHEMA)) as con:
        assert con.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
