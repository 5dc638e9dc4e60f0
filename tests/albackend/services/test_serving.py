"""Large /predict batches follow UPS: current-version predictions come from the store, the UPS subsample of
the stale rest is rescored, the remainder keeps its stored prediction, labelled with the current version.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel
from albackend.models.train import TrainConfig
from albackend.services.rescoring import Pool, rescore_pool
from albackend.services.serving import ModelCache, predict_tasks
from albackend.settings import Settings
from albackend.services.store import ModelStore
from tests.support.fakes import FileServer
from tests.support.tiny import make_tiny_bert

SPEC = TaskSpec("classification", "label", "text", "text", ("Sports", "Politics"))
WORDS = ["match", "goal", "league", "vote", "senate", "budget", "coach", "minister"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texts(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [" ".join(rng.choice(WORDS, size=3 + i % 5)) + f" item {i}" for i in range(n)]


@pytest.fixture
def setup(tmp_path):
    tiny = make_tiny_bert(tmp_path / "tiny")
    settings = dataclasses.replace(
        Settings.from_env(), model_dir=tmp_path / "models", acquisition_model=str(tiny), max_length=32,
        infer_batch_size=64, ups_enabled=True, ups_gamma=0.1, ups_t=0.01, ups_full_iterations="0",
        predict_ups_min_tasks=50, seed=5, device="cpu")
    store = ModelStore(settings.model_dir)
    model = AcquisitionModel.create(str(tiny), SPEC, device="cpu", max_length=32, seed=1)
    model.fit([Example(i, t, [i % 2]) for i, t in enumerate(texts(16))],
              TrainConfig(epochs=1, min_steps=3, batch_size=8, lr=1e-3, seed=1))
    model.meta["strategy"] = "least_confident"
    infos = []
    for it in range(2):  # v0 scores the full pool; v1 is published without rescoring
        with store.staging("4") as staged:
            model.save(staged)
            infos.append(store.publish("4", staged, store.next_version_name("4", it), it,
                                       strategy="least_confident"))
        if it == 0:
            pool_texts = texts(300)
            pool = Pool(np.arange(1000, 1300, dtype=np.int64), pool_texts, 0)
            rescore_pool(model, pool, project_dir=store.project_dir("4"), version=infos[0]["model_version"],
                         iteration=0, strategy="least_confident", settings=settings)
    tasks = [{"id": 1000 + i, "data": {"text": t}} for i, t in enumerate(texts(300))]
    return settings, store, infos, tasks


def test_large_batch_rescores_only_the_ups_subsample(setup):
    settings, store, infos, tasks = setup
    v1 = infos[1]["model_version"]
    results, stats = predict_tasks(settings, store, ModelCache(store, "cpu"), "4", tasks)
    assert len(results) == 300 and all(r["model_version"] == v1 for r in results)
    assert stats["from_store"] == 0
    assert stats["scored"] + stats["stale"] == 300
    # UPS keeps about gamma + T(1 - e^{-(1-gamma)/T}) = 0.11 of the stale tasks
    assert 15 <= stats["scored"] <= 60, stats
    # second call: the rescored tasks now come from the store under v1, the rest are subsampled again
    _, again = predict_tasks(settings, store, ModelCache(store, "cpu"), "4", tasks)
    assert again["from_store"] == stats["scored"]
    assert again["scored"] + again["stale"] + again["from_store"] == 300


def test_small_batch_is_scored_fresh(setup):
    settings, store, infos, tasks = setup
    results, stats = predict_tasks(settings, store, ModelCache(store, "cpu"), "4", tasks[:10])
    assert stats["scored"] == 10 and stats["stale"] == 0 and stats["from_store"] == 0
    assert all(r["result"][0]["value"]["choices"][0] in SPEC.labels for r in results)


def test_ups_off_scores_everything(setup):
    settings, store, infos, tasks = setup
    settings = dataclasses.replace(settings, ups_enabled=False)
    _, stats = predict_tasks(settings, store, ModelCache(store, "cpu"), "4", tasks)
    assert stats["scored"] == 300 and stats["stale"] == 0


def test_text_links_are_read_from_label_studio_and_an_unreadable_one_gets_no_prediction(setup):
    settings, store, infos, tasks = setup
    ls = FileServer({"/data/upload/4/a.txt": (200, b"goal league match coach", {})}, token="legacy-token-abc")
    try:
        s = dataclasses.replace(settings, label_studio_url=ls.url, label_studio_api_key="legacy-token-abc")
        batch = [{"id": 1, "data": {"text": "/data/upload/4/a.txt"}}, {"id": 2, "data": {"text": "/data/upload/4/x.txt"}},
                 {"id": 3, "data": {"text": "vote senate"}}]
        results, stats = predict_tasks(s, store, ModelCache(store, "cpu"), "4", batch)
        plain, _ = predict_tasks(s, store, ModelCache(store, "cpu"), "4", [{"id": 1, "data": {"text":
                                 "goal league match coach"}}])
        assert results[0]["score"] == pytest.approx(plain[0]["score"]) and results[0]["result"] == plain[0]["result"]
        assert results[1] == [] and results[2]["model_version"] == infos[1]["model_version"]
        assert stats["scored"] == 2
    finally:
        ls.stop()


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_the_model_cache_loads_at_the_precision_it_is_given(setup, precision):
    """The setting is read once (Settings) and handed down; the loaded model does not consult the environment."""
    _, store, infos, _ = setup
    version, model, _ = ModelCache(store, "cpu", precision).get("4")
    assert version == infos[1]["model_version"] and model.scoring_precision == precision
    assert model.predict(texts(2)).precision == precision
