"""Tests for albackend.services.training and albackend.services.rescoring with a real ModelStore and a tiny real model.

No fake Label Studio: the pieces of the job are tested directly, and the job itself against a real
connection failure (an unused localhost port).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from albackend.services import jobs
from albackend.services import training as training_module
from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel
from albackend.models.registry import ModelNotFound
from albackend.services.predictions import load_mahalanobis
from albackend.services.predstore import PredictionStore
from albackend.services.rescoring import rescore_pool, unlabeled_pool
from albackend.settings import Settings
from albackend.services.store import ModelStore
from albackend.services.predictions import StrategyError
from albackend.services.training import TrainingSkipped, check_gold, train_and_publish, training_job
from tests.support.services import free_port
from tests.support.tiny import make_tiny_bert
from albackend.algorithms.ups.cache import ScoreCache

CLS = TaskSpec("classification", "label", "text", "text", ("Sports", "Politics"))
NER = TaskSpec("tagging", "ner", "text", "text", ("PER", "LOC"))
TOKEN = "secret-token-never-shown-123"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def settings(tiny, tmp_path):
    return dataclasses.replace(
        Settings.from_env(), model_dir=tmp_path / "models", acquisition_model=tiny, query_strategy="auto",
        redis_url="", label_studio_url="", label_studio_api_key="", train_epochs=1, train_min_steps=4,
        train_max_steps=0, train_batch_size=8, train_lr=1e-3, max_length=32, infer_batch_size=64,
        max_text_chars=1000, ups_enabled=True, ups_gamma=0.1, ups_t=0.01, ups_full_iterations="0,1,4,8",
        ups_full_every=0, push_predictions=True, seed=11, device="cpu")


WORDS = {"Sports": ["match", "goal", "striker", "league", "coach"],
         "Politics": ["vote", "senate", "minister", "election", "budget"]}


def ls_task(tid: int, label: str | None = None, text: str | None = None) -> dict:
    if text is None:
        topic = label or ("Sports" if tid % 2 else "Politics")
        text = " ".join(WORDS[topic][(tid + k) % 5] for k in range(3 + tid % 4)) + f" number {tid}"
    t = {"id": tid, "project": 1, "data": {"text": text}, "annotations": [], "predictions": []}
    if label:
        t["annotations"] = [{"id": tid * 10, "was_cancelled": False, "updated_at": "2025-01-01T00:00:00Z",
                             "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                         "value": {"choices": [label]}}]}]
    return t


def labeled_tasks(n: int = 12) -> list[dict]:
    return [ls_task(i, "Sports" if i % 2 else "Politics") for i in range(1, n + 1)]


def pool_tasks(n: int, start: int = 1000) -> list[dict]:
    return [ls_task(i) for i in range(start, start + n)]


# ------------------------------------------------------------------------------------------ check_gold


def test_check_gold_no_examples():
    with pytest.raises(TrainingSkipped, match="no usable annotated tasks"):
        check_gold([], CLS)


def test_check_gold_one_class():
    exs = [Example(i, "t", label_ids=[1]) for i in range(5)]
    with pytest.raises(TrainingSkipped, match=r"only 1 class annotated \(Politics\).*at least 2 classes"):
        check_gold(exs, CLS)


def test_check_gold_accepts_two_classes_and_tagging():
    check_gold([Example(1, "a", label_ids=[0]), Example(2, "b", label_ids=[1])], CLS)
    check_gold([Example(1, "Bob", spans=[(0, 3, "PER")]), Example(2, "Rain", spans=[])], NER)  # all-O ones count too


def test_check_gold_tagging_needs_enough_sentences_with_spans():
    tagged = [Example(i, "Bob", spans=[(0, 3, "PER")]) for i in range(3)]
    empty = [Example(10 + i, "rain today", spans=[]) for i in range(9)]
    with pytest.raises(TrainingSkipped, match=r"only 3 annotated sentences with an entity span; need at least 4 "
                                              r"to train a tagger \(MIN_TAGGED_SENTENCES\)"):
        check_gold(tagged + empty, NER, min_tagged=4)  # all-O sentences do not count
    with pytest.raises(TrainingSkipped, match="only 0 annotated sentences"):
        check_gold(empty, NER, min_tagged=1)
    with pytest.raises(TrainingSkipped, match="only 1 annotated sentence with"):
        check_gold(tagged[:1], NER, min_tagged=2)
    check_gold(tagged, NER, min_tagged=3)
    multi = dataclasses.replace(CLS, multi_label=True)
    check_gold([Example(1, "a", label_ids=[0, 1])], multi)


# ----------------------------------------------------------------------------------- train_and_publish


def test_train_and_publish(settings):
    store = ModelStore(settings.model_dir)
    tasks = labeled_tasks() + pool_tasks(5) + [
        {"id": 90, "data": {"other": 1}, "annotations": labeled_tasks(1)[0]["annotations"]},
        ls_task(91, "Cooking", text="pasta with basil"),
    ]
    stats = {"seconds": {}}
    model, info = train_and_publish(settings, store, "1", CLS, tasks, stats)
    assert stats["gold"] == 12 and stats["gold_skipped"] == 2
    assert any("no field 'text'" in r for r in stats["skip_reasons"])
    assert any("Cooking" in r for r in stats["skip_reasons"])
    assert stats["training"]["steps"] == 4 and stats["seconds"]["train"] >= 0
    assert info["iteration"] == 0 and info["strategy"] == "least_confident" and info["gold"] == 12
    cur = store.current("1")
    assert cur["model_version"] == info["model_version"] and cur["path"] == info["path"]
    loaded = AcquisitionModel.load(cur["path"], device="cpu")
    assert loaded.meta["model_version"] == info["model_version"]
    assert loaded.meta["strategy"] == "least_confident"
    texts = [t["data"]["text"] for t in tasks[:5]]
    np.testing.assert_allclose(loaded.predict(texts).probs, model.predict(texts).probs, atol=1e-6)
    # the next retrain is the next iteration and becomes current
    _, info2 = train_and_publish(settings, store, "1", CLS, tasks, {"seconds": {}})
    assert info2["iteration"] == 1 and store.current_version("1") == info2["model_version"]
    assert info2["model_version"] != info["model_version"]
    assert not list((store.project_dir("1") / "tmp").iterdir())


def test_train_and_publish_skips_without_publishing(settings):
    store = ModelStore(settings.model_dir)
    with pytest.raises(TrainingSkipped, match="only 1 class"):
        train_and_publish(settings, store, "1", CLS, [ls_task(i, "Sports") for i in range(4)], {"seconds": {}})
    with pytest.raises(TrainingSkipped, match="no usable"):
        train_and_publish(settings, store, "1", CLS, pool_tasks(4), {"seconds": {}})
    assert store.current("1") is None and store.versions("1") == []
    one_sentence = [{"id": 1, "data": {"text": "Bob visited Paris"}, "annotations": [{"id": 1, "result": [
        {"from_name": "ner", "to_name": "text", "type": "labels", "value": {"start": 0, "end": 3, "labels": ["PER"]}}]}]}]
    with pytest.raises(TrainingSkipped, match="only 1 annotated sentence with an entity span; need at least 5"):
        train_and_publish(dataclasses.replace(settings, min_tagged_sentences=5), store, "2", NER, one_sentence,
                          {"seconds": {}})
    assert store.current("2") is None


@pytest.mark.parametrize("strategy,match", [("mnlp", "is for tagging"), ("least_confidence", "unknown query strategy")])
def test_a_wrong_query_strategy_is_a_named_configuration_error(settings, strategy, match):
    store = ModelStore(settings.model_dir)
    with pytest.raises(StrategyError, match=match):
        train_and_publish(dataclasses.replace(settings, query_strategy=strategy), store, "1", CLS, labeled_tasks(),
                          {"seconds": {}})
    assert store.current("1") is None


def test_failing_training_keeps_the_published_model(settings, tmp_path):
    store = ModelStore(settings.model_dir)
    _, good = train_and_publish(settings, store, "1", CLS, labeled_tasks(), {"seconds": {}})
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{ this is not json")
    bad = dataclasses.replace(settings, acquisition_model=str(corrupt))
    with pytest.raises(ModelNotFound):
        train_and_publish(bad, store, "1", CLS, labeled_tasks(), {"seconds": {}})
    # weights that are not safetensors: the loader refuses them
    broken = tmp_path / "broken"
    make_tiny_bert(broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(Exception):
        train_and_publish(dataclasses.replace(settings, acquisition_model=str(broken)), store, "1", CLS,
                          labeled_tasks(), {"seconds": {}})
    assert store.current_version("1") == good["model_version"]
    assert store.versions("1") == [good["model_version"]]
    AcquisitionModel.load(store.current("1")["path"], device="cpu")  # still loads


def test_mahalanobis_fit_is_published(settings):
    s = dataclasses.replace(settings, query_strategy="mahalanobis")
    store = ModelStore(s.model_dir)
    model, info = train_and_publish(s, store, "1", CLS, labeled_tasks(), {"seconds": {}})
    assert info["strategy"] == "mahalanobis"
    fit = load_mahalanobis(Path(info["path"]))
    assert fit is not None and fit.centroids.shape == (2, model.model.config.hidden_size)
    pool = unlabeled_pool(pool_tasks(20), model, s.max_text_chars)
    payloads, stats = rescore_pool(model, pool, project_dir=store.project_dir("1"), version=info["model_version"],
                                   iteration=0, strategy="mahalanobis", settings=s, fit=fit)
    assert stats["scored"] == 20
    assert all(np.isfinite(p["score"]) for p in payloads)


def test_tagging_train_and_publish(settings):
    store = ModelStore(settings.model_dir)
    tasks = []
    for i in range(6):
        text = f"Bob {i} visited Paris"
        tasks.append({"id": i + 1, "data": {"text": text}, "annotations": [{"id": i, "result": [
            {"from_name": "ner", "to_name": "text", "type": "labels", "value": {"start": 0, "end": 3, "labels": ["PER"]}},
            {"from_name": "ner", "to_name": "text", "type": "labels",
             "value": {"start": len(text) - 5, "end": len(text), "labels": ["LOC"]}}]}]})
    model, info = train_and_publish(settings, store, "3", NER, tasks, {"seconds": {}})
    assert info["strategy"] == "mnlp"
    pool = unlabeled_pool([{"id": 50, "data": {"text": "Alice went to Rome"}}], model, 1000)
    payloads, _ = rescore_pool(model, pool, project_dir=store.project_dir("3"), version=info["model_version"],
                               iteration=0, strategy="mnlp", settings=settings)
    assert len(payloads) == 1 and payloads[0]["task"] == 50
    for region in payloads[0]["result"]:
        v = region["value"]
        assert "Alice went to Rome"[v["start"]:v["end"]] == v["text"]


# ---------------------------------------------------------------------------------------- rescore_pool


def test_unlabeled_pool_filters(settings, tiny):
    model = AcquisitionModel.create(tiny, CLS, device="cpu", max_length=32)
    tasks = labeled_tasks(3) + pool_tasks(4) + [
        {"id": "x", "data": {"text": "string id"}}, {"id": 77, "data": {"text": 5}}, {"id": 78, "data": {}},
        {"id": 79, "data": {"text": "long " * 500}}]
    pool = unlabeled_pool(tasks, model, 20)
    assert pool.task_ids.tolist() == [1000, 1001, 1002, 1003, 79]
    assert pool.skipped == 2
    assert len(pool.texts[-1]) == 20


def test_rescore_pool_ups_full_and_subsampled(settings):
    store = ModelStore(settings.model_dir)
    model, info = train_and_publish(settings, store, "1", CLS, labeled_tasks(), {"seconds": {}})
    pdir = store.project_dir("1")
    pool = unlabeled_pool(pool_tasks(400), model, settings.max_text_chars)
    ids = pool.task_ids.tolist()

    def run(iteration, version, p=pool, s=settings):
        return rescore_pool(model, p, project_dir=pdir, version=version, iteration=iteration,
                            strategy="least_confident", settings=s)

    payloads, st0 = run(0, "v0")
    assert st0["full_pool"] and st0["scored"] == 400 and st0["pool_added"] == 400
    assert [p["task"] for p in payloads] == ids
    assert all(p["model_version"] == "v0" and isinstance(p["score"], float) for p in payloads)
    assert all(p["result"][0]["value"]["choices"][0] in CLS.labels for p in payloads)
    cache = ScoreCache.load(pdir / "scores.npz")
    assert len(cache) == 400 and (cache.iteration == 0).all() and not np.isnan(cache.uncertainty).any()
    assert len(PredictionStore(pdir / "predictions.sqlite").get(ids)) == 400

    _, st1 = run(1, "v1")  # warm-up iteration: full again
    assert st1["full_pool"] and st1["scored"] == 400

    payloads2, st2 = run(2, "v2")  # UPS subsample: about gamma + T of the pool, the most uncertain first
    assert not st2["full_pool"]
    assert 30 <= st2["scored"] <= 90, st2
    assert st2["skipped_by_ups"] == 400 - st2["scored"]
    cache = ScoreCache.load(pdir / "scores.npz")
    rescored = {p["task"] for p in payloads2}
    assert set(cache.task_ids[cache.iteration == 2].tolist()) == rescored
    assert set(cache.task_ids[cache.iteration == 1].tolist()) == set(ids) - rescored
    stored = PredictionStore(pdir / "predictions.sqlite").get(ids)
    assert {t for t, (v, _, _) in stored.items() if v == "v2"} == rescored
    assert {t for t, (v, _, _) in stored.items() if v == "v1"} == set(ids) - rescored

    # new tasks enter the pool unscored and are always scored; labeled ones leave it
    grown = unlabeled_pool(pool_tasks(390, start=1010) + pool_tasks(5, start=5000), model, 1000)
    payloads3, st3 = run(3, "v3", p=grown)
    assert st3["pool_added"] == 5 and st3["pool_removed"] == 10
    assert {5000, 5001, 5002, 5003, 5004} <= {p["task"] for p in payloads3}
    assert len(ScoreCache.load(pdir / "scores.npz")) == 395

    # UPS off: every iteration is full
    _, st4 = run(5, "v5", p=grown, s=dataclasses.replace(settings, ups_enabled=False))
    assert st4["full_pool"] and st4["scored"] == 395


def test_rescore_empty_pool(settings):
    """Every task annotated: nothing to rescore, and no crash after a successful publish."""
    store = ModelStore(settings.model_dir)
    model, info = train_and_publish(settings, store, "1", CLS, labeled_tasks(), {"seconds": {}})
    pool = unlabeled_pool(labeled_tasks(), model, 1000)
    payloads, stats = rescore_pool(model, pool, project_dir=store.project_dir("1"), version=info["model_version"],
                                   iteration=info["iteration"], strategy="least_confident", settings=settings)
    assert payloads == [] and stats["scored"] == 0 and stats["pool_size"] == 0


# ---------------------------------------------------------------------------------------- training_job


def _job(store: ModelStore, project: str) -> str:
    job_id = jobs.new_job_id(project)
    store.write_job(project, jobs.queued_record(job_id, project, "START_TRAINING"))
    return job_id


def test_training_job_fails_clearly_when_label_studio_is_unreachable(settings, monkeypatch):
    port = free_port()
    monkeypatch.setenv("MODEL_DIR", str(settings.model_dir))
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    monkeypatch.delenv("REDIS_URL", raising=False)
    store = ModelStore(settings.model_dir)
    job_id = _job(store, "4")
    record = training_job("4", job_id)  # settings from the environment, as in an RQ worker
    assert record["state"] == "failed"
    assert "LabelStudioError" in record["reason"] and "unreachable" in record["reason"]
    assert f"127.0.0.1:{port}" in record["reason"]
    assert TOKEN not in json.dumps(record)
    saved = store.read_job("4", job_id)
    assert saved["state"] == "failed" and saved["reason"] == record["reason"]
    assert saved["started_at"] and saved["finished_at"] >= saved["started_at"] and saved["duration_s"] >= 0
    assert saved["trigger"] == "START_TRAINING"
    assert store.current("4") is None


def test_training_job_without_connection_details(settings):
    store = ModelStore(settings.model_dir)
    job_id = _job(store, "6")
    record = training_job("6", job_id, settings=settings)
    assert record["state"] == "failed" and "no Label Studio URL" in record["reason"]
    # /setup's hostname and token are used when the environment has none; still unreachable here
    from albackend.services.training import save_connection

    save_connection(store, "6", f"127.0.0.1:{free_port()}", TOKEN)
    record = training_job("6", _job(store, "6"), settings=settings)
    assert record["state"] == "failed" and "unreachable" in record["reason"]
    assert TOKEN not in json.dumps(store.jobs("6"))
    assert oct((store.project_dir("6") / "connection.json").stat().st_mode & 0o777) == "0o600"


def test_failed_job_leaves_the_published_model_current(settings):
    store = ModelStore(settings.model_dir)
    _, info = train_and_publish(settings, store, "8", CLS, labeled_tasks(), {"seconds": {}})
    s = dataclasses.replace(settings, label_studio_url=f"http://127.0.0.1:{free_port()}",
                            label_studio_api_key=TOKEN)
    record = training_job("8", _job(store, "8"), settings=s)
    assert record["state"] == "failed"
    assert store.current_version("8") == info["model_version"]


def test_an_expected_failure_logs_its_reason_and_a_bug_its_traceback(settings, monkeypatch, caplog):
    """A known reason (here: no LS to call) is one warning line; any other exception is a logged traceback."""
    store = ModelStore(settings.model_dir)
    with caplog.at_level(logging.WARNING, logger="albackend.services.training"):
        record = training_job("6", _job(store, "6"), settings=settings)
    assert record["state"] == "failed" and "no Label Studio URL" in record["reason"]
    assert [r.exc_info for r in caplog.records if r.name == "albackend.services.training"] == [None]
    caplog.clear()

    def bug(*args, **kwargs):
        raise ValueError("a bug, not a configuration problem")

    monkeypatch.setattr(training_module, "run_iteration", bug)
    with caplog.at_level(logging.WARNING, logger="albackend.services.training"):
        record = training_job("6", _job(store, "6"), settings=settings)
    assert record["state"] == "failed" and "a bug" in record["reason"]
    crashed = [r for r in caplog.records if r.name == "albackend.services.training"]
    assert len(crashed) == 1 and crashed[0].exc_info and crashed[0].exc_info[0] is ValueError
