"""Per-project score cache for UPS: the last uncertainty of every unlabeled task, on disk as one ``.npz``.

Why: UPS ranks the pool by the *last* score each task got, which may be several iterations old, so the scores
must outlive a worker process and be visible to every worker sharing the model store. The cache is columnar
numpy (sorted by task id, 18 bytes per task) so that syncing with a pool of a million tasks, selecting and
updating are vectorised array operations, not Python loops. Writes are atomic (temp file + fsync + rename),
so a reader never sees a half-written file; a corrupt or unreadable file is treated as an empty cache (every
task becomes "never scored" and is rescored), never as a crash.

Concurrent writers are last-writer-wins: callers that may race (several training jobs of one project) must
serialise per project, which the training job queue does.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from albackend.algorithms.ups.sampler import ups_subsample

__all__ = ["ScoreCache"]

log = logging.getLogger(__name__)

_FORMAT = 1
_MAX_VERSIONS = int(np.iinfo(np.int16).max)  # version_idx is int16


def _as_ids(task_ids: np.ndarray | list[int]) -> np.ndarray:
    ids = np.asarray(task_ids)
    if ids.ndim != 1:
        raise ValueError(f"task ids must be 1-D, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"task ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _positions(sorted_ids: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query id in ``sorted_ids`` and whether it is there (index is clipped when absent)."""
    pos = np.searchsorted(sorted_ids, query)
    if sorted_ids.size == 0:
        return np.zeros(query.shape, dtype=np.intp), np.zeros(query.shape, dtype=bool)
    pos_c = np.minimum(pos, sorted_ids.size - 1)
    return pos_c, sorted_ids[pos_c] == query


