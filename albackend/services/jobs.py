"""Training job queue: RQ when REDIS_URL is set, an in-process worker thread otherwise; and the lifecycle
that keeps a crash from wedging a project.

Either way a burst of events for one project yields at most one queued plus one running job: a new
event is dropped while a job for the project is still queued, because that job will fetch every
annotation when it starts. Jobs for one project never run concurrently (a per-project lock: Redis with
RQ, a file lock in-process), so any number of RQ workers can share one model store.

Crash safety (a killed process can clean nothing up, so nothing it holds may outlive it for long):
- the Redis project lock has a 30 s TTL renewed by a heartbeat thread: a killed work horse frees it in 30 s;
  the file lock dies with its process;
- a running job touches ``jobs/<id>.beat`` every 5 s; /status turns a running record whose beat is older than
  30 s into ``failed`` ("the process running the job died"), and an in-process queued record whose web
  process is gone likewise;
- the pending mark is removed again when writing the record or enqueueing fails, and a pending mark that
  points at a job RQ no longer holds is ignored;
- Redis unreachable or slow: `QueueUnavailable` (HTTP 503 with the reason), every call bounded by
  REDIS_TIMEOUT (albackend.adapters.redisconn).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from albackend.services import backoff
from albackend.adapters.lsclient import LabelStudioError, redact
from albackend.adapters.redisconn import RedisError, connect
from albackend.settings import Settings
from albackend.services.store import ModelStore, json_default

log = logging.getLogger(__name__)
JOB_FUNC = "albackend.adapters.rqjobs.train"
PENDING_KEY = "albackend:pending:{}"
LOCK_KEY = "albackend:lock:{}"
PENDING_TTL_S = 6 * 3600
HEARTBEAT_S = 5.0
STALE_S = 30.0
LOCK_TTL_S = 30.0
_beats: dict[str, threading.Event] = {}
_beats_lock = threading.Lock()


class QueueUnavailable(RuntimeError):
    """The job cannot be queued now (Redis down or slow, the store not writable): the web answers 503."""


def new_job_id(project: str) -> str:
    return f"train-{project}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def queued_record(job_id: str, project: str, trigger: str, queue_kind: str = "rq") -> dict:
    return {"id": job_id, "project": project, "state": "queued", "trigger": trigger, "queue": queue_kind,
            "owner": owner(), "queued_at": time.time(), "started_at": None, "finished_at": None,
            "duration_s": None, "reason": None, "stats": {}}


def _write_queued(settings: Settings, store: ModelStore, record: dict) -> None:
    held = backoff.active(store, record["project"])
    if held:  # LS was unreachable moments ago: this job waits for the back-off instead of failing at once
        record.update(not_before=held["until"], reason=f"held until Label Studio is retried: {held['reason']}")
    try:
        store.write_job(record["project"], record)
        store.prune_jobs(record["project"], keep=settings.job_history)
    except OSError as exc:
        raise QueueUnavailable(f"cannot write the job record: {type(exc).__name__}: {exc}") from None


class InProcessQueue:
    """One daemon thread running jobs in order; the default without Redis (use one gunicorn worker)."""

    def __init__(self, settings: Settings, store: ModelStore, runner: Callable[[str, str], dict]):
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
        try:
            _write_queued(self.settings, self.store, queued_record(job_id, project, trigger, "in-process"))
        except BaseException:
            with self._lock:  # a mark without a record would answer "already queued" until restart
                if self._pending.get(project) == job_id:
                    del self._pending[project]
            raise
        delay = (backoff.active(self.store, project) or {"until": 0})["until"] - time.time()
        if delay > 0:  # released into the queue when the back-off ends; it stays the pending job meanwhile
            timer = threading.Timer(delay, self._q.put, ((project, job_id),))
            timer.daemon = True
            timer.start()
        else:
            self._q.put((project, job_id))
        return job_id, True

    def _loop(self) -> None:
        while True:
            project, job_id = self._q.get()
            with self._lock:
                self._pending.pop(project, None)
            try:
                self._runner(project, job_id)
            except Exception:  # the job records its own failure; the worker thread must survive
                log.exception("training job %s crashed", job_id)

    def reconcile(self, record: dict) -> dict:
        return reconcile_liveness(self.store, record)


class RQQueue:
    """Jobs on an RQ queue; dedup and the per-project lock live in Redis."""

    def __init__(self, settings: Settings, store: ModelStore):
        self.settings, self.store = settings, store
        self.redis = connect(settings.redis_url, settings.redis_timeout)
        self.queue = Queue(settings.rq_queue, connection=self.redis)
        self._down_until = 0.0  # after a Redis error, /status stops asking Redis for a few seconds

    def submit(self, project: str, trigger: str) -> tuple[str, bool]:
        try:
            return self._submit(project, trigger)
        except RedisError as exc:
            raise QueueUnavailable(f"Redis is unavailable: {type(exc).__name__}") from None

    def _submit(self, project: str, trigger: str) -> tuple[str, bool]:
        key = PENDING_KEY.format(project)
        job_id = new_job_id(project)
        if not self.redis.set(key, job_id, nx=True, ex=PENDING_TTL_S):
            existing = (self.redis.get(key) or b"").decode()
            if existing and self._still_queued(existing, key):
                return existing, False
            self.redis.delete(key)  # the job it names is gone or already started: take the mark over
            if not self.redis.set(key, job_id, nx=True, ex=PENDING_TTL_S):
                return (self.redis.get(key) or b"").decode() or job_id, False
        try:
            _write_queued(self.settings, self.store, queued_record(job_id, project, trigger))
            self.queue.enqueue(JOB_FUNC, project, job_id, job_id=job_id, job_timeout=6 * 3600,
                               result_ttl=86400, failure_ttl=7 * 86400, description=f"train project {project}")
        except BaseException:
            if (self.redis.get(key) or b"").decode() == job_id:
                self.redis.delete(key)
            raise
        return job_id, True

    def _still_queued(self, job_id: str, key: str) -> bool:
        """Whether the pending mark names a job that has not started yet (or is being enqueued right now)."""
        if PENDING_TTL_S - self.redis.ttl(key) < 30:  # young mark: its submitter may still be enqueueing
            return True
        return rq_status(self.redis, job_id, refresh=False) in ("queued", "deferred", "scheduled")

    def reconcile(self, record: dict) -> dict:
        """A worker killed mid-job cannot write 'failed': its heartbeat stops, or RQ says what became of it."""
        record = reconcile_liveness(self.store, record)
        if record.get("state") not in ("queued", "running") or time.monotonic() < self._down_until:
            return record
        try:
            job = Job.fetch(record["id"], connection=self.redis)
            status = job.get_status(refresh=True)
            result = job.latest_result() if getattr(status, "value", status) in ("failed", "stopped") else None
        except NoSuchJobError:
            return {**record, "state": "failed", "reason": "job vanished from the queue (expired or Redis reset)"}
        except Exception:  # Redis down or slow: show what the record says, and spare the next calls the wait
            self._down_until = time.monotonic() + 5.0
            return record
        status = getattr(status, "value", status)
        if status in ("failed", "stopped", "canceled"):
            last = rq_failure_reason((result.exc_string if result else "") or "", status)
            return {**record, "state": "failed", "reason": redact(last, [self.settings.label_studio_api_key])}
        return record


def rq_status(redis, job_id: str, refresh: bool = True) -> str | None:
    """RQ's status of a job as a plain string ("queued", "started", "failed", ...); None when RQ has no such job."""
    try:
        status = Job.fetch(job_id, connection=redis).get_status(refresh=refresh)
    except NoSuchJobError:
        return None
    return getattr(status, "value", status)


