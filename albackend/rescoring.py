"""After a retrain: rescore the unlabeled pool (UPS subsample on non-full iterations), remember the scores,
and hand Label Studio the new predictions so its uncertainty queue serves the most uncertain task next.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from albackend.examples import TaskError, is_labeled, task_text
from albackend.models.acquisition import AcquisitionModel
from albackend.predictions import ls_predictions, uncertainty
from albackend.predstore import PredictionStore
from albackend.settings import Settings
from albackend.strategies import MahalanobisFit
from ups.cache import ScoreCache
from ups.sampler import FullPoolSchedule

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """The unlabeled tasks that carry usable text."""

    task_ids: np.ndarray
    texts: list[str]
    skipped: int


def unlabeled_pool(tasks: list[dict], model: AcquisitionModel, max_chars: int) -> Pool:
    ids, texts, skipped = [], [], 0
    for task in tasks:
        if is_labeled(task) or not isinstance(task.get("id"), int):
            continue
        try:
            text = task_text(task, model.spec, max_chars)
        except TaskError as exc:
            log.info("task %s left out of the pool: %s", task.get("id"), exc)
            skipped += 1
            continue
        ids.append(task["id"])
        texts.append(text)
    return Pool(np.asarray(ids, dtype=np.int64), texts, skipped)


def schedule_from(settings: Settings) -> FullPoolSchedule:
    return FullPoolSchedule.parse(settings.ups_full_iterations, every=settings.ups_full_every,
                                  enabled=settings.ups_enabled)


def score_texts(model: AcquisitionModel, texts: list[str], strategy: str, version: str, settings: Settings,
                fit: MahalanobisFit | None, seed: int) -> tuple[np.ndarray, list[dict], dict]:
    """Uncertainty and LS predictions for texts, plus throughput figures."""
    preds = model.predict(texts, batch_size=settings.infer_batch_size, embeddings=strategy == "mahalanobis")
    unc = uncertainty(preds, model.spec, strategy, seed=seed, fit=fit)
    results = ls_predictions(model, texts, preds, unc, strategy, version)
    return unc, results, {"tokens": preds.n_tokens, "inference_s": preds.seconds}


def rescore_pool(model: AcquisitionModel, pool: Pool, *, project_dir, version: str, iteration: int,
                 strategy: str, settings: Settings, fit: MahalanobisFit | None = None) -> tuple[list[dict], dict]:
    """Score the UPS subsample (or the full pool) and update the score cache and prediction store.

    Returns LS prediction payloads ({task, result, score, model_version}) and the job's stats.
    """
    t0 = time.perf_counter()
    cache_path = project_dir / "scores.npz"
    cache = ScoreCache.load(cache_path)
    added, removed = cache.sync_pool(pool.task_ids)
    full = schedule_from(settings).is_full(iteration)
    rng = np.random.default_rng(settings.seed + 7919 * iteration)
    selected = cache.select(settings.ups_gamma, settings.ups_t, rng, full)
    pos = {int(t): i for i, t in enumerate(pool.task_ids)}
    texts = [pool.texts[pos[int(t)]] for t in selected]
    t1 = time.perf_counter()
    unc, results, figures = score_texts(model, texts, strategy, version, settings, fit, settings.seed + iteration)
    t2 = time.perf_counter()
    cache.update(selected, unc.astype(np.float32), iteration, version)
    cache.save(cache_path)
    PredictionStore(project_dir / "predictions.sqlite").put(
        (int(t), version, r["score"], r["result"]) for t, r in zip(selected, results))
    payloads = [{"task": int(t), **r} for t, r in zip(selected, results)]
    stats = {
        "full_pool": bool(full), "pool_size": int(len(pool.task_ids)), "scored": int(len(selected)),
        "skipped_by_ups": int(len(pool.task_ids) - len(selected)), "pool_tasks_without_text": pool.skipped,
        "pool_added": added, "pool_removed": removed, "tokens_scored": figures["tokens"],
        "seconds": {"select": round(t1 - t0, 4), "score": round(t2 - t1, 4),
                    "cache_update": round(time.perf_counter() - t2, 4)},
    }
    if stats["scored"]:
        stats["tasks_per_s"] = round(stats["scored"] / max(t2 - t1, 1e-9), 2)
    log.info("rescored %d of %d pool tasks (%s, %.1fs, %d skipped by UPS)", stats["scored"], stats["pool_size"],
             "full pool" if full else "UPS subsample", t2 - t1, stats["skipped_by_ups"])
    return payloads, stats
