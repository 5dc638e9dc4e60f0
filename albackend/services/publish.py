"""Progressive publish: push a retrain's predictions to Label Studio chunk by chunk and make the new model version
current as soon as its first (most uncertain) chunk is there; then drop superseded versions.

Why: LS's uncertainty queue (`/next`) only looks at predictions of ``project.model_version``. Switching it right
after the first chunk means annotators get a task ranked by the new model seconds after training ends, instead of
after the whole pool is scored and pushed; pruning keeps every task (and LS's database) from growing with each
iteration.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
import time
from typing import Callable

from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError
from albackend.settings import Settings

log = logging.getLogger(__name__)
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
# Label Studio 1.23's feature flag for its batched prediction import. Off by default: every import request then
# recounts annotations and predictions of *every* task in the project (bench/ls_push.py: 17.8 s per request of 256
# predictions in a 17k-task project holding one earlier version, 0.5 s with the flag), which is most of the time
# from Start Training to the first re-ranked task. LS reads it from its environment (`<flag>=true`).
LS_BATCHED_IMPORT_FLAG = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"


class Publisher:
    """The ``publish`` callback of `albackend.services.rescoring.rescore_pool` for one retrain.

    The first chunk is pushed synchronously and made current; later chunks go to a background thread, so Label
    Studio stores chunk i while the model scores chunk i + 1 (at most ``MAX_PENDING`` chunks wait). ``finish()``
    waits for the last push and raises the first push error; a push error also stops the round at its next chunk.
    """

    MAX_PENDING = 2
    SLOW_REQUEST_S = 5.0  # an import request slower than this: LS is recounting the whole project

    def __init__(self, client: LabelStudioClient, project: str, version: str, settings: Settings,
                 project_info: dict, progress: Callable[[dict], None] = lambda figures: None):
        self.client, self.project, self.version, self.settings = client, project, version, settings
        self.project_info, self.progress = project_info, progress
        self.t0 = time.perf_counter()
        self.pushed, self.push_s, self.wait_s = 0, 0.0, 0.0
        self.current_after_s: float | None = None
        self.sampling_set = False
        self._queue: queue.Queue = queue.Queue(maxsize=self.MAX_PENDING)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, payloads: list[dict], done: int, total: int) -> None:
        self._raise_error()
        if self.current_after_s is None:
            self._push(payloads)
            self._hint_if_slow(len(payloads))
            if self.pushed:
                self.make_current()
            self._report(done, total)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name=f"push-{self.project}", daemon=True)
            self._thread.start()
        t = time.perf_counter()
        self._queue.put((payloads, done, total))
        self.wait_s += time.perf_counter() - t

    def finish(self) -> None:
        """Wait for every queued chunk to be stored in Label Studio."""
        if self._thread is not None:
            t = time.perf_counter()
            self._queue.put(None)
            self._thread.join()
            self.wait_s += time.perf_counter() - t
            self._thread = None
        self._raise_error()

    def _push(self, payloads: list[dict]) -> None:
        t = time.perf_counter()
        self.pushed += self.client.import_predictions(self.project, payloads, chunk=self.settings.push_batch)
        self.push_s += time.perf_counter() - t

    def _hint_if_slow(self, n: int) -> None:
        """Name the Label Studio setting when its per-request import cost (not ours) dominates the first publish."""
        per_request = self.push_s / max(1, -(-n // self.settings.push_batch))
        if per_request > self.SLOW_REQUEST_S:
            log.warning("project %s: Label Studio took %.1f s per prediction import request; it recounts every task "
                        "of the project on each one unless started with %s=true in its environment (see the "
                        "README, 'Label Studio at real size')", self.project, per_request, LS_BATCHED_IMPORT_FLAG)

    def _report(self, done: int, total: int) -> None:
        self.progress({"scored": done, "to_score": total, "pushed": self.pushed,
                       "current_after_s": self.current_after_s})

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                payloads, done, total = item
                try:
                    self._push(payloads)
                    self._report(done, total)
                except BaseException as exc:  # handed to the job's thread by _raise_error / finish
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def make_current(self) -> None:
        """PATCH model_version (LS accepts it once a prediction of that version exists) and, once, the sampling."""
        data: dict = {"model_version": self.version}
        if self.settings.set_sampling and self.project_info.get("sampling") != UNCERTAINTY_SAMPLING:
            data["sampling"] = UNCERTAINTY_SAMPLING
            self.sampling_set = True
            log.info("project %s: switching Label Studio's task sampling from %r to %r so annotators get the most "
                     "uncertain task first (SET_SAMPLING=false keeps it)", self.project,
                     self.project_info.get("sampling"), UNCERTAINTY_SAMPLING)
        t = time.perf_counter()
        self.client.patch_project(self.project, data)
        self.push_s += time.perf_counter() - t
        self.current_after_s = round(time.perf_counter() - self.t0, 3)

    def figures(self) -> dict:
        """``push_s``: LS's time to store; ``push_wait_s``: how long the round waited on it (the rest overlapped
        scoring)."""
        return {"predictions_pushed": self.pushed, "push_s": round(self.push_s, 3),
                "push_wait_s": round(self.wait_s, 3), "current_after_s": self.current_after_s,
                "sampling_set": self.sampling_set}


def own_version_key(project: str, version: str) -> tuple[int, str] | None:
    """(iteration, name) for a model version this backend made for ``project`` (``al-<p>-it<i>-...``, the
    ``coldstart-<p>`` ranking or the ``untrained-<p>`` placeholder), None for anybody else's (imported predictions,
    other backends)."""
    if version in (f"untrained-{project}", f"coldstart-{project}"):
        return (-1, version)
    m = re.fullmatch(rf"al-{re.escape(str(project))}-it(\d+)-.+", version)
    return (int(m.group(1)), version) if m else None


def superseded_versions(project: str, versions: list[str], current: str, keep: int) -> list[str]:
    """This backend's versions to delete: all but ``current`` and the ``keep`` newest before it."""
    ours = sorted((k for v in versions if v != current and (k := own_version_key(project, v))), reverse=True)
    return [name for _, name in ours[keep:]]


def prune_versions(client: LabelStudioClient, project: str, current: str, keep: int) -> tuple[dict, str | None]:
    """Delete predictions of superseded versions of this backend from LS; returns (deleted per version, error).

    Housekeeping only: the new version is already published and current, so a failure here is logged and left
    for the next retrain (the versions are still there to delete), never a failed job."""
    deleted: dict[str, int] = {}
    try:
        for version in superseded_versions(project, list(client.model_versions(project)), current, keep):
            deleted[version] = client.delete_model_version(project, version)
    except LabelStudioError as exc:
        log.warning("project %s: pruning superseded predictions stopped, left for the next retrain: %s",
                    project, exc)
        return deleted, str(exc)
    if deleted:
        log.info("project %s: deleted %d predictions of %d superseded model versions", project,
                 sum(deleted.values()), len(deleted))
    return deleted, None