def rq_failure_reason(exc_string: str, status: str) -> str:
    """The last line of RQ's traceback of a failed job (a killed work horse writes no record of its own)."""
    return exc_string.strip().splitlines()[-1] if exc_string.strip() else f"RQ reports the job {status}"


def redis_client(settings: Settings):
    return connect(settings.redis_url, max(settings.redis_timeout, 10.0))  # shard bookkeeping tolerates load


def rq_queue(settings: Settings):
    return Queue(settings.rq_queue, connection=redis_client(settings))


def make_queue(settings: Settings, store: ModelStore, runner: Callable[[str, str], dict]):
    """RQ when REDIS_URL is set (workers import JOB_FUNC themselves), else a thread running ``runner``."""
    return RQQueue(settings, store) if settings.redis_url else InProcessQueue(settings, store, runner)


# ------------------------------------------------------------------------------------------ liveness
def _beat_path(store: ModelStore, project: str, job_id: str):
    return store.project_dir(project) / "jobs" / f"{job_id}.beat"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile_liveness(store: ModelStore, record: dict, now: float | None = None) -> dict:
    """The record, or a failed copy (also written back) when the process that owns it is gone."""
    now = time.time() if now is None else now
    state, project, job_id = record.get("state"), record.get("project"), record.get("id")
    reason = None
    if state == "running" and project and job_id:
        try:
            last = _beat_path(store, project, job_id).stat().st_mtime
        except OSError:
            last = record.get("started_at") or now
        if now - last > STALE_S:
            reason = f"the process running the job died (no heartbeat for {now - last:.0f} s)"
    elif state == "queued" and record.get("queue") == "in-process":
        who = record.get("owner") or {}
        if who.get("host") == socket.gethostname() and isinstance(who.get("pid"), int) and not _pid_alive(who["pid"]):
            reason = f"the web process (pid {who['pid']}) that queued the job exited before it ran"
    if reason is None:
        return record
    failed = {**record, "state": "failed", "reason": reason, "finished_at": now}
    try:
        store.write_job(project, failed)
    except OSError:
        pass
    log.warning("project %s: job %s marked failed: %s", project, job_id, reason)
    return failed


