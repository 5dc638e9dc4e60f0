"""albackend.services.coldstart and .embeddings without Label Studio: /predict before any training answers the
stored cold-start ranking (a non-constant one, placing unknown tasks), the stored embeddings keep the top of a
retrain's published ranking free of duplicates, and when a cold-start round is queued at all. A real tiny encoder
and model throughout; the round itself against a real Label Studio is tests/e2e/test_coldstart_e2e.py."""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from albackend.services import jobs
from albackend.algorithms.coldstart import rank_pool
from albackend.adapters.app import create_app
from albackend.domain.labelconfig import parse_label_config
from albackend.models.encoder import SentenceEncoder
from albackend.services.predstore import PredictionStore
from albackend.services.rescoring import rescore_pool, unlabeled_pool
from albackend.services import coldstart
from albackend.services.embeddings import PoolEmbeddings, near_duplicate_filter
from albackend.settings import Settings
from albackend.services.store import ModelStore, atomic_write_text
from albackend.services.training import train_and_publish
from model import ActiveLearningModel
from tests.support.published import CLS_CONFIG, labeled
from tests.support.services import free_port

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOPICS = ["match goal striker league", "vote senate minister budget", "stocks market shares profit",
          "chip software computer internet"]


@pytest.fixture
def settings(tmp_path, tiny):
    return dataclasses.replace(
        Settings.from_env(), model_dir=tmp_path / "models", acquisition_model=tiny, redis_url="",
        label_studio_url=f"http://127.0.0.1:{free_port()}", label_studio_api_key="token-123456",
        train_epochs=1, train_min_steps=4, train_batch_size=8, train_lr=1e-3, max_length=32, infer_batch_size=16,
        cold_start=True, near_duplicate_top=10, near_duplicate_threshold=0.99, push_predictions=True, seed=3,
        device="cpu", log_level="WARNING")


def texts(n: int, start: int = 0) -> list[str]:
    return [f"{TOPICS[i % 4]} {' '.join(TOPICS[(i * 7 + k) % 4].split()[k % 4] for k in range(i % 5))} {i}"
            for i in range(start, start + n)]


def store_ranking(settings: Settings, project: str, ids: list[int], docs: list[str]) -> PoolEmbeddings:
    """What a finished cold-start round leaves behind: the pool's embeddings, ranking and scores."""
    emb = SentenceEncoder(settings.acquisition_model, device="cpu", max_length=32).embed(docs)
    data = PoolEmbeddings(settings.acquisition_model)
    data.ranking = rank_pool(emb, top=settings.near_duplicate_top, threshold=settings.near_duplicate_threshold,
                             seed=settings.seed)
    data.ranked = len(ids)
    data.add(np.array(ids), emb, data.ranking.scores)
    pdir = ModelStore(settings.model_dir).project_dir(project)
    pdir.mkdir(parents=True, exist_ok=True)
    data.save(pdir)
    return data


def test_predict_before_training_answers_the_cold_start_ranking(settings):
    client = create_app(settings, model_class=ActiveLearningModel).test_client()
    setup = {"project": "12.1712345678", "schema": CLS_CONFIG}
    assert client.post("/setup", json=setup).get_json()["model_version"] == "untrained-12"  # no ranking yet
    docs = texts(40)
    data = store_ranking(settings, "12", list(range(100, 140)), docs)
    version = client.post("/setup", json=setup).get_json()["model_version"]
    assert version == "coldstart-12"  # /setup and every result agree, so LS stores each prediction once

    tasks = [{"id": 100 + i, "data": {"text": t}} for i, t in enumerate(docs)]
    tasks += [{"id": 500, "data": {"text": "a brand new task about the league"}}, {"id": 501, "data": {}}]
    results = client.post("/predict", json={"tasks": tasks, "project": 12}).get_json()["results"]
    assert len(results) == len(tasks) and {r["model_version"] for r in results} == {version}
    scores = np.array([r["score"] for r in results])
    assert np.allclose(scores[:40], data.scores) and len(np.unique(scores[:40])) == 40  # a ranking, not constant
    assert 0.0 <= scores[40] <= 1.0 and scores[41] == 1.0  # placed; no text: last
    ledger = PredictionStore(ModelStore(settings.model_dir).project_dir("12") / coldstart.LEDGER_FILE).get([500])
    assert ledger[500][0] == version  # a later round will not push it a second time

    many = [{"id": 600 + i, "data": {"text": f"one of many new tasks {i}"}} for i in range(3)]
    tight = create_app(dataclasses.replace(settings, predict_ups_min_tasks=3),
                       model_class=ActiveLearningModel).test_client()
    results = tight.post("/predict", json={"tasks": tasks[:2] + many, "project": 12}).get_json()["results"]
    assert [r["score"] for r in results[2:]] == [1.0] * 3  # too many to embed in the request: last
    assert np.allclose([r["score"] for r in results[:2]], data.scores[:2])

    off = create_app(dataclasses.replace(settings, cold_start=False), model_class=ActiveLearningModel).test_client()
    results = off.post("/predict", json={"tasks": tasks[:3], "project": 12}).get_json()["results"]
    assert results == [[], [], []]  # cold start off and no model: no prediction (Label Studio stores none)


