"""When an annotation event queues a retrain (the retrain policy), and the webhook journal behind it.

Why: queueing a retrain on every ANNOTATION_CREATED kept the CPU retraining continuously on a busy project while
each retrain saw only one more label. A retrain is queued every N annotation events — N = the project's own
``min_annotations_to_start_training`` when set, else RETRAIN_EVERY — and always on START_TRAINING. Every event's
task ids are journalled first, so the next retrain's sync fetches exactly those tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

from albackend.settings import Settings
from albackend.services.store import ModelStore
from albackend.services.tasksync import record_webhook
from albackend.services.taskstore import TaskStore

ANNOTATION_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                                "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"})
TRAIN_ACTIONS = ANNOTATION_ACTIONS | {"START_TRAINING"}


@dataclass(frozen=True)
class RetrainDecision:
    queue: bool
    waiting: int  # annotation events since the last retrain's sync
    threshold: int


def retrain_threshold(payload: dict, settings: Settings) -> int:
    project = payload.get("project")
    n = project.get("min_annotations_to_start_training") if isinstance(project, dict) else None
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    return settings.retrain_every


def decide(action: str, waiting: int, threshold: int) -> RetrainDecision:
    """START_TRAINING always trains; annotation events once ``threshold`` of them are waiting."""
    return RetrainDecision(action == "START_TRAINING" or waiting >= threshold, waiting, threshold)


def on_train_action(store: ModelStore, settings: Settings, project: str, payload: dict) -> RetrainDecision:
    action = str(payload.get("action"))
    tasks = TaskStore(store.project_dir(project))
    waiting = record_webhook(tasks, payload) if action in ANNOTATION_ACTIONS else tasks.dirty_count()
    return decide(action, waiting, retrain_threshold(payload, settings))
