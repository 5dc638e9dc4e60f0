"""The training state where Label Studio users look: one line in the description of this backend's ML backend
record (Settings -> Model), written with ``PATCH /api/ml/<id>``.

Why the description: Label Studio 1.23 recomputes an ML backend's ``state`` and ``error_message`` from the
backend's own /health and /setup every time the record is read or updated (so a "Training" or "Error" state
written over the API is gone at the next page load), and its UI offers no training feedback. The description is
stored as written and returned by ``GET /api/ml?project=<id>``. The line reads, e.g.::

    Training: failed 2026-01-02 10:04 UTC: TrainingSkipped: only 1 class annotated (Sports); need at least 2 ...
    Training: running since 10:05 UTC: publishing, 256 of 1200 tasks scored, 256 pushed
    Training: finished 10:07 UTC: model al-3-it1-... (iteration 1, 40 gold) is current

Only the line starting with ``Training:`` is replaced; any other line of the description (the user's own text,
another writer's summary) is kept. Reporting is best effort: an unreachable Label Studio is logged, never a failed
job.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError
from albackend.services.publish import own_version_key

log = logging.getLogger(__name__)
PREFIX = "Training: "
MAX_REASON = 400
RETRY_S = 1.0


def _clock(ts: object, with_date: bool = False) -> str:
    if not isinstance(ts, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M UTC" if with_date else "%H:%M UTC", time.gmtime(ts))


def _progress(progress: dict) -> str:
    phase = progress.get("phase") or "starting"
    if phase == "publishing" and progress.get("to_score"):
        return (f"publishing, {progress.get('scored', 0)} of {progress['to_score']} tasks scored, "
                f"{progress.get('pushed', 0)} pushed")
    return phase


def state_line(record: dict, current: dict | None) -> str | None:
    """The ``Training:`` line for a job record and the project's current model (None for a queued job)."""
    state = record.get("state")
    model = (f"model {current['model_version']} (iteration {current.get('iteration')}, {current.get('gold', '?')} gold)"
             if current else "no model yet")
    if state == "running":
        return f"{PREFIX}running since {_clock(record.get('started_at'))}: {_progress(record.get('progress') or {})}"
    if state == "finished":
        return f"{PREFIX}finished {_clock(record.get('finished_at'), True)}: {model} is current"
    if state == "failed":
        reason = " ".join(str(record.get("reason") or "unknown reason").split())[:MAX_REASON]
        return f"{PREFIX}failed {_clock(record.get('finished_at'), True)}: {reason}; {model}"
    return None


def with_line(description: str | None, line: str, prefix: str = PREFIX) -> str:
    """``description`` with its line starting with ``prefix`` (``Training:``) replaced by ``line`` (appended when
    there was none)."""
    lines = [x for x in (description or "").splitlines() if not x.startswith(prefix)]
    return "\n".join([*lines, line])


def own_records(records: list[dict], project: str) -> list[dict]:
    """The records of this backend: LS keeps each record's ``model_version`` as the backend's /setup reported it,
    and only this backend reports ``untrained-<p>`` / ``al-<p>-it<i>-...``."""
    return [r for r in records if isinstance(r.get("model_version"), str)
            and own_version_key(project, r["model_version"]) is not None and r.get("id") is not None]


def show(client: LabelStudioClient, project: str, line: str, attempts: int = 3) -> int:
    """Write ``line`` into the description of every ML backend record of this backend in the project; returns how
    many were updated (0 when Label Studio is unreachable or the project has none)."""
    try:
        return write_records(client, project, lambda r: {"description": with_line(r.get("description"), line)},
                             attempts)
    except LabelStudioError as exc:
        log.warning("project %s: could not show the training state in Label Studio: %s", project, exc)
        return 0


def write_records(client: LabelStudioClient, project: str, fields: Callable[[dict], dict], attempts: int = 3) -> int:
    """Set ``fields(record)`` on every ML backend record of this backend in the project; returns how many.

    Each write is read back: LS saves the whole record after every read (it refreshes ``state``), so a read that
    began before our write (the model page being open, another writer) can put the old values back."""
    updated = 0
    for record in own_records(client.ml_backends(project), project):
        for attempt in range(attempts):
            wanted = fields(record)
            if all(record.get(k) == v or (v == "" and record.get(k) is None) for k, v in wanted.items()):
                break
            if attempt:
                time.sleep(RETRY_S * attempt)
            client.update_ml_backend(record["id"], wanted, record=record)
            record = client.ml_backend(record["id"])
        updated += 1
    return updated


class StateReporter:
    """Shows a job's state in Label Studio at its start, on each phase change and at its end.

    The writes run on a thread of their own, in order: a Label Studio round trip (which makes LS call the backend's
    /health and /setup) never delays the job, e.g. the first chunk of a publish. ``close()`` waits for the last."""

    def __init__(self, enabled: bool, project: str, client: Callable[[], LabelStudioClient]):
        self.enabled, self.project, self._make_client = enabled, project, client
        self._client: LabelStudioClient | None = None
        self._phase: object = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ls-state-{project}")
        self._last: Future | None = None

    def __call__(self, record: dict, current: dict | None) -> None:
        phase = (record.get("state"), (record.get("progress") or {}).get("phase"))
        if not self.enabled or phase == self._phase:
            return
        self._phase = phase
        line = state_line(record, current)
        if line is not None:
            self._last = self._writer.submit(self._write, line)

    def _write(self, line: str) -> None:
        if not self.enabled:
            return
        try:
            if self._client is None:
                self._client = self._make_client()
        except LabelStudioError as exc:  # no URL or key: the job itself reports that
            log.info("project %s: training state not shown in Label Studio: %s", self.project, exc)
            self.enabled = False
            return
        show(self._client, self.project, line)

    def close(self, timeout: float = 60.0) -> None:
        """Wait (at most ``timeout`` s) for the last write, then let the writer thread go."""
        if self._last is not None:
            try:
                self._last.result(timeout=timeout)
            except FutureTimeout:
                log.warning("project %s: the training state is still being written to Label Studio", self.project)
        self._writer.shutdown(wait=False)