def _heartbeat(path, stop: threading.Event) -> None:
    while True:
        try:
            path.touch()
        except OSError:
            log.warning("cannot write the heartbeat %s", path)
        if stop.wait(HEARTBEAT_S):
            return


def start_record(settings: Settings, store: ModelStore, project: str, job_id: str) -> dict:
    """Mark the job running, let the next event queue a retrain, and start its heartbeat."""
    record = store.read_job(project, job_id) or queued_record(job_id, project, "unknown")
    wait = min(float(record.get("not_before") or 0) - time.time(), backoff.MAX_S)
    if wait > 0:  # an RQ job queued during a back-off (in-process jobs are released by a timer instead)
        time.sleep(wait)
    record.update(state="running", started_at=time.time(), owner=owner(), reason=None)
    path = _beat_path(store, project, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    store.write_job(project, record)
    stop = threading.Event()
    with _beats_lock:
        _beats[job_id] = stop
    threading.Thread(target=_heartbeat, args=(path, stop), name=f"heartbeat-{job_id}", daemon=True).start()
    clear_pending(settings, project, job_id)
    return record


def finish_record(settings: Settings, store: ModelStore, project: str, record: dict) -> dict:
    """Stop the heartbeat, write the final record; returns it JSON-safe (RQ stores it as the result)."""
    with _beats_lock:
        stop = _beats.pop(record["id"], None)
    if stop is not None:
        stop.set()
    record.update(finished_at=time.time())
    record["duration_s"] = round(record["finished_at"] - (record.get("started_at") or record["finished_at"]), 3)
    if record.get("reason"):
        record["reason"] = redact(str(record["reason"]), [settings.label_studio_api_key])
    record = json.loads(json.dumps(record, default=json_default))
    if record.get("state") == "finished":
        backoff.clear(store, project)
    elif record.pop("ls_unreachable", False):
        record["backoff"] = backoff.record_failure(store, project, record["reason"])
    store.write_job(project, record)
    try:
        _beat_path(store, project, record["id"]).unlink()
    except OSError:
        pass
    return record


def failure(exc: BaseException) -> dict:
    """Record fields for a failed job: the reason, and whether LS was unreachable (which starts a back-off)."""
    unreachable = isinstance(exc, LabelStudioError) and exc.status is None and "unreachable" in str(exc)
    return {"reason": f"{type(exc).__name__}: {exc}", "ls_unreachable": unreachable}


def clear_pending(settings: Settings, project: str, job_id: str) -> None:
    """Called when a job starts: a new event may now queue the next retrain."""
    if not settings.redis_url:
        return
    key = PENDING_KEY.format(project)
    try:
        r = connect(settings.redis_url, settings.redis_timeout)
        if (r.get(key) or b"").decode() == job_id:
            r.delete(key)
    except RedisError as exc:  # the mark then names a started job, which the next submit takes over
        log.warning("project %s: could not clear the pending mark: %s", project, type(exc).__name__)


# ------------------------------------------------------------------------------------------ locks
def _renew(lock, stop: threading.Event, project: str) -> None:
    while not stop.wait(LOCK_TTL_S / 3):
        try:
            lock.reacquire()
        except Exception as exc:  # Redis gone or the lock expired: the file store still holds the model safely
            log.warning("project %s: could not renew the training lock: %s", project, type(exc).__name__)


@contextmanager
def project_lock(settings: Settings, store: ModelStore, project: str, timeout: float = 6 * 3600) -> Iterator[None]:
    """Serialise training per project, across processes (file lock) and machines (Redis lock).

    The Redis lock lives LOCK_TTL_S and is renewed by a thread while its holder lives, so a killed holder
    frees it within LOCK_TTL_S instead of blocking the project for hours.
    """
    if settings.redis_url:
        lock = connect(settings.redis_url, settings.redis_timeout).lock(
            LOCK_KEY.format(project), timeout=LOCK_TTL_S, blocking_timeout=timeout, thread_local=False)
        if not lock.acquire():
            raise TimeoutError(f"another training job holds project {project} for too long")
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(lock, stop, project), daemon=True, name=f"lock-{project}")
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=5)
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
