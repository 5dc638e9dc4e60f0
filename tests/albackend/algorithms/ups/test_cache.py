"""ScoreCache: persistence (round trip, atomic, corrupt files), pool sync, update/lookup, select."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from albackend.algorithms.ups.cache import ScoreCache
from albackend.algorithms.ups.sampler import keep_probabilities


def make_cache() -> ScoreCache:
    c = ScoreCache.empty()
    c.sync_pool(np.array([40, 10, 30, 20, 50]))
    c.update(np.array([10, 20, 30]), np.array([0.9, 0.1, 0.5]), iteration=2, model_version="v-2")
    c.update(np.array([30]), np.array([0.7]), iteration=3, model_version="v-3")
    return c


def assert_same(a: ScoreCache, b: ScoreCache) -> None:
    np.testing.assert_array_equal(a.task_ids, b.task_ids)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)  # NaN == NaN here
    np.testing.assert_array_equal(a.iteration, b.iteration)
    np.testing.assert_array_equal(a.version_idx, b.version_idx)
    assert a.versions == b.versions


def test_empty_cache() -> None:
    c = ScoreCache.empty()
    assert len(c) == 0 and c.nbytes == 0
    assert c.select(0.1, 0.01, np.random.default_rng(0), full=False).size == 0
    unc, ver = c.lookup(np.array([1, 2]))
    assert np.isnan(unc).all() and ver.tolist() == [None, None]


def test_columns_dtypes_and_contents() -> None:
    c = make_cache()
    assert c.task_ids.dtype == np.int64 and c.uncertainty.dtype == np.float32
    assert c.iteration.dtype == np.int32 and c.version_idx.dtype == np.int16
    assert c.task_ids.tolist() == [10, 20, 30, 40, 50]
    np.testing.assert_allclose(c.uncertainty[:3], [0.9, 0.1, 0.7], rtol=1e-6)
    assert np.isnan(c.uncertainty[3:]).all()
    assert c.iteration.tolist() == [2, 2, 3, -1, -1]
    assert c.versions == ["v-2", "v-3"]
    assert c.version_idx.tolist() == [0, 0, 1, -1, -1]
    assert c.nbytes == 5 * 18 + len("v-2") + len("v-3")


def test_sync_pool_adds_and_removes() -> None:
    c = make_cache()
    added, removed = c.sync_pool(np.array([60, 30, 10, 70, 60]))  # 20, 40, 50 gone; 60, 70 new; dup ignored
    assert (added, removed) == (2, 3)
    assert c.task_ids.tolist() == [10, 30, 60, 70]
    unc, ver = c.lookup(np.array([10, 30, 60, 70]))
    np.testing.assert_allclose(unc[:2], [0.9, 0.7], rtol=1e-6)
    assert np.isnan(unc[2:]).all()
    assert ver.tolist() == ["v-2", "v-3", None, None]
    assert c.iteration.tolist() == [2, 3, -1, -1]
    assert c.sync_pool(np.array([10, 30, 60, 70])) == (0, 0)


def test_sync_pool_compacts_unused_versions() -> None:
    c = make_cache()
    c.sync_pool(np.array([30, 40]))  # only the v-3 task survives
    assert c.versions == ["v-3"]
    assert c.lookup(np.array([30, 40]))[1].tolist() == ["v-3", None]
    c.sync_pool(np.array([], dtype=np.int64))
    assert len(c) == 0 and c.versions == []


@settings(max_examples=40, deadline=None)
@given(
    old=st.sets(st.integers(0, 200), max_size=80),
    new=st.sets(st.integers(0, 200), max_size=80),
)
def test_sync_pool_matches_set_arithmetic(old: set[int], new: set[int]) -> None:
    c = ScoreCache.empty()
    c.sync_pool(np.array(sorted(old), dtype=np.int64))
    ids = np.array(sorted(old), dtype=np.int64)
    c.update(ids, ids.astype(np.float32) / 1000, iteration=1, model_version="m")
    added, removed = c.sync_pool(np.array(list(new), dtype=np.int64))
    assert (added, removed) == (len(new - old), len(old - new))
    assert c.task_ids.tolist() == sorted(new)
    for tid, u in zip(c.task_ids.tolist(), c.uncertainty.tolist()):
        if tid in old:
            assert u == pytest.approx(tid / 1000)
        else:
            assert np.isnan(u)


def test_update_inserts_unknown_ids_in_order_and_last_duplicate_wins() -> None:
    c = make_cache()
    c.update(np.array([35, 5, 35, 55, 20]), np.array([0.3, 0.2, 0.4, 0.6, 0.25]), iteration=4, model_version="v-4")
    assert c.task_ids.tolist() == [5, 10, 20, 30, 35, 40, 50, 55]
    unc, ver = c.lookup(np.array([5, 20, 35, 55, 10, 99]))
    np.testing.assert_allclose(unc[:5], [0.2, 0.25, 0.4, 0.6, 0.9], rtol=1e-6)
    assert np.isnan(unc[5])
    assert ver.tolist() == ["v-4", "v-4", "v-4", "v-4", "v-2", None]
    assert c.iteration[c.task_ids == 35].item() == 4
    assert c.versions == ["v-2", "v-3", "v-4"]


def test_update_validates_shapes() -> None:
    c = make_cache()
    with pytest.raises(ValueError):
        c.update(np.array([1, 2]), np.array([0.1]), iteration=1, model_version="x")
    with pytest.raises(ValueError):
        c.update(np.array([1.5]), np.array([0.1]), iteration=1, model_version="x")
    c.update(np.array([], dtype=np.int64), np.array([], dtype=np.float32), iteration=1, model_version="x")
    assert c.versions == ["v-2", "v-3"]  # an empty update registers no version


def test_select_full_and_subsample() -> None:
    n = 2000
    c = ScoreCache.empty()
    ids = np.arange(n, dtype=np.int64) * 3 + 7
    c.sync_pool(ids)
    u = np.random.default_rng(0).random(n).astype(np.float32)
    u[:100] = np.nan  # never scored
    c.update(ids[100:], u[100:], iteration=5, model_version="v")
    full = c.select(0.1, 0.01, np.random.default_rng(0), full=True)
    assert np.array_equal(full, ids)
    full[0] = -1  # a copy, not a view into the cache
    assert c.task_ids[0] == 7
    sel = c.select(0.1, 0.0, np.random.default_rng(0), full=False)
    expected_top = ids[100:][np.argsort(-u[100:], kind="stable")[: int(keep_probabilities(1900, 0.1, 0).sum())]]
    assert set(sel.tolist()) == set(ids[:100].tolist()) | set(expected_top.tolist())
    assert np.all(np.diff(sel) > 0)
    a = c.select(0.1, 0.05, np.random.default_rng(9), full=False)
    b = c.select(0.1, 0.05, np.random.default_rng(9), full=False)
    assert np.array_equal(a, b) and set(expected_top.tolist()) <= set(a.tolist())


# --- persistence -------------------------------------------------------------------------------------------


def test_save_load_round_trip_preserves_everything(tmp_path: Path) -> None:
    c = make_cache()
    c.update(np.array([60]), np.array([0.5]), iteration=7, model_version="ünïcode/版本 2024-01-01T00:00")
    path = tmp_path / "nested" / "ups_cache.npz"
    c.save(path)
    loaded = ScoreCache.load(path)
    assert_same(c, loaded)
    assert loaded.versions[-1] == "ünïcode/版本 2024-01-01T00:00"
    assert loaded.lookup(np.array([60]))[1].tolist() == ["ünïcode/版本 2024-01-01T00:00"]
    # the loaded cache is writable and independent of the file
    loaded.update(np.array([10]), np.array([0.0]), iteration=8, model_version="v-8")
    assert_same(c, ScoreCache.load(path))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "cache.npz"
    make_cache().save(path)
    c2 = make_cache()
    c2.sync_pool(np.array([1, 2, 3]))
    c2.save(path)  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["cache.npz"]
    assert ScoreCache.load(path).task_ids.tolist() == [1, 2, 3]


def test_failed_save_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cache.npz"
    make_cache().save(path)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        ScoreCache.empty().save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["cache.npz"]


def test_load_missing_file_is_empty(tmp_path: Path) -> None:
    c = ScoreCache.load(tmp_path / "nope.npz")
    assert len(c) == 0 and c.versions == []


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip file at all", b"PK\x03\x04truncated zip"],
)
def test_load_corrupt_file_warns_and_returns_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "cache.npz"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="albackend.algorithms.ups.cache"):
        c = ScoreCache.load(path)
    assert len(c) == 0
    assert any("unreadable" in r.getMessage() for r in caplog.records)


def test_load_truncated_real_file_returns_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cache.npz"
    make_cache().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="albackend.algorithms.ups.cache"):
        assert len(ScoreCache.load(path)) == 0
    assert caplog.records


def test_load_rejects_inconsistent_or_pickled_content(tmp_path: Path) -> None:
    bad_len = tmp_path / "bad_len.npz"
    np.savez(bad_len, format=np.array(1), task_ids=np.arange(3), uncertainty=np.zeros(2, np.float32),
             iteration=np.zeros(3, np.int32), version_idx=np.zeros(3, np.int16), versions=np.array('["a"]'))
    unsorted = tmp_path / "unsorted.npz"
    np.savez(unsorted, format=np.array(1), task_ids=np.array([3, 1]), uncertainty=np.zeros(2, np.float32),
             iteration=np.zeros(2, np.int32), version_idx=np.zeros(2, np.int16), versions=np.array('["a"]'))
    bad_vidx = tmp_path / "bad_vidx.npz"
    np.savez(bad_vidx, format=np.array(1), task_ids=np.array([1, 3]), uncertainty=np.zeros(2, np.float32),
             iteration=np.zeros(2, np.int32), version_idx=np.array([0, 5], np.int16), versions=np.array('["a"]'))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array(1), task_ids=np.array([1]), uncertainty=np.zeros(1, np.float32),
             iteration=np.zeros(1, np.int32), version_idx=np.zeros(1, np.int16),
             versions=np.array([["a"]], dtype=object))
    future = tmp_path / "future.npz"
    np.savez(future, format=np.array(99))
    for p in (bad_len, unsorted, bad_vidx, pickled, future):
        assert len(ScoreCache.load(p)) == 0, p.name


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        ScoreCache(np.array([2, 1]), np.zeros(2), np.zeros(2), np.zeros(2), ["a"])
    with pytest.raises(ValueError):
        ScoreCache(np.array([1, 1]), np.zeros(2), np.zeros(2), np.zeros(2), ["a"])
    with pytest.raises(ValueError):
        ScoreCache(np.array([1, 2]), np.zeros(2), np.zeros(2), np.array([0, 1]), ["a"])


def test_large_pool_select_update_is_vectorised() -> None:
    # 200k tasks end to end; guards against accidental per-task Python loops (which would take seconds).
    import time

    n = 200_000
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(3 * n, size=n, replace=False)).astype(np.int64)
    c = ScoreCache.empty()
    c.sync_pool(ids)
    c.update(ids, rng.random(n).astype(np.float32), iteration=1, model_version="v1")
    t0 = time.perf_counter()
    sel = c.select(0.1, 0.01, rng, full=False)
    c.update(sel, rng.random(sel.size).astype(np.float32), iteration=2, model_version="v2")
    elapsed = time.perf_counter() - t0
    assert 0.1 * n <= sel.size <= 0.12 * n
    assert elapsed < 1.0
    assert (c.version_idx == 1).sum() == sel.size
