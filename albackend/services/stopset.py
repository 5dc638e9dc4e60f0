"""A project's stop set: a fixed, seeded random sample of the pool that every new model version scores, so
consecutive versions can be compared (stabilizing predictions) and the pool's uncertainty followed without the
UPS subsample's stale scores (`albackend.algorithms.stopping`).

The sample is drawn once, from the unlabeled tasks at the first retrain that scores it, and stays fixed: a sample
task annotated later is still scored (the kappa compares models, not labels). Only the newest version's
predictions are kept (to compute the next kappa), plus one small history row per version. Stored as
``stopping.json`` in the project's directory, written atomically by the training job (which holds the project's
lock); readers see the old or the new file.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from albackend.algorithms.stopping import item_labels, normalized_entropy, paired_kappa, stop_sample
from albackend.domain.examples import TaskError, is_labeled, task_text
from albackend.models.acquisition import AcquisitionModel
from albackend.settings import Settings
from albackend.services.store import ModelStore, atomic_write_text

log = logging.getLogger(__name__)
FILE_NAME = "stopping.json"


def load_state(project_dir: Path) -> dict:
    """The stop set's state ({} before the first scoring, or when the file is unreadable)."""
    try:
        state = json.loads((Path(project_dir) / FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _texts(tasks: list[dict], model: AcquisitionModel, max_chars: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for task in tasks:
        try:
            out[task["id"]] = task_text(task, model.spec, max_chars)
        except (TaskError, KeyError, TypeError):
            continue
    return out


def _sample(state: dict, tasks: list[dict], texts: dict[int, str], size: int, seed: int) -> list[int]:
    """The fixed sample; drawn (from unlabeled tasks with text) when there is none yet."""
    if state.get("sample"):
        return [int(t) for t in state["sample"]]
    pool = [t["id"] for t in tasks if t.get("id") in texts and not is_labeled(t)]
    return stop_sample(np.array(pool, dtype=np.int64), size, seed).tolist()


def score_stop_set(settings: Settings, store: ModelStore, project: str, model: AcquisitionModel,
                   tasks: list[dict], version: str, iteration: int) -> dict:
    """Score the stop set with the new version, append its kappa and uncertainty to the history."""
    t0 = time.perf_counter()
    spec = model.spec
    path = store.project_dir(project) / FILE_NAME
    state = load_state(path.parent)
    if state.get("spec") != spec.to_dict():  # a new label config starts a new series
        state = {"spec": spec.to_dict(), "history": []}
    texts = _texts(tasks, model, settings.max_text_chars)
    state["sample"] = _sample(state, tasks, texts, settings.stop_sample_size, settings.seed)
    present = [t for t in state["sample"] if t in texts]
    preds = model.predict([texts[t] for t in present], batch_size=settings.infer_batch_size)
    labels = dict(zip(present, item_labels(preds.probs, spec.kind, spec.multi_label)))
    entropy = normalized_entropy(preds.probs, spec.kind, spec.multi_label)
    last = state.get("last") or {}
    kappa = paired_kappa({int(k): np.asarray(v) for k, v in (last.get("labels") or {}).items()}, labels)
    row = {"model_version": version, "iteration": iteration, "n": len(present),
           "kappa": None if kappa is None else round(kappa, 6), "previous": last.get("model_version"),
           "uncertainty": round(float(entropy.mean()), 6) if len(present) else None,
           "at": time.time(), "seconds": round(time.perf_counter() - t0, 3)}
    state["history"] = [*state.get("history", []), row]
    state["last"] = {"model_version": version, "labels": {str(k): v.tolist() for k, v in labels.items()}}
    atomic_write_text(path, json.dumps(state))
    return row


def stop_set_round(settings: Settings, store: ModelStore, project: str, model: AcquisitionModel,
                   tasks: list[dict], info: dict) -> dict:
    """`score_stop_set` for the training job: the new version is already published, so a failure here is logged
    and shown in the job's stats, never a failed job."""
    try:
        return score_stop_set(settings, store, project, model, tasks, info["model_version"], int(info["iteration"]))
    except Exception as exc:  # noqa: BLE001 - housekeeping after the publish; the reason goes to the job record
        log.exception("project %s: stop-set scoring failed", project)
        return {"error": f"{type(exc).__name__}: {exc}"}
