"""After a retrain: rescore the unlabeled pool (UPS subsample on non-full iterations), remember the scores,
and hand Label Studio the new predictions chunk by chunk, most uncertain first, so its uncertainty queue serves
a task ranked by the new model within seconds of the first chunk.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from albackend.domain.examples import TaskError, is_labeled, task_text
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel
from albackend.services.predictions import ls_predictions, uncertainty
from albackend.services.predstore import PredictionStore
from albackend.settings import Settings
from albackend.algorithms.strategies import MahalanobisFit
from albackend.algorithms.ups.cache import ScoreCache
from albackend.algorithms.ups.round import ScoreFn, UPSConfig, plan_round, run_round
from albackend.algorithms.ups.sampler import FullPoolSchedule

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """The unlabeled tasks that carry usable text."""

    task_ids: np.ndarray
    texts: list[str]
    skipped: int


def unlabeled_pool(tasks: list[dict], model: AcquisitionModel, max_chars: int) -> Pool:
    return pool_of(tasks, model.spec, max_chars)


def pool_of(tasks: list[dict], spec: TaskSpec, max_chars: int) -> Pool:
    """The unlabeled tasks with an integer id and usable text for ``spec`` (the others logged and counted)."""
    ids, texts, skipped = [], [], 0
    for task in tasks:
        if is_labeled(task) or not isinstance(task.get("id"), int):
            continue
        try:
            text = task_text(task, spec, max_chars)
        except TaskError as exc:
            log.info("task %s left out of the pool: %s", task.get("id"), exc)
            skipped += 1
            continue
        ids.append(task["id"])
        texts.append(text)
    return Pool(np.asarray(ids, dtype=np.int64), texts, skipped)


def ups_config(settings: Settings) -> UPSConfig:
    schedule = FullPoolSchedule.parse(settings.ups_full_iterations, every=settings.ups_full_every,
                                      enabled=settings.ups_enabled)
    return UPSConfig(settings.ups_gamma, settings.ups_t, schedule)


def score_texts(model: AcquisitionModel, texts: list[str], strategy: str, version: str, batch_size: int,
                fit: MahalanobisFit | None, seed: int) -> tuple[np.ndarray, list[dict], dict]:
    """Uncertainty and LS predictions for texts, plus throughput figures."""
    preds = model.predict(texts, batch_size=batch_size, embeddings=strategy == "mahalanobis")
    unc = uncertainty(preds, model.spec, strategy, seed=seed, fit=fit)
    results = ls_predictions(model, texts, preds, unc, strategy, version)
    return unc, results, {"tokens": preds.n_tokens, "inference_s": preds.seconds}


Publish = Callable[[list[dict], int, int], None]
Demote = Callable[[np.ndarray, list[dict]], int]  # edits a chunk's scores in place, returns how many it demoted


def rescore_pool(model: AcquisitionModel, pool: Pool, *, project_dir: Path, version: str, iteration: int,
                 strategy: str, settings: Settings, fit: MahalanobisFit | None = None,
                 publish: Publish | None = None,
                 scale_out: Callable[[ScoreFn], ScoreFn] | None = None,
                 demote: Demote | None = None) -> tuple[list[dict], dict]:
    """One AL round (`albackend.algorithms.ups.round`) with this model as the scorer, most important tasks first.

    After each chunk the score cache and prediction store are saved and ``publish(payloads, done, total)`` is
    called, so Label Studio can serve the most uncertain tasks of the new model long before the whole selection
    is scored. ``scale_out`` wraps the local scorer (e.g. `albackend.services.sharding.ShardedScorer`: RQ
    workers); ``demote`` raises the scores of near-duplicates at the top of what is published (the score cache
    keeps the model's uncertainty).
    Returns every LS prediction payload ({task, result, score, model_version}) and the job's stats.
    """
    t0 = time.perf_counter()
    cache_path = project_dir / "scores.npz"
    cache = ScoreCache.load(cache_path)
    plan = plan_round(cache, pool.task_ids, iteration, ups_config(settings), settings.seed)
    pos = {int(t): i for i, t in enumerate(pool.task_ids)}
    store = PredictionStore(project_dir / "predictions.sqlite")
    payloads: list[dict] = []
    tokens, demoted = 0, 0

    def score(ids: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        nonlocal tokens
        texts = [pool.texts[pos[int(t)]] for t in ids]
        unc, results, figures = score_texts(model, texts, strategy, version, settings.infer_batch_size, fit,
                                            settings.seed + iteration)
        tokens += figures["tokens"]
        return unc, results

    def on_chunk(ids: np.ndarray, unc: np.ndarray, results: list[dict]) -> None:
        nonlocal demoted
        cache.save(cache_path)
        demoted += demote(ids, results) if demote is not None else 0
        store.put((int(t), version, r["score"], r["result"]) for t, r in zip(ids, results))
        chunk = [{"task": int(t), **r} for t, r in zip(ids, results)]
        payloads.extend(chunk)
        if publish is not None:
            publish(chunk, len(payloads), len(plan.order))

    t1 = time.perf_counter()
    figures = run_round(cache, plan, scale_out(score) if scale_out else score, version,
                        first_chunk=settings.publish_first_chunk,
                        chunk_size=settings.publish_chunk, on_chunk=on_chunk)
    cache.save(cache_path)
    stats = {**{k: v for k, v in figures.items() if not k.endswith("_s")},
             "pool_tasks_without_text": pool.skipped, "tokens_scored": tokens, "near_duplicates_demoted": demoted,
             "seconds": {"select": round(t1 - t0, 4), "score": figures["score_s"], "round": figures["round_s"]}}
    if stats["scored"]:
        stats["tasks_per_s"] = round(stats["scored"] / max(figures["score_s"], 1e-9), 2)
    log.info("rescored %d of %d pool tasks (%s, %.1fs, %d skipped by UPS)", stats["scored"], stats["pool_size"],
             "full pool" if plan.full else "UPS subsample", figures["round_s"], stats["skipped_by_ups"])
    return payloads, stats
