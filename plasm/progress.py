"""Stage-weighted progress and timings of a PLASM run.

``progress(stage, overall_fraction, info)`` callbacks get the overall fraction (each stage's share of the bar
normalised over the stages given), ``info["stage_progress"]`` and the ``timings`` so far; training reports
step/steps/loss at most every 0.5 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Tracker", "step_reporter"]


class Tracker:
    def __init__(self, callback: Callable[[str, float, dict], None] | None, stages: dict[str, float]):
        total = sum(stages.values())
        self.weights = {k: v / total for k, v in stages.items()}
        self.callback = callback
        self.timings: dict[str, float] = {}
        self.done = 0.0
        self.stage = ""
        self._t0 = 0.0

    def start(self, stage: str) -> None:
        self.stage, self._t0 = stage, time.perf_counter()
        self.update(0.0)

    def update(self, fraction: float, **info) -> None:
        if self.callback is None:
            return
        fraction = min(1.0, max(0.0, fraction))
        overall = self.done + self.weights.get(self.stage, 0.0) * fraction
        self.callback(self.stage, min(1.0, overall), {"stage_progress": fraction, "timings": dict(self.timings),
                                                      **info})

    def finish(self, **info) -> float:
        seconds = time.perf_counter() - self._t0
        self.timings[self.stage] = round(self.timings.get(self.stage, 0.0) + seconds, 3)
        self.update(1.0, **info)
        self.done += self.weights.get(self.stage, 0.0)
        return seconds

    def skip(self, stage: str, why: str) -> None:
        self.stage = stage
        self.timings[stage] = 0.0
        self.update(1.0, skipped=why)
        self.done += self.weights.get(stage, 0.0)


def step_reporter(tracker: Tracker, lo: float = 0.0, hi: float = 1.0):
    """An ``on_step(step, total, loss)`` training callback mapping steps onto [lo, hi] of the current stage."""
    last = [0.0]

    def on_step(step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        if step == total or now - last[0] >= 0.5:
            last[0] = now
            tracker.update(lo + (hi - lo) * step / max(1, total), step=step, steps=total,
                           loss=round(float(loss), 5))
    return on_step
