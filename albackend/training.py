"""The training job: fetch gold labels from Label Studio, fine-tune the acquisition model, publish a new
model version atomically, rescore the pool (UPS), push predictions and PATCH the project's model_version.

Runs in an RQ worker or the in-process worker. Any failure is recorded with its reason and leaves the
published model untouched: the new version becomes visible only after a complete save.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from albackend import jobs
from albackend.examples import Example, gold_examples, is_labeled
from albackend.labelconfig import ConfigError, TaskSpec, parse_label_config
from albackend.lsclient import LabelStudioClient, LabelStudioError
from albackend.models.acquisition import AcquisitionModel
from albackend.models.registry import ModelNotFound
from albackend.models.train import TrainConfig
from albackend.predictions import resolve_strategy, save_mahalanobis
from albackend.rescoring import rescore_pool, unlabeled_pool
from albackend.settings import Settings
from albackend.store import ModelStore, atomic_write_text
from albackend.strategies import fit_mahalanobis

log = logging.getLogger(__name__)


class TrainingSkipped(RuntimeError):
    """Not enough usable gold data yet: a clear reason, not a crash."""


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
    lr = settings.train_lr or (5e-5 if spec.kind == "tagging" else 1e-4)
    return TrainConfig(epochs=settings.train_epochs, min_steps=settings.train_min_steps,
                       max_steps=settings.train_max_steps, batch_size=settings.train_batch_size, lr=lr,
                       seed=settings.seed)


def check_gold(examples: list[Example], spec: TaskSpec) -> None:
    if not examples:
        raise TrainingSkipped("no usable annotated tasks yet")
    if spec.kind == "classification":
        classes = {i for e in examples for i in e.label_ids}
        if len(classes) < 2:
            raise TrainingSkipped(f"only {len(classes)} class annotated ({', '.join(spec.labels[i] for i in classes)}); "
                                  "need at least 2 classes to train a classifier")


def train_and_publish(settings: Settings, store: ModelStore, project: str, spec: TaskSpec, tasks: list[dict],
                      stats: dict) -> tuple[AcquisitionModel, dict]:
    examples, skips = gold_examples([t for t in tasks if is_labeled(t)], spec, settings.max_text_chars)
    stats.update(gold=len(examples), gold_skipped=len(skips), skip_reasons=sorted({s.reason for s in skips})[:10])
    for s in skips:
        log.info("project %s task %s not used for training: %s", project, s.task_id, s.reason)
    check_gold(examples, spec)
    strategy = resolve_strategy(spec, settings.query_strategy)
    model = AcquisitionModel.create(settings.acquisition_model, spec, device=settings.device,
                                    max_length=settings.max_length, seed=settings.seed)
    t0 = time.perf_counter()
    stats["training"] = model.fit(examples, train_config(settings, spec))
    stats["seconds"]["train"] = round(time.perf_counter() - t0, 3)
    current = store.current(project)
    iteration = (int(current["iteration"]) + 1) if current else 0
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


def training_job(project: str, job_id: str, settings: Settings | None = None) -> dict:
    """Entry point for RQ (settings from the environment) and the in-process worker (the app's settings)."""
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = ModelStore(settings.model_dir)
    record = jobs.start_record(settings, store, project, job_id)  # running, heartbeat, pending cleared
    stats: dict = {"seconds": {}}
    try:
        with jobs.project_lock(settings, store, project):
            client = ls_client(settings, store, project)
            t0 = time.perf_counter()
            spec = parse_label_config(client.get_project(project).get("label_config", ""))
            tasks = list(client.iter_tasks(project))
            stats["seconds"]["fetch"] = round(time.perf_counter() - t0, 3)
            stats["tasks"] = len(tasks)
            model, info = train_and_publish(settings, store, project, spec, tasks, stats)
            stats.update(model_version=info["model_version"], iteration=info["iteration"])
            if settings.push_predictions:
                from albackend.predictions import load_mahalanobis

                t1 = time.perf_counter()
                pool = unlabeled_pool(tasks, model, settings.max_text_chars)
                payloads, rescore = rescore_pool(model, pool, project_dir=store.project_dir(project),
                                                 version=info["model_version"], iteration=info["iteration"],
                                                 strategy=info["strategy"], settings=settings,
                                                 fit=load_mahalanobis(Path(info["path"])))
                stats["rescore"] = rescore
                t2 = time.perf_counter()
                stats["predictions_pushed"] = client.import_predictions(project, payloads)
                client.patch_project(project, {"model_version": info["model_version"]})
                stats["seconds"].update(rescore=round(t2 - t1, 3), push=round(time.perf_counter() - t2, 3))
        record.update(state="finished", stats=stats)
    except (TrainingSkipped, ConfigError, LabelStudioError, ModelNotFound, ValueError) as exc:
        log.warning("project %s: training job %s did not publish a model: %s", project, job_id, exc)
        record.update(state="failed", **jobs.failure(exc), stats=stats)
    except Exception as exc:
        log.exception("project %s: training job %s crashed", project, job_id)
        record.update(state="failed", **jobs.failure(exc), stats=stats)
    finally:  # redacted, JSON-safe, heartbeat stopped
        record = jobs.finish_record(settings, store, project, record)
    log.info("project %s: job %s %s in %.1fs", project, job_id, record["state"], record["duration_s"])
    return record
