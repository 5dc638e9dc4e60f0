"""/predict: the current model of a project, kept loaded per process and reloaded when a job publishes.

Large batches (at least PREDICT_UPS_MIN_TASKS, e.g. "Retrieve predictions" over a whole project) follow
UPS: tasks whose stored prediction comes from the current model version are answered from the
prediction store, the UPS subsample of the rest (plus tasks never scored) is scored now, and the remaining
tasks get their last stored prediction with its (stale) score, labelled with the current version so Label
Studio keeps exactly one prediction per task and version. Small batches are always scored fresh.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from albackend.domain.examples import Skip, TaskError, int64_id, task_text
from albackend.models.acquisition import AcquisitionModel
from albackend.services.predictions import load_mahalanobis
from albackend.services.predstore import PredictionStore
from albackend.services.rescoring import score_texts
from albackend.services.coldstart import cold_start_answers
from albackend.settings import Settings
from albackend.services.store import ModelStore
from albackend.services.textlinks import project_links
from albackend.services.training import ls_client
from albackend.algorithms.ups.cache import ScoreCache
from albackend.algorithms.ups.round import UPSConfig, plan_round
from albackend.algorithms.ups.sampler import FullPoolSchedule

log = logging.getLogger(__name__)


class ModelCache:
    """One loaded model per project per process; a publish elsewhere is noticed via CURRENT."""

    def __init__(self, store: ModelStore, device: str, scoring_precision: str = "auto"):
        self.store, self.device, self.scoring_precision = store, device, scoring_precision
        self._models: dict[str, tuple[str, AcquisitionModel, object]] = {}
        self._lock = threading.Lock()

    def get(self, project: str) -> tuple[str, AcquisitionModel, object] | None:
        info = self.store.current(project)
        if info is None:
            return None
        with self._lock:
            cached = self._models.get(project)
            if cached and cached[0] == info["model_version"]:
                return cached
            model = AcquisitionModel.load(info["path"], device=self.device, scoring_precision=self.scoring_precision)
            entry = (info["model_version"], model, load_mahalanobis(Path(info["path"])))
            self._models[project] = entry
            log.info("project %s: loaded model %s", project, info["model_version"])
            return entry


def no_model_results(settings: Settings, store: ModelStore, project: str,
                     tasks: list[dict]) -> tuple[list, dict]:
    """/predict before the project has a model: no prediction for any task.

    One empty list per task: Label Studio reads each entry as the task's list of predictions and stores none (an
    empty ``result`` would be stored as an empty prediction of the placeholder version on every task an annotator
    opens). The one place that answers for a project without a model: the cold-start ranking when there is one
    (scores that order the pool by representativeness), else nothing.
    """
    cold = cold_start_answers(settings, store, project, tasks)
    if cold is not None:
        return cold, {"model": None, "cold_start": True}
    return [[] for _ in tasks], {"model": None}


def predict_tasks(settings: Settings, store: ModelStore, cache: ModelCache, project: str,
                  tasks: list[dict]) -> tuple[list, dict]:
    """Exactly one entry per task, in order: a prediction, or (no model yet) an empty list of predictions.
    Returns (results, stats)."""
    loaded = cache.get(project)
    if loaded is None:
        return no_model_results(settings, store, project, tasks)
    version, model, fit = loaded
    strategy = model.meta.get("strategy", "least_confident")
    results: list[dict | list | None] = [None] * len(tasks)
    texts: dict[int, str] = {}
    links = project_links(settings, store.project_dir(project), model.spec.value_key,
                          lambda: ls_client(settings, store, project))
    for i, task in enumerate(links.resolve(tasks)):
        if isinstance(task, Skip):  # an unreadable text link: no prediction now, LS asks again later
            results[i] = []
            continue
        try:
            text = task_text(task, model.spec, settings.max_text_chars)
        except TaskError as exc:
            log.info("predict: task %s answered with an empty result: %s", task.get("id") if isinstance(task, dict) else None, exc)
            results[i] = {"result": [], "score": 0.0, "model_version": version}
            continue
        texts[i] = text
    to_score = sorted(texts)
    stats = {"model": version, "tasks": len(tasks), "from_store": 0, "stale": 0}
    if len(tasks) >= settings.predict_ups_min_tasks and settings.ups_enabled:
        to_score = _serve_from_store(settings, store, project, tasks, texts, results, version, stats,
                                     int(model.meta.get("iteration") or 0))
    if to_score:
        unc, fresh, _ = score_texts(model, [texts[i] for i in to_score], strategy, version, settings.infer_batch_size, fit,
                                    settings.seed)
        for i, r in zip(to_score, fresh):
            results[i] = r
        ids = [tasks[i].get("id") for i in to_score]
        known = [(j, t) for j, t in enumerate(ids) if int64_id(t) is not None]
        if known:
            PredictionStore(store.project_dir(project) / "predictions.sqlite").put(
                (t, version, fresh[j]["score"], fresh[j]["result"]) for j, t in known)
    stats["scored"] = len(to_score)
    return results, stats  # type: ignore[return-value]


def batch_subsample(ids: np.ndarray, unc: np.ndarray, settings: Settings, iteration: int) -> np.ndarray:
    """Keep mask over a batch's stale tasks: the AL round's UPS plan (`albackend.algorithms.ups.round`) over just
    these tasks."""
    n = len(ids)
    view = ScoreCache(ids, unc, np.full(n, -1, np.int32), np.full(n, -1, np.int16), [])
    never_full = UPSConfig(settings.ups_gamma, settings.ups_t, FullPoolSchedule(warmup=()))
    plan = plan_round(view, ids, iteration, never_full, settings.seed)
    return np.isin(ids, plan.order)


def _serve_from_store(settings: Settings, store: ModelStore, project: str, tasks: list[dict],
                      texts: dict[int, str], results: list, version: str, stats: dict,
                      iteration: int = 0) -> list[int]:
    """Fill results from stored predictions where UPS says a rescore is not needed; return what to score."""
    pdir = store.project_dir(project)
    idx_by_id: dict[int, int] = {}
    fresh: list[int] = []  # tasks without an integer id, or repeating one: scored now, never left unanswered
    for i in texts:
        tid = tasks[i].get("id")
        if int64_id(tid) is not None and tid not in idx_by_id:
            idx_by_id[tid] = i
        else:
            fresh.append(i)
    stored = PredictionStore(pdir / "predictions.sqlite").get(list(idx_by_id))
    cache = ScoreCache.load(pdir / "scores.npz")
    ids = np.array(sorted(idx_by_id), dtype=np.int64)
    unc, _ = cache.lookup(ids)
    stale_ids = [t for t in ids.tolist() if t not in stored or stored[t][0] != version]
    for t in ids.tolist():
        if t in stored and stored[t][0] == version:
            results[idx_by_id[t]] = {"result": stored[t][2], "score": stored[t][1], "model_version": version}
            stats["from_store"] += 1
    stale = np.array(stale_ids, dtype=np.int64)
    stale_unc = unc[np.searchsorted(ids, stale)] if len(stale) else np.zeros(0, np.float32)
    keep = batch_subsample(stale, stale_unc, settings, iteration)
    to_score = [idx_by_id[t] for t, k in zip(stale.tolist(), keep) if k or t not in stored]
    for t, k in zip(stale.tolist(), keep):
        if not k and t in stored:
            results[idx_by_id[t]] = {"result": stored[t][2], "score": stored[t][1], "model_version": version}
            stats["stale"] += 1
    to_score += fresh
    return sorted(to_score)
