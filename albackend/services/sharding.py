"""Scale a rescoring out over RQ workers: each large chunk of the AL round is split into shards that any worker
sharing MODEL_DIR and Redis scores in parallel.

Why: on a full-pool iteration scoring dominates the retrain, and it parallelises perfectly. The job that owns the
round scores shards too (so a single worker never waits on helpers that cannot start) and re-runs any shard whose
helper died: a shard counts as done only once its result file is complete, so a worker killed mid-shard loses
nothing but its time.

Protocol for one chunk (Redis keys under ``albackend:shards:<round>``): ``todo`` — list of shard numbers not
claimed yet; ``claims`` — hash shard → "<job id> <unix time>". Shard inputs and results live in
``MODEL_DIR/projects/<p>/shards/<round>/`` (``<i>.ids.npy``, ``<i>.npz`` written atomically).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
from redis import Redis
from rq import Queue, get_current_job

from albackend.domain.examples import TaskError, task_text
from albackend.services.jobs import rq_status
from albackend.models.acquisition import AcquisitionModel
from albackend.services.predictions import load_mahalanobis
from albackend.adapters.redisconn import connect
from albackend.services.rescoring import score_texts
from albackend.settings import Settings
from albackend.services.store import ModelStore
from albackend.services.taskstore import TaskStore

log = logging.getLogger(__name__)
SHARD_JOB = "albackend.adapters.rqjobs.score_shards"
MIN_CLAIM_TIMEOUT_S = 120.0
ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, list]]


def _keys(round_id: str) -> tuple[str, str]:
    return f"albackend:shards:{round_id}:todo", f"albackend:shards:{round_id}:claims"


def write_result(directory: Path, i: int, unc: np.ndarray, results: list[dict]) -> None:
    tmp = directory / f".{i}.{uuid.uuid4().hex}.npz"
    np.savez(tmp, unc=np.asarray(unc, np.float32), results=np.array(json.dumps(results)))
    os.replace(tmp, directory / f"{i}.npz")


def read_result(directory: Path, i: int) -> tuple[np.ndarray, list[dict]] | None:
    try:
        with np.load(directory / f"{i}.npz", allow_pickle=False) as z:
            return np.array(z["unc"]), json.loads(str(z["results"][()]))
    except (OSError, ValueError, KeyError):
        return None


def claim_next(redis: Redis, round_id: str, owner: str) -> int | None:
    todo, claims = _keys(round_id)
    raw = redis.lpop(todo)
    if raw is None:
        return None
    redis.hset(claims, raw, f"{owner} {time.time()}")
    return int(raw)


class ShardedScorer:
    """Wraps the round owner's local scorer: chunks of at least two shards are scored by all workers."""

    def __init__(self, settings: Settings, store: ModelStore, project: str, version: str, local: ScoreFn,
                 redis: Redis, queue: Queue):
        self.settings, self.store, self.project, self.version = settings, store, project, version
        self.local, self.redis, self.queue = local, redis, queue
        self.figures = {"shards": 0, "by_helpers": 0, "rerun": 0}

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, list]:
        size = self.settings.score_shard_size
        if size <= 0 or len(ids) < 2 * size:
            return self.local(ids)
        shards = [ids[i:i + size] for i in range(0, len(ids), size)]
        round_id = f"{self.project}-{uuid.uuid4().hex[:12]}"
        directory = self.store.project_dir(self.project) / "shards" / round_id
        directory.mkdir(parents=True)
        try:
            for i, shard in enumerate(shards):
                np.save(directory / f"{i}.ids.npy", shard)
            todo, claims = _keys(round_id)
            self.redis.rpush(todo, *range(len(shards)))
            helpers = [self.queue.enqueue(SHARD_JOB, self.project, self.version, round_id, job_timeout=3600,
                                          result_ttl=600, failure_ttl=86400, description=f"score shards {round_id}")
                       for _ in range(len(shards) - 1)]
            self._work(round_id, directory, shards)
            for job in helpers:  # still queued: nothing left for them
                try:
                    job.cancel()
                except Exception:  # already started or gone: it finds the list empty and returns
                    pass
            self.redis.delete(todo, claims)
            parts = [read_result(directory, i) for i in range(len(shards))]
            return (np.concatenate([p[0] for p in parts]), [r for p in parts for r in p[1]])
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _work(self, round_id: str, directory: Path, shards: list[np.ndarray]) -> None:
        """Score shards until every result exists; re-run a shard whose helper died or stalled."""
        self.figures["shards"] += len(shards)
        shard_s: list[float] = []
        while True:
            i = claim_next(self.redis, round_id, "owner")
            if i is not None:
                t = time.perf_counter()
                write_result(directory, i, *self.local(shards[i]))
                shard_s.append(time.perf_counter() - t)
                continue
            missing = [i for i in range(len(shards)) if not (directory / f"{i}.npz").exists()]
            if not missing:
                self.figures["by_helpers"] += len(shards) - len(shard_s)
                return
            timeout = max(MIN_CLAIM_TIMEOUT_S, 10 * max(shard_s, default=0.0))
            for i in missing:
                if self._abandoned(round_id, i, timeout):
                    log.warning("project %s: shard %d of %s was abandoned by its worker; scoring it here",
                                self.project, i, round_id)
                    self.figures["rerun"] += 1
                    write_result(directory, i, *self.local(shards[i]))
            time.sleep(0.1)

    def _abandoned(self, round_id: str, i: int, timeout: float) -> bool:
        claim = self.redis.hget(_keys(round_id)[1], i)
        if claim is None:
            return False
        owner, _, since = claim.decode().partition(" ")
        if time.time() - float(since) > timeout:
            return True
        return rq_status(self.redis, owner) in (None, "failed", "stopped", "canceled")


def shard_job(project: str, version: str, round_id: str) -> dict:
    """RQ helper: score shards of one round with the published model ``version`` until none is left."""
    settings = Settings.from_env()
    store = ModelStore(settings.model_dir)
    redis = connect(settings.redis_url, max(settings.redis_timeout, 10.0))
    directory = store.project_dir(project) / "shards" / round_id
    job = get_current_job()
    owner = job.id if job is not None else f"pid{os.getpid()}"
    if not redis.llen(_keys(round_id)[0]):
        return {"shards": 0}
    path = store.project_dir(project) / "versions" / version
    model = AcquisitionModel.load(path, device=settings.device, scoring_precision=settings.scoring_precision)
    fit = load_mahalanobis(path)
    tasks = TaskStore(store.project_dir(project))
    strategy = model.meta.get("strategy", "least_confident")
    seed = settings.seed + int(model.meta.get("iteration") or 0)
    done = 0
    while (i := claim_next(redis, round_id, owner)) is not None:
        ids = np.load(directory / f"{i}.ids.npy")
        data = tasks.data_by_id(ids.tolist())
        texts = []
        for t in ids.tolist():
            try:
                texts.append(task_text({"data": data.get(t)}, model.spec, settings.max_text_chars))
            except TaskError:
                texts.append("")  # the owner only shards tasks that had text; a task edited since scores empty
        unc, results, _ = score_texts(model, texts, strategy, version, settings.infer_batch_size, fit, seed)
        write_result(directory, i, unc, results)
        done += 1
    return {"shards": done}