def test_stored_embeddings_keep_a_retrains_top_free_of_duplicates(settings):
    settings = dataclasses.replace(settings, near_duplicate_top=40)  # the whole pool is "the top"
    store = ModelStore(settings.model_dir)
    spec = parse_label_config(CLS_CONFIG)
    gold = [labeled(i, "Sports" if i % 2 else "Politics") for i in range(1, 11)]
    model, info = train_and_publish(settings, store, "7", spec, gold, {"seconds": {}})
    docs = texts(30) + [texts(1)[0]] * 3  # three more copies of the first text
    pool_tasks = [{"id": 200 + i, "data": {"text": t}} for i, t in enumerate(docs)]
    store_ranking(settings, "7", [200 + i for i in range(30)], docs[:30])  # the copies were imported later
    pool = unlabeled_pool(pool_tasks, model, settings.max_text_chars)
    pos = {int(t): i for i, t in enumerate(pool.task_ids)}
    asked: list[str] = []

    def embed(batch: list[str]) -> np.ndarray:
        asked.extend(batch)
        return SentenceEncoder(settings.acquisition_model, device="cpu", max_length=32).embed(batch)

    demote = near_duplicate_filter(settings, store.project_dir("7"), lambda ids: [pool.texts[pos[int(t)]] for t in ids],
                                   embed=embed)
    payloads, stats = rescore_pool(model, pool, project_dir=store.project_dir("7"), version=info["model_version"],
                                   iteration=0, strategy="least_confident", settings=settings, demote=demote)
    scores = {p["task"]: p["score"] for p in payloads}
    copies = [200, 230, 231, 232]
    assert sum(scores[t] < 1.0 for t in copies) == 1 and stats["near_duplicates_demoted"] >= 3
    assert all(0.0 <= s <= 1.0 for s in scores.values())  # Label Studio drops a prediction scored outside [0, 1]
    top = sorted(scores, key=scores.get)[: len(pool_tasks) - 3]
    assert len(set(copies) & set(top)) == 1  # one copy is served, the others after every distinct task
    assert set(asked) <= {docs[0]}  # only tasks without a stored embedding were embedded
    assert near_duplicate_filter(dataclasses.replace(settings, near_duplicate_threshold=0), store.project_dir("7"),
                                 lambda ids: []) is None


def test_pool_embeddings_round_trip(settings, tmp_path):
    data = store_ranking(settings, "3", [5, 9, 7], ["one text", "another text", "a third one"])
    pdir = ModelStore(settings.model_dir).project_dir("3")
    again = PoolEmbeddings.load(pdir, settings.acquisition_model)
    assert again.ids.tolist() == [5, 9, 7] and again.ranked == 3
    assert np.array_equal(again.ranking.order, data.ranking.order) and np.allclose(again.scores, data.scores)
    assert again.positions(np.array([7, 8, 5])).tolist() == [2, -1, 0]
    assert PoolEmbeddings.load(pdir, "another-encoder") is None  # stale after ACQUISITION_MODEL changes
    assert PoolEmbeddings.load(tmp_path / "nowhere", settings.acquisition_model) is None


def test_when_a_cold_start_round_is_queued(settings):
    store = ModelStore(settings.model_dir)

    def state(status: str, age: float = 0.0) -> None:
        atomic_write_text(store.project_dir("4") / coldstart.STATE_FILE,
                          json.dumps({"state": status, "updated_at": time.time() - age}))

    assert coldstart.why_not(dataclasses.replace(settings, cold_start=False), store, "4") == "off"
    nobody = dataclasses.replace(settings, label_studio_url="", label_studio_api_key="")
    assert coldstart.why_not(nobody, store, "4").startswith("no Label Studio")
    assert coldstart.why_not(settings, store, "4") is None  # never run: /setup queues one
    state("queued")
    assert coldstart.why_not(settings, store, "4", new_tasks=True) == "already queued"
    state("running", age=2 * coldstart.STALE_S)
    assert coldstart.why_not(settings, store, "4") is None  # a round silent that long died with its worker
    state("finished")
    assert coldstart.why_not(settings, store, "4") == "not needed (finished)"  # /setup: once is enough
    assert coldstart.why_not(settings, store, "4", new_tasks=True) is None  # TASKS_CREATED: place the new ones
    state("failed")
    assert coldstart.why_not(settings, store, "4") == "not needed (failed)"
    state("failed", age=2 * coldstart.RETRY_S)
    assert coldstart.why_not(settings, store, "4") is None  # retried by a later /setup
    assert not coldstart.retrain_waiting(store, "4")
    store.write_job("4", jobs.queued_record(jobs.new_job_id("4"), "4", "START_TRAINING"))
    assert coldstart.retrain_waiting(store, "4")  # a round then stops placing chunks and frees the lock
    train_and_publish(settings, store, "4", parse_label_config(CLS_CONFIG),
                      [labeled(i, "Sports" if i % 2 else "Politics") for i in range(1, 7)], {"seconds": {}})
    assert coldstart.why_not(settings, store, "4", new_tasks=True) == "a model is published"
