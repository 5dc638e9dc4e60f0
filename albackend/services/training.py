"""The training job: sync the task mirror with Label Studio (only what changed), fine-tune the acquisition model,
publish a new model version atomically, then rescore the pool (UPS) most-uncertain-first, pushing predictions
chunk by chunk and PATCHing the project's model_version after the first chunk.

Runs in an RQ worker or the in-process worker. Any failure is recorded with its reason and leaves the
published model untouched: the new version becomes visible only after a complete save.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from albackend.services import jobs
from albackend.domain.examples import Example, gold_examples, is_labeled, label_counts
from albackend.domain.labelconfig import ConfigError, TaskSpec, parse_label_config
from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError
from albackend.services.lsstate import StateReporter
from albackend.models.acquisition import AcquisitionModel
from albackend.models.registry import ModelNotFound
from albackend.models.train import TrainConfig, default_train_config, warm_train_config
from albackend.services.predictions import StrategyError, load_mahalanobis, resolve_strategy, save_mahalanobis
from albackend.services.publish import Publisher, prune_versions
from albackend.services.sharding import ShardedScorer
from albackend.services.rescoring import rescore_pool, unlabeled_pool
from albackend.services.embeddings import near_duplicate_filter
from albackend.settings import Settings
from albackend.services.lssummary import summary_round
from albackend.services.stopset import stop_set_round
from albackend.services.store import ModelStore, atomic_write_text
from albackend.algorithms.strategies import fit_mahalanobis
from albackend.services.tasksync import sync_project
from albackend.services.taskstore import TaskStore
from albackend.services.textlinks import drop_skips, project_links
from albackend.algorithms.warmstart import retrain_mode
from albackend.algorithms.ups.round import ScoreFn

log = logging.getLogger(__name__)


class TrainingSkipped(RuntimeError):
    """Not enough usable gold data yet: a clear reason, not a crash."""


# A job that ends with one of these failed for a reason its message states (data, configuration, LS, model name).
EXPECTED_FAILURES = (TrainingSkipped, ConfigError, LabelStudioError, ModelNotFound, StrategyError)


def save_connection(store: ModelStore, project: str, hostname: str, access_token: str) -> None:
    """Remember how to call LS back (from /setup) without passing the token through Redis or logs."""
    path = store.project_dir(project) / "connection.json"
    atomic_write_text(path, json.dumps({"hostname": hostname or "", "access_token": access_token or ""}))
    os.chmod(path, 0o600)


def ls_client(settings: Settings, store: ModelStore, project: str) -> LabelStudioClient:
    """The client for calling LS back. The host rule: the environment's API key is only ever sent to the
    environment's LABEL_STUDIO_URL, never to a hostname that arrived in a /setup request (anyone who can
    reach /setup could name their own host and collect the key; it would also be an SSRF)."""
    try:
        conn = json.loads((store.project_dir(project) / "connection.json").read_text())
    except (OSError, ValueError):
        conn = {}
    if settings.label_studio_api_key:
        if not settings.label_studio_url:
            raise LabelStudioError("LABEL_STUDIO_API_KEY is set but LABEL_STUDIO_URL is not: the key is only sent "
                                   "to LABEL_STUDIO_URL, never to a hostname sent in /setup; set LABEL_STUDIO_URL")
        return LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key)
    return LabelStudioClient(settings.label_studio_url or conn.get("hostname", ""), conn.get("access_token", ""))


def train_config(settings: Settings, spec: TaskSpec) -> TrainConfig:
    """The product recipe for the spec's kind (albackend.models.train.default_train_config), env overrides."""
    overrides = {k: v for k, v in (("lr", settings.train_lr), ("head_lr", settings.train_head_lr)) if v}
    return default_train_config(spec.kind, settings.seed, epochs=settings.train_epochs,
                                min_steps=settings.train_min_steps, max_steps=settings.train_max_steps,
                                batch_size=settings.train_batch_size, **overrides)


