"""Tests for albackend.services.store (versioned model dirs, atomic publish, job records) and
albackend.services.predstore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from albackend.services import store as store_mod
from albackend.services.predstore import PredictionStore
from albackend.services.store import KEEP_VERSIONS, ModelStore, atomic_write_text, project_key

REPO = Path(__file__).resolve().parents[3]


def build(store: ModelStore, project, name: str, iteration: int, payload: str = "weights") -> dict:
    with store.staging(project) as staged:
        (staged / "model.safetensors").write_text(payload)
        (staged / "config.json").write_text("{}")
        return store.publish(project, staged, name, iteration)


# ------------------------------------------------------------------------------------------ project_key


@pytest.mark.parametrize("raw, key", [("12.1712345", "12"), ("12", "12"), (12, "12"), ("007", "7"),
                                      ("3.1764000000.5", "3"), ("9" * 18, "9" * 18)])
def test_project_key(raw, key):
    assert project_key(raw) == key


@pytest.mark.parametrize("raw", ["../x", "..", "", "   ", "a/b", "x/../y", "/etc", "a b", "a\\b", "é",
                                 # aliases, non-finite floats, option-like names and over-long ids (issue 10)
                                 "1.abc", "1.", ".5", 1.5, float("inf"), "1e400", "-rf", "-1", -1, True, None,
                                 "1" * 300, 10**300, -(2**63), "my-proj_1", " 7 ", "٣"])
def test_project_key_rejects(raw):
    with pytest.raises(ValueError, match="invalid project id"):
        project_key(raw)


def test_project_dir_never_escapes_root(tmp_path):
    store = ModelStore(tmp_path)
    assert store.project_dir("12.999") == tmp_path / "projects" / "12"
    with pytest.raises(ValueError):
        store.project_dir("../../etc")


# -------------------------------------------------------------------------------------------- publish


def test_publish_points_current_at_a_complete_dir(tmp_path):
    store = ModelStore(tmp_path)
    assert store.current("1") is None and store.current_version("1") is None
    info = build(store, "1", "v0", 0, payload="first")
    cur = store.current("1.1712345")
    assert cur["model_version"] == "v0" and cur["iteration"] == 0
    assert cur["path"] == info["path"]
    assert (Path(cur["path"]) / "model.safetensors").read_text() == "first"
    assert (Path(cur["path"]) / "config.json").exists()
    assert store.versions("1") == ["v0"]
    assert store.all_projects() == ["1"]
    # the staging area holds nothing once published
    assert list((store.project_dir("1") / "tmp").iterdir()) == []


def test_failed_build_never_becomes_visible(tmp_path):
    store = ModelStore(tmp_path)
    build(store, "1", "good", 0, payload="good")
    with pytest.raises(RuntimeError):
        with store.staging("1") as staged:
            (staged / "model.safetensors").write_text("half")
            raise RuntimeError("crash during save")
    assert store.current_version("1") == "good"
    assert store.versions("1") == ["good"]
    assert (Path(store.current("1")["path"]) / "model.safetensors").read_text() == "good"
    assert list((store.project_dir("1") / "tmp").iterdir()) == []  # cleaned up


def test_publish_failure_keeps_previous_current(tmp_path):
    store = ModelStore(tmp_path)
    build(store, "1", "v0", 0, payload="old")
    before = (store.project_dir("1") / "CURRENT").read_text()
    # a clashing non-empty target: os.replace of a directory onto it fails before CURRENT is touched
    clash = store.project_dir("1") / "versions" / "v1"
    clash.mkdir()
    (clash / "junk").write_text("x")
    with pytest.raises(OSError):
        build(store, "1", "v1", 1, payload="new")
    assert (store.project_dir("1") / "CURRENT").read_text() == before
    assert store.current_version("1") == "v0"
    # a staged directory that vanished (crashed writer) also fails without touching CURRENT
    with pytest.raises(OSError):
        store.publish("1", store.project_dir("1") / "tmp" / "missing", "v2", 2)
    assert store.current_version("1") == "v0"


def test_staging_of_a_killed_process_is_never_read_and_is_swept(tmp_path):
    """A real crash: a process dies (os._exit, no cleanup) inside staging()."""
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[2]);"
        "from albackend.services.store import ModelStore;"
        "s = ModelStore(sys.argv[1]);"
        "cm = s.staging('5'); p = cm.__enter__();"
        "open(os.path.join(p, 'model.safetensors'), 'w').write('partial');"
        "os._exit(3)"
    )
    store = ModelStore(tmp_path)
    build(store, "5", "v0", 0)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(REPO)], timeout=60)
    assert proc.returncode == 3
    leftovers = list((store.project_dir("5") / "tmp").iterdir())
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").exists()
    assert store.current_version("5") == "v0"
    assert store.versions("5") == ["v0"]
    # fresh leftovers survive a publish (a job may still be writing), day-old ones are swept
    build(store, "5", "v1", 1)
    assert leftovers[0].exists()
    old = time.time() - 2 * 86400
    os.utime(leftovers[0], (old, old))
    build(store, "5", "v2", 2)
    assert not leftovers[0].exists()
    assert store.current_version("5") == "v2"


def test_current_ignores_corrupt_or_dangling_pointer(tmp_path):
    store = ModelStore(tmp_path)
    build(store, "1", "v0", 0)
    cur = store.project_dir("1") / "CURRENT"
    cur.write_text("{not json")
    assert store.current("1") is None
    cur.write_text(json.dumps({"model_version": "gone", "iteration": 3}))
    assert store.current("1") is None
    for damaged in ({"iteration": 3}, {"model_version": ""}, {"model_version": ".."}, {"model_version": 7},
                    {"model_version": "../../1/versions/v0"}, [], "v0", None):
        cur.write_text(json.dumps(damaged))
        assert store.current("1") is None, damaged
        assert store.current_version("1") is None


def test_pruning_keeps_the_newest_and_the_current(tmp_path):
    store = ModelStore(tmp_path)
    t = time.time() - 1000
    for i in range(5):
        build(store, "1", f"v{i}", i)
        os.utime(store.project_dir("1") / "versions" / f"v{i}", (t + i, t + i))
    build(store, "1", "v5", 5)
    assert len(store.versions("1")) == KEEP_VERSIONS
    assert store.versions("1")[-1] == "v5"
    assert store.current_version("1") == "v5"
    # the version being published is kept even when its directory looks oldest (mtime of an early save)
    with store.staging("1") as staged:
        (staged / "model.safetensors").write_text("w")
        os.utime(staged, (1, 1))
        store.publish("1", staged, "v6", 6)
    assert store.current_version("1") == "v6"
    assert "v6" in store.versions("1")
    assert (Path(store.current("1")["path"]) / "model.safetensors").exists()


def test_next_version_names_are_unique(tmp_path):
    store = ModelStore(tmp_path)
    names = {store.next_version_name("12.55", 3) for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("al-12-it3-") for n in names)


def test_atomic_write_text_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "CURRENT"
    atomic_write_text(target, "a")
    atomic_write_text(target, "b")
    assert target.read_text() == "b"
    assert [p.name for p in target.parent.iterdir()] == ["CURRENT"]


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "CURRENT"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    def fail(*a, **k):
        raise Boom()

    monkeypatch.setattr(store_mod.os, "replace", fail)
    with pytest.raises(Boom):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]


# ------------------------------------------------------------------------------------------ job records


def test_job_records_round_trip(tmp_path):
    store = ModelStore(tmp_path)
    assert store.jobs("1") == [] and store.read_job("1", "nope") is None
    for i in range(4):
        rec = {"id": f"train-1-{i}", "state": "finished", "stats": {"n": i, "ü": "✓"}, "t": Path("/x")}
        store.write_job("1.17000", rec)
        os.utime(store.project_dir("1") / "jobs" / f"train-1-{i}.json", (1000 + i, 1000 + i))
    got = store.read_job("1", "train-1-2")
    assert got == {"id": "train-1-2", "state": "finished", "stats": {"n": 2, "ü": "✓"}, "t": "/x"}
    assert [j["id"] for j in store.jobs("1")] == ["train-1-3", "train-1-2", "train-1-1", "train-1-0"]
    assert [j["id"] for j in store.jobs("1", limit=2)] == ["train-1-3", "train-1-2"]
    # a corrupt record is skipped, not fatal; ids cannot reach outside the jobs directory
    (store.project_dir("1") / "jobs" / "bad.json").write_text("{")
    assert len(store.jobs("1")) == 4
    assert store.read_job("1", "../../CURRENT") is None


# ----------------------------------------------------------------------------------- PredictionStore


def test_prediction_store_round_trip_many_ids(tmp_path):
    ps = PredictionStore(tmp_path / "p" / "predictions.sqlite")
    assert ps.get([]) == {}
    assert ps.get([1, 2]) == {}
    rows = [(i, "v1", i / 10, [{"value": {"choices": [f"c{i}"]}, "text": "éמ🙂"}]) for i in range(2500)]
    ps.put(rows)
    want = list(range(0, 2500, 2)) + [10_000, 10_001]  # 1252 ids: more than one 900-id chunk
    got = ps.get(want)
    assert len(got) == 1250
    assert 10_000 not in got
    assert got[1998] == ("v1", pytest.approx(199.8), [{"value": {"choices": ["c1998"]}, "text": "éמ🙂"}])
    # replace: a later prediction of a task wins
    ps.put([(4, "v2", 0.5, [])])
    assert ps.get([4, 6])[4] == ("v2", 0.5, [])
    assert ps.get([4, 6])[6][0] == "v1"
    # numpy ints and str ids are accepted
    import numpy as np

    assert set(ps.get(np.array([8, 10], dtype=np.int64).tolist())) == {8, 10}
    assert set(ps.get(["12"])) == {12}
