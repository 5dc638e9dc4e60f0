"""The functions RQ workers run (``rq worker`` imports them by name): the process-level setup an entry point owes
(quiet transformers, logging) and then the library function. The in-process queue calls the library functions
directly, with the app's settings."""
from __future__ import annotations

import logging

from albackend.models.runtime import configure_runtime
from albackend.services.coldstart import run_cold_start
from albackend.settings import Settings
from albackend.services.sharding import shard_job
from albackend.services.training import training_job
from albackend.services.store import ModelStore


def _entry() -> Settings:
    configure_runtime()
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


def train(project: str, job_id: str) -> dict:
    return training_job(project, job_id, settings=_entry())


def score_shards(project: str, version: str, round_id: str) -> dict:
    _entry()
    return shard_job(project, version, round_id)


def cold_start(project: str) -> dict:
    settings = _entry()
    return run_cold_start(settings, ModelStore(settings.model_dir), project)
