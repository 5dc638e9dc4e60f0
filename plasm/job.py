"""The PLASM job: load the data, run :func:`plasm.pipeline.run_plasm`, report progress, optionally push.

``plasm_job(params)`` is the RQ job function (``plasm.job.plasm_job``); the CLI's ``--sync`` path calls
:func:`execute` in its own process with the same params. Progress goes to the RQ job meta (when running
under RQ) and to ``<run_dir>/status.json`` (always), so ``python -m plasm status`` can answer from either:

    {"kind": "plasm", "run_id", "run_dir", "state": queued|running|finished|failed, "stage", "progress" (0..1),
     "stage_progress", "timings" {stage: s}, "errors" [..], "error" (failure reason), "failed_stage",
     "info" {step, loss, ...}, "enqueued_at", "started_at", "updated_at", "finished_at", "summary" {...}}

Params (JSON-able; no secrets - a live project's token travels in ``<run_dir>/connection.json``, mode 0600,
written by the CLI and deleted by the job, or comes from the worker's LABEL_STUDIO_API_KEY):

    {"run_id": str, "run_dir": str, "config": PlasmConfig.to_dict(), "push": bool, "max_chars": int,
     "source": {"kind": "export", "export": path, "label_config": path | None}
             | {"kind": "project", "project": id, "url": str | None}}

A failure (exception, RQ job timeout) records ``state = failed`` with the reason and re-raises, so RQ marks the
job failed too; ``COMPLETE`` is only ever written by a successful run. A worker killed outright cannot write
anything: :func:`job_status` then takes RQ's own verdict (failed / stopped / abandoned) and reports it.
Re-running means a new run id, hence a fresh run directory.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from albackend.store import atomic_write_text

log = logging.getLogger(__name__)

JOB_FUNC = "plasm.job.plasm_job"
STATUS_FILE = "status.json"
CONNECTION_FILE = "connection.json"
DEFAULT_QUEUE = "albackend"
DEFAULT_TIMEOUT = 6 * 3600
_META_EVERY_S = 1.0


def new_run_id() -> str:
    return f"plasm-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def runs_root(model_dir: str | Path) -> Path:
    return Path(model_dir) / "plasm"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_status(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_connection(run_dir: Path, url: str, token: str) -> None:
    """Credentials for a live project, readable only by this user; the job deletes the file when done."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONNECTION_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token}, fh)