class ScoreCache:
    """Columnar cache: ``task_ids`` (int64, sorted, unique), ``uncertainty`` (float32, NaN = not scored yet),
    ``iteration`` (int32, -1 = never), ``version_idx`` (int16 into ``versions``, -1 = none)."""

    __slots__ = ("task_ids", "uncertainty", "iteration", "version_idx", "versions")

    def __init__(
        self,
        task_ids: np.ndarray,
        uncertainty: np.ndarray,
        iteration: np.ndarray,
        version_idx: np.ndarray,
        versions: list[str],
    ) -> None:
        self.task_ids = np.ascontiguousarray(task_ids, dtype=np.int64)
        self.uncertainty = np.ascontiguousarray(uncertainty, dtype=np.float32)
        self.iteration = np.ascontiguousarray(iteration, dtype=np.int32)
        self.version_idx = np.ascontiguousarray(version_idx, dtype=np.int16)
        self.versions = [str(v) for v in versions]
        n = self.task_ids.shape[0]
        for name in ("task_ids", "uncertainty", "iteration", "version_idx"):
            arr = getattr(self, name)
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(f"ScoreCache.{name} must be 1-D of length {n}, got shape {arr.shape}")
        if n > 1 and not bool(np.all(self.task_ids[1:] > self.task_ids[:-1])):
            raise ValueError("ScoreCache.task_ids must be strictly increasing")
        if n and (int(self.version_idx.min()) < -1 or int(self.version_idx.max()) >= len(self.versions)):
            raise ValueError("ScoreCache.version_idx out of range of versions")

    # --- construction / persistence -------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> "ScoreCache":
        """A cache with no tasks (the state of a new project, or after an unreadable file)."""
        return cls(
            np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int32), np.empty(0, np.int16), []
        )

    @classmethod
    def load(cls, path: Path) -> "ScoreCache":
        """Read ``path``; missing -> empty; corrupt/unreadable -> warning + empty (scores are recomputable)."""
        path = Path(path)
        if not path.exists():
            return cls.empty()
        try:
            with np.load(path, allow_pickle=False) as z:
                fmt = int(z["format"])
                if fmt != _FORMAT:
                    raise ValueError(f"unsupported score cache format {fmt}")
                versions = json.loads(str(z["versions"][()]))
                if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
                    raise ValueError("versions is not a list of strings")
                return cls(
                    np.array(z["task_ids"]),
                    np.array(z["uncertainty"]),
                    np.array(z["iteration"]),
                    np.array(z["version_idx"]),
                    versions,
                )
        except Exception as exc:  # noqa: BLE001 - any unreadable cache means "start from scratch"
            log.warning("UPS score cache %s is unreadable (%s: %s); starting from an empty cache",
                        path, type(exc).__name__, exc)
            return cls.empty()

    def save(self, path: Path) -> None:
        """Atomically replace ``path``: temp file in the same directory, fsync, ``os.replace``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    format=np.array(_FORMAT, dtype=np.int32),
                    task_ids=self.task_ids,
                    uncertainty=self.uncertainty,
                    iteration=self.iteration,
                    version_idx=self.version_idx,
                    versions=np.array(json.dumps(self.versions)),  # 0-d unicode array: no pickle needed
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        try:  # make the rename itself durable; not possible on every platform/filesystem
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass

    # --- mutation --------------------------------------------------------------------------------------------

    def sync_pool(self, task_ids: np.ndarray) -> tuple[int, int]:
        """Make the cached task set equal to the current unlabeled pool; returns ``(added, removed)``.

        New tasks enter as never scored (NaN); tasks gone from the pool (annotated or deleted) are dropped.
        """
        pool = np.sort(_as_ids(task_ids))  # np.sort + mask: np.unique is ~100x slower on 1M int64 here
        if pool.size > 1:
            pool = pool[np.concatenate(([True], pool[1:] != pool[:-1]))]
        old_n = len(self)
        pos, found = _positions(self.task_ids, pool)
        n_found = int(np.count_nonzero(found))
        added, removed = pool.size - n_found, old_n - n_found
        if added == 0 and removed == 0:
            return 0, 0
        src = pos[found]
        unc = np.full(pool.size, np.nan, dtype=np.float32)
        it = np.full(pool.size, -1, dtype=np.int32)
        vi = np.full(pool.size, -1, dtype=np.int16)
        unc[found] = self.uncertainty[src]
        it[found] = self.iteration[src]
        vi[found] = self.version_idx[src]
        self.task_ids, self.uncertainty, self.iteration, self.version_idx = pool, unc, it, vi
        self._compact_versions()
        return added, removed

    def update(
        self, task_ids: np.ndarray, uncertainty: np.ndarray, iteration: int, model_version: str
    ) -> None:
        """Record fresh scores; ids not in the cache are inserted; for a repeated id the last value wins."""
        ids = _as_ids(task_ids)
        unc = np.asarray(uncertainty, dtype=np.float32)
        if unc.shape != ids.shape:
            raise ValueError(f"uncertainty shape {unc.shape} does not match task ids shape {ids.shape}")
        if ids.size == 0:
            return
        if not (np.iinfo(np.int32).min <= int(iteration) <= np.iinfo(np.int32).max):
            raise ValueError(f"iteration {iteration} does not fit int32")
        if not bool(np.all(ids[1:] > ids[:-1])):  # select() output is already sorted and unique
            # Sort the update (stable) and keep the last occurrence of each id.
            order = np.argsort(ids, kind="stable")
            ids, unc = ids[order], unc[order]
            last = np.ones(ids.size, dtype=bool)
            last[:-1] = ids[1:] != ids[:-1]
            ids, unc = ids[last], unc[last]

        vidx = self._version_index(str(model_version))
        pos, found = _positions(self.task_ids, ids)
        hit = pos[found]
        self.uncertainty[hit] = unc[found]
        self.iteration[hit] = int(iteration)
        self.version_idx[hit] = vidx
        if not found.all():
            new = ~found
            at = np.searchsorted(self.task_ids, ids[new])  # ids[new] sorted -> np.insert keeps order
            k = int(np.count_nonzero(new))
            self.task_ids = np.insert(self.task_ids, at, ids[new])
            self.uncertainty = np.insert(self.uncertainty, at, unc[new])
            self.iteration = np.insert(self.iteration, at, np.full(k, int(iteration), np.int32))
            self.version_idx = np.insert(self.version_idx, at, np.full(k, vidx, np.int16))

    # --- queries ---------------------------------------------------------------------------------------------

    def lookup(self, task_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For any ids: ``(uncertainty float32 with NaN when missing/unscored, object array of version|None)``."""
        ids = _as_ids(task_ids)
        pos, found = _positions(self.task_ids, ids)
        unc = np.full(ids.shape, np.nan, dtype=np.float32)
        unc[found] = self.uncertainty[pos[found]]
        vi = np.full(ids.shape, -1, dtype=np.intp)
        vi[found] = self.version_idx[pos[found]]
        table = np.empty(len(self.versions) + 1, dtype=object)  # last slot = None, so index -1 -> None
        table[: len(self.versions)] = self.versions
        return unc, table[vi]

    def select(
        self, gamma: float, temperature: float, rng: np.random.Generator, full: bool
    ) -> np.ndarray:
        """Task ids (sorted) to rescore this iteration: all of them when ``full``, else a UPS subsample."""
        if full:
            return self.task_ids.copy()
        return self.task_ids[ups_subsample(self.uncertainty, gamma, temperature, rng)]

    def __len__(self) -> int:
        return int(self.task_ids.shape[0])

    @property
    def nbytes(self) -> int:
        """In-memory size of the columns plus the version strings."""
        cols = self.task_ids.nbytes + self.uncertainty.nbytes + self.iteration.nbytes + self.version_idx.nbytes
        return int(cols + sum(len(v.encode()) for v in self.versions))

    def __repr__(self) -> str:
        scored = int(np.count_nonzero(~np.isnan(self.uncertainty)))
        return f"ScoreCache(tasks={len(self)}, scored={scored}, versions={len(self.versions)})"

    # --- internals -------------------------------------------------------------------------------------------

    def _version_index(self, version: str) -> int:
        try:
            return self.versions.index(version)
        except ValueError:
            pass
        if len(self.versions) >= _MAX_VERSIONS:
            self._compact_versions()
        if len(self.versions) >= _MAX_VERSIONS:
            raise ValueError(f"more than {_MAX_VERSIONS} distinct model versions referenced by one cache")
        self.versions.append(version)
        return len(self.versions) - 1

    def _compact_versions(self) -> None:
        """Drop versions no task refers to any more (keeps the int16 index from overflowing)."""
        if not self.versions:
            return
        used = np.bincount(self.version_idx.astype(np.intp) + 1, minlength=len(self.versions) + 1)[1:] > 0
        if used.all():
            return
        remap = np.full(len(self.versions) + 1, -1, dtype=np.int16)  # slot 0 maps -1 -> -1
        remap[1:][used] = np.arange(int(used.sum()), dtype=np.int16)
        self.version_idx = remap[self.version_idx.astype(np.intp) + 1]
        self.versions = [v for v, u in zip(self.versions, used) if u]