def check_gold(examples: list[Example], spec: TaskSpec, min_tagged: int = 1) -> None:
    """Refuse (TrainingSkipped, with the reason) gold too thin to train on: no examples, one class for a classifier,
    fewer than ``min_tagged`` sentences with an entity span for a tagger (a tagger trained on one sentence ranks
    the pool by noise and holds the job slot for minutes)."""
    if not examples:
        raise TrainingSkipped("no usable annotated tasks yet")
    if spec.kind == "classification":
        classes = {i for e in examples for i in e.label_ids}
        if len(classes) < 2:
            raise TrainingSkipped(f"only {len(classes)} class annotated ({', '.join(spec.labels[i] for i in classes)}); "
                                  "need at least 2 classes to train a classifier")
    elif (tagged := sum(1 for e in examples if e.spans)) < min_tagged:
        raise TrainingSkipped(f"only {tagged} annotated sentence{'' if tagged == 1 else 's'} with an entity span; need "
                              f"at least {min_tagged} to train a tagger (MIN_TAGGED_SENTENCES)")


def train_and_publish(settings: Settings, store: ModelStore, project: str, spec: TaskSpec, tasks: list[dict],
                      stats: dict) -> tuple[AcquisitionModel, dict]:
    examples, skips = gold_examples([t for t in tasks if is_labeled(t)], spec, settings.max_text_chars)
    stats.update(gold=len(examples), gold_skipped=len(skips), skip_reasons=sorted({s.reason for s in skips})[:10],
                 labels=label_counts(examples, spec))
    for s in skips:
        log.info("project %s task %s not used for training: %s", project, s.task_id, s.reason)
    check_gold(examples, spec, settings.min_tagged_sentences)
    strategy = resolve_strategy(spec, settings.query_strategy)
    current = store.current(project)
    iteration = (int(current["iteration"]) + 1) if current else 0
    mode = retrain_mode(iteration, settings.scratch_every, enabled=settings.warm_start, has_previous=bool(current))
    model = AcquisitionModel.create(settings.acquisition_model, spec, device=settings.device,
                                    max_length=settings.max_length, seed=settings.seed,
                                    init_from=current["path"] if mode == "warm" else None,
                                    scoring_precision=settings.scoring_precision)
    config = train_config(settings, spec)
    if model.warm_started:
        config = warm_train_config(config, len(examples), settings.warm_start_steps_fraction)
    t0 = time.perf_counter()
    stats["training"] = {**model.fit(examples, config), "mode": "warm" if model.warm_started else "scratch"}
    stats["seconds"]["train"] = round(time.perf_counter() - t0, 3)
    version = store.next_version_name(project, iteration)
    model.meta.update(model_version=version, iteration=iteration, strategy=strategy, project=project)
    with store.staging(project) as staged:
        model.save(staged)
        if strategy == "mahalanobis":
            emb = model.predict([e.text for e in examples], batch_size=settings.infer_batch_size,
                                embeddings=True).embeddings
            save_mahalanobis(staged, fit_mahalanobis(emb, np.array([e.label_ids[0] for e in examples])))
        info = store.publish(project, staged, version, iteration, strategy=strategy, gold=len(examples))
    log.info("project %s: published %s (iteration %d, %d gold)", project, version, iteration, len(examples))
    return model, info


def publish_round(settings: Settings, store: ModelStore, client: LabelStudioClient, project: str,
                  project_info: dict, model: AcquisitionModel, tasks: list[dict], info: dict,
                  progress: Callable[[dict], None]) -> dict:
    """Rescore the pool most-uncertain-first, pushing each chunk and making the version current after the first,
    then delete superseded versions from Label Studio."""
    version = info["model_version"]
    pool = unlabeled_pool(tasks, model, settings.max_text_chars)
    publisher = Publisher(client, project, version, settings, project_info, progress)
    sharded: ShardedScorer | None = None

    def scale_out(local: ScoreFn) -> ScoreFn:
        nonlocal sharded
        sharded = ShardedScorer(settings, store, project, version, local, jobs.redis_client(settings),
                                jobs.rq_queue(settings))
        return sharded

    use_rq = bool(settings.redis_url) and settings.score_shard_size > 0
    pos = {int(t): i for i, t in enumerate(pool.task_ids)}
    demote = near_duplicate_filter(settings, store.project_dir(project),
                                   lambda ids: [pool.texts[pos[int(t)]] for t in ids])
    try:
        _, rescore = rescore_pool(model, pool, project_dir=store.project_dir(project), version=version,
                                  iteration=info["iteration"], strategy=info["strategy"], settings=settings,
                                  fit=load_mahalanobis(Path(info["path"])), publish=publisher,
                                  scale_out=scale_out if use_rq else None, demote=demote)
    finally:
        publisher.finish()
    if sharded is not None:
        rescore["sharding"] = sharded.figures
    if publisher.current_after_s is None:  # an empty pool: still make the new model the project's version
        try:
            publisher.make_current()
        except LabelStudioError as exc:  # LS accepts a version only once it has a prediction
            log.info("project %s: model_version not switched (no predictions of %s): %s", project, version, exc)
    t = time.perf_counter()
    # only once our version is the project's: LS resets project.model_version when it deletes predictions while
    # the project still points at the ML backend's title
    deleted, prune_error = prune_versions(client, project, version, settings.keep_prediction_versions) \
        if publisher.current_after_s is not None else ({}, None)
    return {"rescore": rescore, **publisher.figures(), "pruned_versions": deleted, "prune_error": prune_error,
            "prune_s": round(time.perf_counter() - t, 3)}


