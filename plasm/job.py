"""The PLASM job: load the data, run :func:`plasm.pipeline.run_plasm`, report progress, optionally push.

``plasm_job(params)`` is the RQ job function (``plasm.job.plasm_job``); the CLI's ``--sync`` path calls
:func:`execute` in its own process with the same params. Progress goes to the RQ job meta (when running under
RQ) and to ``<run_dir>/status.json`` (always); the record's fields are described in :mod:`plasm.runs`.

Params (JSON-able, no secrets):

    {"run_id": str, "run_dir": str, "model_dir": str, "config": PlasmConfig.to_dict(), "push": bool,
     "max_chars": int, "source": {"kind": "export", "export": path, "label_config": path | None}
                                | {"kind": "project", "project": id, "url": str | None}}

A live project is reached like the backend reaches it (:func:`albackend.services.training.ls_client`): the token comes
from the project's connection file under ``model_dir`` (written by ``/setup``, or by ``plasm run`` from its
``--ls-token``), never through Redis.

A failure (exception, RQ job timeout) records ``state = failed`` with the reason and re-raises, so RQ marks the
job failed too; ``COMPLETE`` is only ever written by a successful run. A worker killed outright cannot write
anything: :func:`plasm.runs.job_status` then takes RQ's own verdict. Re-running means a new run id, hence a fresh
run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rq import get_current_job
from rq.timeouts import BaseTimeoutException, JobTimeoutException

from albackend.adapters.lsclient import LabelStudioClient
from albackend.models.runtime import configure_runtime
from albackend.services.predictions import choice_result, span_result
from albackend.settings import Settings
from albackend.services.store import ModelStore
from albackend.services.training import ls_client
from plasm import runs, sources
from plasm.config import PlasmConfig
from plasm.errors import USER_ERRORS, SourceError
from plasm.pipeline import run_plasm
from plasm.sources import PlasmData
from plasm.successors import load_successor

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 6 * 3600
_META_EVERY_S = 1.0


class Reporter:
    """Writes progress to the RQ job meta (throttled) and to ``status.json`` (on stage changes and at the end)."""

    def __init__(self, run_id: str, run_dir: Path, job=None, echo: Callable[[str, float, dict], None] | None = None,
                 project: str | None = None):
        self.job, self.run_dir, self.echo = job, run_dir, echo
        base = dict(job.meta) if job is not None and isinstance(job.meta, dict) else {}
        self.state: dict[str, Any] = runs.new_record(run_id, run_dir, project)
        if base.get("queued_at"):
            self.state["queued_at"] = base["queued_at"]
        self._last_meta = 0.0
        timeout = getattr(job, "timeout", None)
        self.timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None
        self.deadline = time.monotonic() + self.timeout if self.timeout else None

    def check_deadline(self) -> None:
        """Raise RQ's timeout once the job's time is up, at the next progress report.

        RQ delivers its timeout as an exception from a signal handler, wherever the work horse happens to be; a
        library that catches Exception around that spot (a model loader, a retry loop) swallows it and the job
        runs on past its limit. Checking at every progress report makes the limit hold anyway.
        """
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise JobTimeoutException(f"Task exceeded maximum timeout value ({self.timeout:g} seconds)")

    def save(self, *, status_file: bool = True, force: bool = True) -> None:
        self.state["updated_at"] = time.time()
        now = time.monotonic()
        if self.job is not None and (force or now - self._last_meta >= _META_EVERY_S):
            self._last_meta = now
            try:
                self.job.meta.update(self.state)
                self.job.save_meta()
            except BaseTimeoutException:  # RQ's timeout, landed here: the job must stop
                raise
            except Exception:  # noqa: BLE001 - Redis hiccups must not kill a long job
                log.warning("could not save the job meta", exc_info=True)
        if status_file:
            try:
                runs.write_status(self.run_dir, self.state)
            except OSError:
                log.warning("could not write %s", self.run_dir / runs.STATUS_FILE, exc_info=True)

    def set(self, **fields) -> None:
        self.state.update(fields)
        self.save()

    def progress(self, stage: str, fraction: float, info: dict) -> None:
        self.check_deadline()
        changed = stage != self.state.get("stage")
        info = dict(info)
        self.state["timings"] = {**self.state["timings"], **info.pop("timings", {})}
        self.state.update(stage=stage, progress=round(float(fraction), 4),
                          stage_progress=round(float(info.pop("stage_progress", 0.0)), 4), info=info)
        self.save(status_file=changed, force=changed)
        if self.echo is not None:
            self.echo(stage, fraction, {**info, "timings": self.state["timings"]})

    def finish(self, state: str, **fields) -> None:
        """Final state, with finished_at and duration_s like the backend's job records."""
        finished = time.time()
        started = self.state.get("started_at") or finished
        self.set(state=state, finished_at=finished, duration_s=round(finished - started, 3), **fields)

    def fail(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        self.state["errors"] = [*self.state.get("errors", []), reason]
        self.finish("failed", reason=reason, failed_stage=self.state.get("stage"))


# ==================================================================================================== data
def project_client(source: dict, model_dir: str | Path | None) -> LabelStudioClient:
    """The backend's client for the project: the run's URL (else LABEL_STUDIO_URL, else /setup's), and the token
    of the project's connection file, which ``plasm run`` wrote from its --ls-token or environment."""
    settings = Settings.from_env()
    settings = dataclasses.replace(settings, label_studio_url=source.get("url") or settings.label_studio_url,
                                   label_studio_api_key="")
    return ls_client(settings, ModelStore(Path(model_dir or settings.model_dir)), source["project"])


def load_data(params: dict) -> PlasmData:
    """PlasmData for ``params["source"]``."""
    source, max_chars = params["source"], int(params.get("max_chars") or sources.DEFAULT_MAX_CHARS)
    kind = source.get("kind")
    if kind == "export":
        return sources.from_export(source["export"], source.get("label_config"), max_chars=max_chars)
    if kind == "project":
        return sources.from_project(project_client(source, params.get("model_dir")), source["project"],
                                    max_chars=max_chars)
    raise SourceError(f"unknown source kind {kind!r}")


# ==================================================================================================== push
def successor_predictions(data: PlasmData, successor_dir: Path, model_version: str) -> list[dict]:
    """LS predictions of the successor for every task (gold and pool) that has an id."""
    spec = data.spec
    successor = load_successor(successor_dir)
    pairs = [(e.task_id, e.text) for e in data.gold] + list(zip(data.pool_task_ids, data.pool_texts))
    ids, texts = [t for t, _ in pairs if t is not None], [x for t, x in pairs if t is not None]
    if spec.kind == "tagging":
        results = [span_result(spec, text, spans) for text, spans in zip(texts, successor.predict_spans(texts))]
        scores = [min((r["score"] for r in result), default=1.0) for result in results]
    else:
        probs = np.asarray(successor.predict_proba(texts)) if texts else np.zeros((0, len(spec.labels)))
        results = [choice_result(spec, [spec.labels[int(p.argmax())]]) for p in probs]
        scores = [float(p.max()) for p in probs]
    return [{"task": tid, "result": result, "score": float(score), "model_version": model_version}
            for tid, result, score in zip(ids, results, scores)]


def push_predictions(data: PlasmData, params: dict) -> dict:
    """Successor predictions -> Label Studio, as model version ``<run id>`` (the project's version is untouched)."""
    preds = successor_predictions(data, Path(params["run_dir"]) / "successor", params["run_id"])
    client = project_client(params["source"], params.get("model_dir"))
    return {"pushed": client.import_predictions(params["source"]["project"], preds), "model_version": params["run_id"]}


# ==================================================================================================== job
def _summary(report: dict, run_dir: Path, load_seconds: float) -> dict:
    return {"run_dir": str(run_dir), "counts": report["counts"], "q": report["q"],
            "dev_metrics": {k: {m: v for m, v in d.items() if m != "n"} for k, d in report["dev_metrics"].items()},
            "warnings": report.get("warnings", []), "timings": {"load": load_seconds, **report["timings"]}}


def _push(params: dict, data: PlasmData, summary: dict, reporter: Reporter) -> None:
    if params["source"].get("kind") != "project":
        reporter.state["errors"].append("--push needs a live project source; nothing pushed")
        return
    reporter.progress("push", 1.0, {"stage_progress": 0.0})
    t0 = time.perf_counter()
    summary["push"] = push_predictions(data, params)
    summary["timings"]["push"] = round(time.perf_counter() - t0, 3)


def _run(params: dict, reporter: Reporter, run_dir: Path) -> dict:
    reporter.set(state="running", started_at=time.time(), stage="load", progress=0.0)
    t0 = time.perf_counter()
    cfg = PlasmConfig.from_dict(params.get("config") or {})
    data = load_data(params)
    reporter.state["timings"]["load"] = round(time.perf_counter() - t0, 3)
    reporter.set(data=data.summary())
    if data.skipped:
        reporter.state["errors"].append(f"{len(data.skipped)} task(s) skipped: "
                                        + "; ".join(sorted({s.reason for s in data.skipped})[:5]))
    report = run_plasm(data.gold, data.pool_texts, data.spec, cfg, run_dir, progress=reporter.progress)
    summary = _summary(report, run_dir, reporter.state["timings"]["load"])
    if params.get("push"):
        _push(params, data, summary, reporter)
    reporter.state["timings"] = summary["timings"]
    reporter.finish("finished", stage="done", progress=1.0, stage_progress=1.0, summary=summary)
    return summary


def execute(params: dict, reporter: Reporter) -> dict:
    """Run one PLASM job described by ``params`` (see the module docstring); returns a summary."""
    run_dir = Path(params["run_dir"])
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return _run(params, reporter, run_dir)
    except USER_ERRORS as exc:  # a bad source, option or model: the reason is enough
        log.error("PLASM run %s failed in stage %s: %s", params.get("run_id"), reporter.state.get("stage"),
                  "".join(traceback.format_exception_only(type(exc), exc)).strip())
        reporter.fail(exc)
        raise
    except BaseException as exc:  # noqa: BLE001 - a bug, RQ's JobTimeoutException or KeyboardInterrupt
        log.exception("PLASM run %s failed in stage %s", params.get("run_id"), reporter.state.get("stage"))
        reporter.fail(exc)
        raise


def plasm_job(params: dict) -> dict:
    """RQ entry point: progress in ``get_current_job().meta``; raises on failure so RQ records it too."""
    configure_runtime()
    project = params["source"].get("project") if params["source"].get("kind") == "project" else None
    reporter = Reporter(params["run_id"], Path(params["run_dir"]), get_current_job(), project=project)
    return execute(params, reporter)
