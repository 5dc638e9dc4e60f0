"""PLASM run records: run ids and directories, ``status.json``, RQ's view of a job, listing.

A run record is the backend's job record (:func:`albackend.services.jobs.queued_record`: id, project, state, trigger,
queued_at / started_at / finished_at as epoch seconds, duration_s, reason) plus PLASM's progress fields:

    {"kind": "plasm", "run_id", "run_dir", "stage", "progress" (0..1), "stage_progress", "timings" {stage: s},
     "errors" [notes], "failed_stage", "info" {step, loss, ...}, "updated_at", "summary" {...}}

It lives in the RQ job's meta while a worker runs it and in ``<run_dir>/status.json`` always, so
``python -m plasm status`` answers from either. No torch here: ``status`` and ``list`` stay fast.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from albackend.services.jobs import queued_record, rq_failure_reason
from albackend.adapters.redisconn import connect
from albackend.services.store import atomic_write_text

JOB_FUNC = "plasm.job.plasm_job"
STATUS_FILE = "status.json"
TRIGGER = "plasm"


def new_run_id() -> str:
    return f"plasm-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def runs_root(model_dir: str | Path) -> Path:
    return Path(model_dir) / "plasm"


def new_record(run_id: str, run_dir: Path, project: str | None = None) -> dict:
    """A queued run: the backend's job record plus PLASM's progress fields."""
    return {**queued_record(run_id, str(project or ""), TRIGGER), "kind": "plasm", "run_id": run_id,
            "run_dir": str(run_dir), "stage": None, "progress": 0.0, "stage_progress": 0.0, "timings": {},
            "errors": [], "failed_stage": None, "info": {}, "updated_at": time.time(), "summary": None}


def read_status(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_status(run_dir: Path, record: dict) -> None:
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(record, default=str, indent=1))


def _redis(redis_url: str) -> Redis:
    return connect(redis_url, 5.0)


def job_status(job_id: str, *, redis_url: str | None = None, model_dir: str | Path | None = None) -> dict | None:
    """Best knowledge of a run: RQ meta reconciled with RQ's job status, else the run dir's status.json."""
    if redis_url:
        try:
            return reconcile(Job.fetch(job_id, connection=_redis(redis_url)))
        except NoSuchJobError:
            pass
    status = read_status(runs_root(model_dir) / job_id) if model_dir is not None else None
    return {**status, "source": "status.json"} if status is not None else None


def _rq_failure(job: Job, status: str) -> str:
    """The last line of RQ's traceback of a failed job (a killed work horse writes no record of its own)."""
    try:
        result = job.latest_result()
        reason = (result.exc_string if result is not None else "") or ""
    except Exception:  # noqa: BLE001 - an RQ without results, or Redis trouble: RQ's status is enough
        reason = ""
    return rq_failure_reason(reason, status)


def reconcile(job: Job) -> dict:
    """The record in the job's meta, corrected by RQ's own status (failed / stopped / finished / started)."""
    meta = dict(job.meta or {})
    status = job.get_status(refresh=False)
    status = getattr(status, "value", status)
    record = {"kind": "plasm", "run_id": job.id, "state": meta.get("state") or "queued", **meta,
              "rq_status": status, "source": "rq"}
    record.setdefault("queued_at", job.enqueued_at.timestamp() if job.enqueued_at else None)
    if status in ("failed", "stopped", "canceled") and record.get("state") != "failed":
        record.update(state="failed", reason=record.get("reason") or _rq_failure(job, status),
                      failed_stage=record.get("failed_stage") or record.get("stage"))
    elif status == "finished":
        record["state"] = "finished"
    elif status == "started" and record.get("state") == "queued":
        record["state"] = "running"
    return record


def _rq_records(redis_url: str, queue: str) -> dict[str, dict]:
    conn = _redis(redis_url)
    q = Queue(queue, connection=conn)
    ids: list[str] = list(q.get_job_ids())
    for reg in (q.started_job_registry, q.finished_job_registry, q.failed_job_registry,
                q.canceled_job_registry, q.deferred_job_registry, q.scheduled_job_registry):
        ids += reg.get_job_ids()
    seen = [i for i in dict.fromkeys(ids) if i.startswith("plasm-")]
    return {job.id: reconcile(job) for job in Job.fetch_many(seen, connection=conn)
            if job is not None and job.func_name == JOB_FUNC}


def list_jobs(*, redis_url: str | None, queue: str, model_dir: str | Path | None, limit: int = 20) -> list[dict]:
    """Recent PLASM runs: RQ jobs of the queue (every registry) plus local run directories, newest first."""
    records = _rq_records(redis_url, queue) if redis_url else {}
    if model_dir is not None and runs_root(model_dir).is_dir():
        for d in runs_root(model_dir).iterdir():
            status = read_status(d) if d.is_dir() and d.name not in records else None
            if status is not None:
                records[d.name] = {**status, "source": "status.json"}
    return sorted(records.values(), key=_when, reverse=True)[:limit]


def _when(record: dict) -> float:
    """Sort key: queued (else started) time in epoch seconds; 0 for a record of an older format."""
    value = record.get("queued_at") or record.get("started_at")
    return float(value) if isinstance(value, (int, float)) else 0.0
