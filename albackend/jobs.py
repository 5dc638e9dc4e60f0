"""Training job queue: RQ when REDIS_URL is set, an in-process worker thread otherwise.

Either way a burst of events for one project yields at most one queued plus one running job: a new
event is dropped while a job for the project is still queued, because that job will fetch every
annotation when it starts. Jobs for one project never run concurrently (a per-project lock: Redis with
RQ, a file lock in-process), so any number of RQ workers can share one model store.
"""
from __future__ import annotations

import fcntl
import logging
import queue
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from albackend.settings import Settings
from albackend.store import ModelStore

log = logging.getLogger(__name__)
JOB_FUNC = "albackend.training.training_job"
PENDING_KEY = "albackend:pending:{}"
LOCK_KEY = "albackend:lock:{}"


def new_job_id(project: str) -> str:
    return f"train-{project}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def queued_record(job_id: str, project: str, trigger: str) -> dict:
    return {"id": job_id, "project": project, "state": "queued", "trigger": trigger,
            "queued_at": time.time(), "started_at": None, "finished_at": None, "duration_s": None,
            "reason": None, "stats": {}}


class InProcessQueue:
    """One daemon thread running jobs in order; the default without Redis (use one gunicorn worker)."""

    def __init__(self, settings: Settings, store: ModelStore, runner: Callable[[str, str], dict] | None = None):
        self.settings, self.store = settings, store
        self._runner = runner
        self._q: queue.Queue = queue.Queue()
        self._pending: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="training-worker", daemon=True)
        self._thread.start()

    def submit(self, project: str, trigger: str) -> tuple[str, bool]:
        """(job id, newly queued?)."""
        with self._lock:
            if project in self._pending:
                return self._pending[project], False
            job_id = new_job_id(project)
            self._pending[project] = job_id
        self.store.write_job(project, queued_record(job_id, project, trigger))
        self._q.put((project, job_id))
        return job_id, True

    def _loop(self) -> None:
        while True:
            project, job_id = self._q.get()
            with self._lock:
                self._pending.pop(project, None)
            try:
                if self._runner is not None:
                    self._runner(project, job_id)
                else:  # the app's settings, not the environment's: create_app(settings) may differ from it
                    from albackend.training import training_job
                    training_job(project, job_id, settings=self.settings)
            except Exception:  # the job records its own failure; the worker thread must survive
                log.exception("training job %s crashed", job_id)

    def reconcile(self, record: dict) -> dict:
        return record


class RQQueue:
    """Jobs on an RQ queue; dedup and the per-project lock live in Redis."""

    def __init__(self, settings: Settings, store: ModelStore):
        from redis import Redis
        from rq import Queue

        self.settings, self.store = settings, store
        self.redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.queue = Queue(settings.rq_queue, connection=self.redis)

    def submit(self, project: str, trigger: str) -> tuple[str, bool]:
        job_id = new_job_id(project)
        if not self.redis.set(PENDING_KEY.format(project), job_id, nx=True, ex=6 * 3600):
            existing = self.redis.get(PENDING_KEY.format(project))
            return (existing.decode() if existing else job_id), False
        self.store.write_job(project, queued_record(job_id, project, trigger))
        try:
            self.queue.enqueue(JOB_FUNC, project, job_id, job_id=job_id, job_timeout=6 * 3600,
                               result_ttl=86400, failure_ttl=7 * 86400, description=f"train project {project}")
        except Exception:
            self.redis.delete(PENDING_KEY.format(project))
            raise
        return job_id, True

    def reconcile(self, record: dict) -> dict:
        """A worker killed mid-job cannot write 'failed'; ask RQ what became of it."""
        if record.get("state") not in ("queued", "running"):
            return record
        from rq.job import Job
        from rq.exceptions import NoSuchJobError

        try:
            job = Job.fetch(record["id"], connection=self.redis)
            status = job.get_status(refresh=True)
        except NoSuchJobError:
            return {**record, "state": "failed", "reason": "job vanished from the queue (expired or Redis reset)"}
        except Exception:  # Redis down: show what the record says
            return record
        status = getattr(status, "value", status)
        if status in ("failed", "stopped", "canceled"):
            exc = (job.latest_result().exc_string if job.latest_result() else "") or ""
            last = exc.strip().splitlines()[-1] if exc.strip() else f"RQ reports the job {status}"
            return {**record, "state": "failed", "reason": last}
        return record


def redis_client(settings: Settings):
    from redis import Redis

    return Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)


def rq_queue(settings: Settings):
    from rq import Queue

    return Queue(settings.rq_queue, connection=redis_client(settings))


def make_queue(settings: Settings, store: ModelStore):
    return RQQueue(settings, store) if settings.redis_url else InProcessQueue(settings, store)


def clear_pending(settings: Settings, project: str, job_id: str) -> None:
    """Called when a job starts: a new event may now queue the next retrain."""
    if not settings.redis_url:
        return
    from redis import Redis

    r = Redis.from_url(settings.redis_url)
    key = PENDING_KEY.format(project)
    if (r.get(key) or b"").decode() == job_id:
        r.delete(key)


@contextmanager
def project_lock(settings: Settings, store: ModelStore, project: str, timeout: float = 6 * 3600) -> Iterator[None]:
    """Serialise training per project, across processes (file lock) and machines (Redis lock)."""
    if settings.redis_url:
        from redis import Redis

        lock = Redis.from_url(settings.redis_url).lock(LOCK_KEY.format(project), timeout=timeout,
                                                       blocking_timeout=timeout)
        if not lock.acquire():
            raise TimeoutError(f"another training job holds project {project} for too long")
        try:
            yield
        finally:
            try:
                lock.release()
            except Exception:
                log.warning("lock for project %s expired before release", project)
        return
    path = store.project_dir(project) / "train.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

