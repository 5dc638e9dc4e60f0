"""Per-project back-off after a job failed because Label Studio was unreachable.

Without it, 200 webhooks in 10 s with LS down queue 200 jobs that each fail in milliseconds. With it, the
first failure starts a delay (10 s, doubling up to 5 min); a job queued meanwhile is held until the delay
ends (one job, one failure reason, retried later), and a successful job clears the state.
"""
from __future__ import annotations

import json
import time

from albackend.services.store import ModelStore, atomic_write_text

BASE_S = 10.0
MAX_S = 300.0
FILE = "backoff.json"


def active(store: ModelStore, project: str, now: float | None = None) -> dict | None:
    """{"until", "failures", "reason"} while a back-off is running, else None."""
    now = time.time() if now is None else now
    try:
        state = json.loads((store.project_dir(project) / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("until"), (int, float)) or state["until"] <= now:
        return None
    return state


def record_failure(store: ModelStore, project: str, reason: str, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    try:
        failures = int(json.loads((store.project_dir(project) / FILE).read_text()).get("failures", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        failures = 0
    delay = min(MAX_S, BASE_S * 2 ** failures)
    state = {"until": now + delay, "failures": failures + 1, "reason": reason, "delay_s": delay}
    atomic_write_text(store.project_dir(project) / FILE, json.dumps(state))
    return state


def clear(store: ModelStore, project: str) -> None:
    try:
        (store.project_dir(project) / FILE).unlink()
    except OSError:
        pass