def run_iteration(settings: Settings, store: ModelStore, project: str, stats: dict,
                  progress: Callable[[dict], None]) -> None:
    """Sync the task mirror, train, publish, and (with PUSH_PREDICTIONS) the progressive round."""
    t0 = time.perf_counter()
    client = ls_client(settings, store, project)
    project_info, sync = sync_project(client, TaskStore(store.project_dir(project)), project)
    stats["sync"] = sync.as_dict()
    spec = parse_label_config(project_info.get("label_config", ""))
    links = project_links(settings, store.project_dir(project), spec.value_key, lambda: client)
    tasks = drop_skips(links.resolve(list(TaskStore(store.project_dir(project)).iter_tasks())))
    stats["text_links"] = links.figures
    stats["seconds"]["sync"] = round(time.perf_counter() - t0, 3)
    stats["tasks"] = len(tasks)
    progress({"phase": "training"})
    model, info = train_and_publish(settings, store, project, spec, tasks, stats)
    stats.update(model_version=info["model_version"], iteration=info["iteration"])
    if settings.push_predictions:
        progress({"phase": "publishing"})
        t1 = time.perf_counter()
        figures = publish_round(settings, store, client, project, project_info, model, tasks, info, progress)
        stats.update(figures)
        stats["seconds"].update(rescore=figures["rescore"]["seconds"]["score"], push=figures["push_s"],
                                push_wait=figures["push_wait_s"], publish=round(time.perf_counter() - t1, 3))
        if figures["current_after_s"] is not None:
            stats["seconds"]["first_publish"] = round(t1 - t0 + figures["current_after_s"], 3)
    if settings.stop_sample_size > 0:
        progress({"phase": "stop set"})
        stats["stop_set"] = stop_set_round(settings, store, project, model, tasks, info)
        stats["seconds"]["stop_set"] = stats["stop_set"].get("seconds")
    if settings.ls_summary:
        stats["ls_summary"] = summary_round(settings, store, client, project)
    stats["bytes_fetched"] = client.bytes_received


def training_job(project: str, job_id: str, settings: Settings | None = None) -> dict:
    """Entry point for RQ (settings from the environment) and the in-process worker (the app's settings)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings.model_dir)
    record = jobs.start_record(settings, store, project, job_id)  # running, heartbeat, pending cleared
    stats: dict = {"seconds": {}}
    show_state = StateReporter(settings.ls_training_state, project, lambda: ls_client(settings, store, project))
    show_state(record, store.current(project))

    def progress(figures: dict) -> None:
        record["progress"] = {**(record.get("progress") or {}), **figures}
        store.write_job(project, record)
        show_state(record, store.current(project))

    try:
        with jobs.project_lock(settings, store, project):
            run_iteration(settings, store, project, stats, progress)
        record.update(state="finished", stats=stats)
    except EXPECTED_FAILURES as exc:  # the reason is the message; anything else is a bug and logs its traceback
        log.warning("project %s: training job %s did not publish a model: %s", project, job_id, exc)
        record.update(state="failed", **jobs.failure(exc), stats=stats)
    except Exception as exc:
        log.exception("project %s: training job %s crashed", project, job_id)
        record.update(state="failed", **jobs.failure(exc), stats=stats)
    finally:  # redacted, JSON-safe, heartbeat stopped
        record = jobs.finish_record(settings, store, project, record)
    show_state(record, store.current(project))
    show_state.close()
    log.info("project %s: job %s %s in %.1fs", project, job_id, record["state"], record["duration_s"])
    return record