class Reporter:
    """Writes progress to the RQ job meta (throttled) and to ``status.json`` (on stage changes and at the end)."""

    def __init__(self, run_id: str, run_dir: Path, job=None, echo: Callable[[str, float, dict], None] | None = None):
        self.job, self.run_dir, self.echo = job, run_dir, echo
        base = dict(job.meta) if job is not None and isinstance(job.meta, dict) else {}
        self.state: dict[str, Any] = {"kind": "plasm", "run_id": run_id, "run_dir": str(run_dir), "state": "queued",
                                      "stage": None, "progress": 0.0, "stage_progress": 0.0, "timings": {},
                                      "errors": [], "error": None, "failed_stage": None, "info": {},
                                      "enqueued_at": base.get("enqueued_at"), "started_at": None,
                                      "updated_at": _now(), "finished_at": None, "summary": None}
        self._last_meta = 0.0

    def save(self, *, status_file: bool = True, force: bool = True) -> None:
        self.state["updated_at"] = _now()
        now = time.monotonic()
        if self.job is not None and (force or now - self._last_meta >= _META_EVERY_S):
            self._last_meta = now
            try:
                self.job.meta.update(self.state)
                self.job.save_meta()
            except Exception:  # noqa: BLE001 - Redis hiccups must not kill a long job
                log.warning("could not save the job meta", exc_info=True)
        if status_file:
            try:
                atomic_write_text(self.run_dir / STATUS_FILE, json.dumps(self.state, default=str, indent=1))
            except OSError:
                log.warning("could not write %s", self.run_dir / STATUS_FILE, exc_info=True)

    def set(self, **fields) -> None:
        self.state.update(fields)
        self.save()

    def progress(self, stage: str, fraction: float, info: dict) -> None:
        changed = stage != self.state.get("stage")
        info = dict(info)
        self.state["timings"] = {**self.state["timings"], **info.pop("timings", {})}
        self.state.update(stage=stage, progress=round(float(fraction), 4),
                          stage_progress=round(float(info.pop("stage_progress", 0.0)), 4), info=info)
        self.save(status_file=changed, force=changed)
        if self.echo is not None:
            self.echo(stage, fraction, {**info, "timings": self.state["timings"]})

    def fail(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        self.state["errors"] = [*self.state.get("errors", []), reason]
        self.set(state="failed", error=reason, failed_stage=self.state.get("stage"), finished_at=_now())


# ==================================================================================================== data
def load_data(source: dict, run_dir: Path, max_chars: int):
    """PlasmData for a params["source"]."""
    from plasm import sources

    kind = source.get("kind")
    if kind == "export":
        return sources.from_export(source["export"], source.get("label_config"), max_chars=max_chars)
    if kind == "project":
        return sources.from_project(_client(source, run_dir), source["project"], max_chars=max_chars)
    raise sources.SourceError(f"unknown source kind {kind!r}")


def _client(source: dict, run_dir: Path):
    from albackend.lsclient import LabelStudioClient

    conn = {}
    try:
        conn = json.loads((run_dir / CONNECTION_FILE).read_text())
    except (OSError, ValueError):
        pass
    url = conn.get("url") or source.get("url") or os.environ.get("LABEL_STUDIO_URL", "")
    token = conn.get("token") or os.environ.get("LABEL_STUDIO_API_KEY", "")
    return LabelStudioClient(url, token)


# ==================================================================================================== push
def push_predictions(data, run_dir: Path, model_version: str, source: dict, batch_size: int = 64) -> dict:
    """Successor predictions for every task (gold and pool) -> Label Studio, as ``model_version``."""
    from plasm.successors import load_successor

    spec = data.spec
    successor = load_successor(run_dir / "successor")
    ids = [e.task_id for e in data.gold] + list(data.pool_task_ids)
    texts = [e.text for e in data.gold] + list(data.pool_texts)
    keep = [i for i, t in enumerate(ids) if t is not None]
    ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    preds = []
    if spec.kind == "tagging":
        for tid, text, spans in zip(ids, texts, successor.predict_spans(texts)):
            result = [{"from_name": spec.from_name, "to_name": spec.to_name, "type": "labels",
                       "value": {"start": int(s), "end": int(e), "text": text[s:e], "labels": [lab]},
                       "score": float(sc)} for s, e, lab, sc in spans]
            score = min((r["score"] for r in result), default=1.0)
            preds.append({"task": tid, "result": result, "score": score, "model_version": model_version})
    else:
        import numpy as np

        probs = np.asarray(successor.predict_proba(texts)) if texts else np.zeros((0, len(spec.labels)))
        for tid, p in zip(ids, probs):
            y = int(p.argmax())
            preds.append({"task": tid, "score": float(p[y]), "model_version": model_version,
                          "result": [{"from_name": spec.from_name, "to_name": spec.to_name, "type": "choices",
                                      "value": {"choices": [spec.labels[y]]}}]})
    client = _client(source, run_dir)
    sent = client.import_predictions(source["project"], preds)
    return {"pushed": sent, "model_version": model_version}


# ==================================================================================================== job
def execute(params: dict, reporter: Reporter) -> dict:
    """Run one PLASM job described by ``params`` (see the module docstring); returns a summary."""
    run_dir = Path(params["run_dir"])
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        reporter.set(state="running", started_at=_now(), stage="load", progress=0.0)
        t0 = time.perf_counter()
        from plasm.pipeline import PlasmConfig, run_plasm

        cfg = PlasmConfig.from_dict(params.get("config") or {})
        data = load_data(params["source"], run_dir, int(params.get("max_chars") or 100_000))
        reporter.state["timings"]["load"] = round(time.perf_counter() - t0, 3)
        reporter.set(data=data.summary())
        if data.skipped:
            reporter.state["errors"].append(f"{len(data.skipped)} task(s) skipped: "
                                            + "; ".join(sorted({s.reason for s in data.skipped})[:5]))
        report = run_plasm(data.gold, data.pool_texts, data.spec, cfg, run_dir, progress=reporter.progress)
        summary = {"run_dir": str(run_dir), "counts": report["counts"], "q": report["q"],
                   "dev_metrics": {k: {m: v for m, v in d.items() if m != "n"}
                                   for k, d in report["dev_metrics"].items()},
                   "timings": {"load": reporter.state["timings"].get("load"), **report["timings"]}}
        if params.get("push"):
            if params["source"].get("kind") != "project":
                reporter.state["errors"].append("--push needs a live project source; nothing pushed")
            else:
                reporter.progress("push", 1.0, {"stage_progress": 0.0})
                t1 = time.perf_counter()
                summary["push"] = push_predictions(data, run_dir, params["run_id"], params["source"],
                                                   cfg.infer_batch_size)
                summary["timings"]["push"] = round(time.perf_counter() - t1, 3)
        reporter.state["timings"] = summary["timings"]
        reporter.set(state="finished", stage="done", progress=1.0, stage_progress=1.0, finished_at=_now(),
                     summary=summary)
        return summary
    except BaseException as exc:  # noqa: BLE001 - includes RQ's JobTimeoutException and KeyboardInterrupt
        log.error("PLASM run %s failed in stage %s: %s", params.get("run_id"), reporter.state.get("stage"),
                  "".join(traceback.format_exception_only(type(exc), exc)).strip())
        reporter.fail(exc)
        raise
    finally:
        (run_dir / CONNECTION_FILE).unlink(missing_ok=True)


def plasm_job(params: dict) -> dict:
    """RQ entry point: progress in ``get_current_job().meta``; raises on failure so RQ records it too."""
    from rq import get_current_job

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    job = get_current_job()
    reporter = Reporter(params["run_id"], Path(params["run_dir"]), job)
    return execute(params, reporter)


# ==================================================================================================== status
def job_status(job_id: str, *, redis_url: str | None = None, model_dir: str | Path | None = None) -> dict | None:
    """Best knowledge of a run: RQ meta reconciled with RQ's job status, else the run dir's status.json."""
    record: dict | None = None
    if redis_url:
        record = _rq_status(job_id, redis_url)
    if record is None and model_dir is not None:
        for candidate in (runs_root(model_dir) / job_id,):
            status = read_status(candidate)
            if status is not None:
                record = {**status, "source": "status.json"}
    return record


def _rq_status(job_id: str, redis_url: str) -> dict | None:
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from albackend.redisconn import connect

    conn = connect(redis_url, 5.0)
    try:
        job = Job.fetch(job_id, connection=conn)
    except NoSuchJobError:
        return None
    return reconcile(job)


def reconcile(job) -> dict:
    meta = dict(job.meta or {})
    status = job.get_status(refresh=False)
    status = getattr(status, "value", status)
    record = {"kind": "plasm", "run_id": job.id, "state": meta.get("state") or "queued", **meta,
              "rq_status": status, "source": "rq",
              "enqueued_at": meta.get("enqueued_at") or (job.enqueued_at.isoformat() if job.enqueued_at else None)}
    if status in ("failed", "stopped", "canceled") and record.get("state") != "failed":
        reason = ""
        try:
            result = job.latest_result()
            reason = (result.exc_string if result is not None else "") or ""
        except Exception:  # noqa: BLE001
            reason = ""
        last = reason.strip().splitlines()[-1] if reason.strip() else f"RQ reports the job {status}"
        record.update(state="failed", error=record.get("error") or last,
                      failed_stage=record.get("failed_stage") or record.get("stage"))
    elif status == "finished":
        record["state"] = "finished"
    elif status == "started" and record.get("state") == "queued":
        record["state"] = "running"
    return record


def list_jobs(*, redis_url: str | None, queue: str, model_dir: str | Path | None, limit: int = 20) -> list[dict]:
    """Recent PLASM runs: RQ jobs of the queue (every registry) plus local run directories, newest first."""
    records: dict[str, dict] = {}
    if redis_url:
        from rq import Queue
        from rq.job import Job

        from albackend.redisconn import connect

        conn = connect(redis_url, 5.0)
        q = Queue(queue, connection=conn)
        ids: list[str] = list(q.get_job_ids())
        for reg in (q.started_job_registry, q.finished_job_registry, q.failed_job_registry,
                    q.canceled_job_registry, q.deferred_job_registry, q.scheduled_job_registry):
            try:
                ids += reg.get_job_ids()
            except Exception:  # noqa: BLE001 - an older/newer RQ without that registry
                continue
        seen = [i for i in dict.fromkeys(ids) if i.startswith("plasm-")]
        for job in Job.fetch_many(seen, connection=conn):
            if job is None or job.func_name != JOB_FUNC:
                continue
            records[job.id] = reconcile(job)
    if model_dir is not None and runs_root(model_dir).is_dir():
        for d in runs_root(model_dir).iterdir():
            if d.name in records or not d.is_dir():
                continue
            status = read_status(d)
            if status is not None:
                records[d.name] = {**status, "source": "status.json"}
    out = sorted(records.values(), key=lambda r: str(r.get("enqueued_at") or r.get("started_at") or r.get("run_id")),
                 reverse=True)
    return out[:limit]
