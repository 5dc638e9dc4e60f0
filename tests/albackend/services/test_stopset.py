"""albackend.services.stopset with a tiny real model: a fixed sample of the pool, a kappa per new version, a history."""
from __future__ import annotations

import dataclasses

import pytest

from albackend.models.acquisition import AcquisitionModel
from albackend.settings import Settings
from albackend.services.stopset import FILE_NAME, load_state, score_stop_set, stop_set_round
from albackend.services.store import ModelStore
from albackend.services.training import train_and_publish
from tests.albackend.services.test_training import CLS, NER, labeled_tasks, pool_tasks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def settings(tiny, tmp_path):
    return dataclasses.replace(
        Settings.from_env(), model_dir=tmp_path / "models", acquisition_model=tiny, train_epochs=1,
        train_min_steps=4, train_batch_size=8, train_lr=1e-3, max_length=32, max_text_chars=1000, seed=11,
        device="cpu", stop_sample_size=20)


def test_the_sample_is_fixed_and_each_version_gets_a_kappa(settings):
    store = ModelStore(settings.model_dir)
    tasks = labeled_tasks() + pool_tasks(30)
    model, info = train_and_publish(settings, store, "1", CLS, tasks, {"seconds": {}})
    first = score_stop_set(settings, store, "1", model, tasks, info["model_version"], 0)
    state = load_state(store.project_dir("1"))
    sample = state["sample"]
    assert len(sample) == 20 and set(sample) <= {t["id"] for t in pool_tasks(30)}  # unlabeled tasks only
    assert first["kappa"] is None and first["n"] == 20 and 0.0 <= first["uncertainty"] <= 1.0

    again = score_stop_set(settings, store, "1", model, tasks, "same-model-again", 0)
    assert again["kappa"] == 1.0 and again["previous"] == info["model_version"]  # identical predictions

    model2, info2 = train_and_publish(settings, store, "1", CLS, tasks[:-5], {"seconds": {}})  # 5 tasks gone
    third = score_stop_set(settings, store, "1", model2, tasks[:-5], info2["model_version"], 1)
    state = load_state(store.project_dir("1"))
    assert state["sample"] == sample and third["n"] == 20 - sum(t in sample for t in range(1025, 1030))
    assert -1.0 <= third["kappa"] <= 1.0
    assert [h["model_version"] for h in state["history"]] == [info["model_version"], "same-model-again",
                                                              info2["model_version"]]
    assert state["last"]["model_version"] == info2["model_version"]


def test_a_new_label_config_starts_a_new_series(settings, tiny):
    store = ModelStore(settings.model_dir)
    tasks = labeled_tasks() + pool_tasks(10)
    model, info = train_and_publish(settings, store, "1", CLS, tasks, {"seconds": {}})
    score_stop_set(settings, store, "1", model, tasks, info["model_version"], 0)
    tagger = AcquisitionModel.create(tiny, NER, device="cpu", max_length=32, seed=1)
    row = score_stop_set(settings, store, "1", tagger, tasks, "ner-v", 1)
    state = load_state(store.project_dir("1"))
    assert row["kappa"] is None and [h["model_version"] for h in state["history"]] == ["ner-v"]
    assert state["spec"]["kind"] == "tagging" and all(isinstance(v, list) for v in state["last"]["labels"].values())


def test_a_failure_is_reported_not_raised(settings):
    store = ModelStore(settings.model_dir)
    tasks = labeled_tasks() + pool_tasks(10)
    model, info = train_and_publish(settings, store, "1", CLS, tasks, {"seconds": {}})
    (store.project_dir("1") / FILE_NAME).mkdir()  # the state file cannot be written
    out = stop_set_round(settings, store, "1", model, tasks, info)
    assert out["error"].startswith(("IsADirectoryError", "OSError", "PermissionError"))
