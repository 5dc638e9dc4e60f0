"""A project's figures in one place: prequential agreement, stopping advice, labels per class, the pool's
uncertainty, UPS rounds and the job timeline. The dashboard (`albackend.adapters.dashboard`), /metrics
(`albackend.adapters.prommetrics`) and the one-line summary in Label Studio all read them from here, so the three never
disagree. Everything comes from the project's files (no model is loaded), so it is cheap enough per request.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np

from albackend.algorithms.prequential import by_version, headline, recent, rolling, scores
from albackend.algorithms.stopping import (CONSIDER, STOP, curve_plateau, kappa_average, overall_uncertainty,
                                           recommend, stabilizing_predictions)
from albackend.services.quality import QualityStore
from albackend.settings import Settings
from albackend.services.stopset import load_state
from albackend.services.store import ModelStore
from albackend.algorithms.strategies import confidence
from albackend.algorithms.ups.cache import ScoreCache

MIN_OUTCOMES = 5  # a version judged on fewer annotations is too noisy for the plateau criterion
HIST_BINS = 20
STAGES = ("sync", "train", "publish", "stop_set")  # a job's stages, one after the other (publish: rescore + push)


_QUALITY: dict[tuple[str, int, int], dict] = {}  # (quality.sqlite, its write counter, window) -> figures
_QUALITY_LOCK = threading.Lock()


def quality_figures(settings: Settings, project_dir: Path) -> dict:
    """Prequential agreement per version, over the last QUALITY_WINDOW annotations, and as a rolling series;
    computed once per change of the project's outcomes (tens of thousands take a second to read and score)."""
    store = QualityStore(project_dir)
    key = (str(store.path), store.writes(), settings.quality_window)
    with _QUALITY_LOCK:
        if key not in _QUALITY:
            for old in [k for k in _QUALITY if k[0] == key[0]]:
                del _QUALITY[old]
            _QUALITY[key] = _quality(settings, store)
        return _QUALITY[key]


def _quality(settings: Settings, store: QualityStore) -> dict:
    kind, outcomes = store.outcomes()
    if kind is None:
        return {"kind": None, "n": 0, "curve": [], "window": {}, "agreement": None, "rolling": ([], [])}
    window = {**scores(kind, recent(outcomes, settings.quality_window)), "size": settings.quality_window}
    at, values = rolling(kind, outcomes, settings.quality_window)
    return {"kind": kind, "n": len(outcomes), "curve": by_version(kind, outcomes), "window": window,
            "agreement": headline(kind, window), "rolling": (at.tolist(), values.tolist())}


def stopping_figures(settings: Settings, project_dir: Path, quality: dict) -> dict:
    """The stop set's history and the recommendation of `albackend.algorithms.stopping.recommend`."""
    history = load_state(project_dir).get("history") or []
    kappas = [h["kappa"] for h in history if h.get("kappa") is not None]
    unc = history[-1].get("uncertainty") if history else None
    curve = [headline(quality["kind"], c) for c in quality["curve"] if c["n"] >= MIN_OUTCOMES]
    w = settings.stop_window
    rec = recommend([stabilizing_predictions(kappas, w, settings.stop_kappa),
                     overall_uncertainty(unc, settings.stop_uncertainty),
                     curve_plateau(curve, w, settings.stop_min_gain)])
    rec["kappa_average"] = kappa_average(kappas, w, settings.stop_kappa).as_dict()
    return {"history": history, "recommendation": rec}


def pool_uncertainty(project_dir: Path, current: dict) -> dict:
    """Histogram of the pool's last scores (LS `score`: lower = more uncertain), by the current version or older."""
    cache = ScoreCache.load(Path(project_dir) / "scores.npz")
    unc = np.asarray(cache.uncertainty, dtype=np.float64)
    scored = ~np.isnan(unc)
    strategy = current.get("strategy") or "least_confident"
    conf = np.clip(confidence(np.nan_to_num(unc), strategy), 0.0, 1.0)
    version = current.get("model_version")
    idx = cache.versions.index(version) if version in cache.versions else -2
    fresh = scored & (np.asarray(cache.version_idx) == idx)
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    return {"edges": edges.tolist(), "current": np.histogram(conf[fresh], edges)[0].tolist(),
            "older": np.histogram(conf[scored & ~fresh], edges)[0].tolist(), "pool": int(len(cache)),
            "scored": int(scored.sum()), "by_current": int(fresh.sum()),
            "mean_score": float(conf[scored].mean()) if scored.any() else None, "strategy": strategy}


def ups_rounds(jobs: list[dict]) -> list[dict]:
    """Per finished retrain (oldest first): pool, scored (UPS kept + new tasks), skipped, full or subsample."""
    rows = []
    for job in reversed(jobs):
        s = job.get("stats") or {}
        r = s.get("rescore") or {}
        if job.get("state") == "finished" and "pool_size" in r:
            rows.append({"iteration": s.get("iteration"), "model_version": s.get("model_version"),
                         "full_pool": r.get("full_pool"), "pool": r["pool_size"], "scored": r.get("scored", 0),
                         "new": r.get("pool_added", 0), "skipped": r.get("skipped_by_ups", 0),
                         "score_s": (r.get("seconds") or {}).get("score")})
    return rows


def job_timeline(jobs: list[dict]) -> list[dict]:
    """Each job (newest first): state, trigger, times, seconds per stage and the live progress."""
    out = []
    for job in jobs:
        s = job.get("stats") or {}
        secs = s.get("seconds") or {}
        out.append({"id": job.get("id"), "state": job.get("state"), "trigger": job.get("trigger"),
                    "queued_at": job.get("queued_at"), "started_at": job.get("started_at"),
                    "duration_s": job.get("duration_s"), "reason": job.get("reason"),
                    "iteration": s.get("iteration"), "stages": {k: secs[k] for k in STAGES if secs.get(k)},
                    "progress": job.get("progress") if job.get("state") == "running" else None})
    return out


def _as_recorded(record: dict) -> dict:
    return record


def project_figures(settings: Settings, store: ModelStore, project: str,
                    reconcile: Callable[[dict], dict] = _as_recorded) -> dict:
    """Every figure of the dashboard for one project (``reconcile``: the job queue's check of a record against
    its worker; the training job itself reads the records as they are)."""
    pdir = store.project_dir(project)
    current = store.current(project) or {}
    jobs = [reconcile(j) for j in store.jobs(project, limit=settings.job_history)]
    last = next((j.get("stats") or {} for j in jobs if j.get("state") == "finished"), {})
    quality = quality_figures(settings, pdir)
    return {"project": project, "model_version": current.get("model_version"), "iteration": current.get("iteration"),
            "quality": quality, "stopping": stopping_figures(settings, pdir, quality),
            "labels": last.get("labels") or {}, "gold": last.get("gold"), "pool": pool_uncertainty(pdir, current),
            "ups": ups_rounds(jobs), "jobs": job_timeline(jobs)}


def summary_line(figures: dict) -> str:
    """What Label Studio shows under the ML backend, e.g. "it 6 · agreement 0.84 (n=50) · stop: not yet"."""
    q = figures["quality"]
    name = "span F1" if q["kind"] == "tagging" else "agreement"
    agreement = f"{name} {q['agreement']:.2f} (n={q['window'].get('n')})" if q["agreement"] is not None else \
        f"{name} –"  # no annotation of a predicted task yet
    decision = figures["stopping"]["recommendation"]["decision"]
    advice = {STOP: "yes", CONSIDER: "consider"}.get(decision, "not yet")
    it = figures["iteration"]
    return f"it {it if it is not None else '–'} · {agreement} · stop: {advice}"
