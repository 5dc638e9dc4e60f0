"""Rescoring scaled out over real RQ workers (real redis-server): shards scored by a helper worker give the same
scores as the owner alone, and a shard abandoned by a dead helper is re-run by the owner."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from redis import Redis
from rq import Queue

from albackend.domain.labelconfig import parse_label_config
from albackend.models.acquisition import AcquisitionModel
from albackend.services.rescoring import score_texts
from albackend.settings import Settings
from albackend.services.sharding import ShardedScorer, _keys, claim_next
from albackend.services.store import ModelStore
from albackend.services.taskstore import TaskStore
from tests.support import services

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("one_torch_thread")]
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
          '<Choice value="a"/><Choice value="b"/></Choices></View>')
WORDS = "match goal stock market chip data team bank phone price coach trade".split()


@pytest.fixture
def setup(tmp_path, tiny, redis_server, monkeypatch):
    monkeypatch.setenv("SCORING_PRECISION", "fp32")  # int8 activation scales are per batch: shards would differ
    settings = dataclasses.replace(Settings.from_env(), model_dir=tmp_path / "models", redis_url=redis_server.url,
                                   rq_queue=f"q{time.monotonic_ns()}", score_shard_size=20, seed=3, device="cpu",
                                   infer_batch_size=16, max_text_chars=1000)
    store = ModelStore(settings.model_dir)
    model = AcquisitionModel.create(tiny, parse_label_config(CONFIG), device="cpu", max_length=32, seed=0)
    model.meta.update(strategy="least_confident", iteration=0)
    with store.staging("1") as staged:
        model.save(staged)
        info = store.publish("1", staged, "v1", 0, strategy="least_confident")
    rng = np.random.default_rng(0)
    texts = {i: " ".join(rng.choice(WORDS, 5)) + f" {i}" for i in range(1, 101)}
    TaskStore(store.project_dir("1")).upsert([{"id": i, "data": {"text": t}} for i, t in texts.items()],
                                             with_annotations=False)
    model = AcquisitionModel.load(info["path"], device="cpu")
    calls: list[int] = []

    def local(ids: np.ndarray):
        calls.append(len(ids))
        unc, results, _ = score_texts(model, [texts[int(t)] for t in ids], "least_confident", "v1", 16, None, 3)
        return unc, results

    redis = Redis.from_url(settings.redis_url)
    scorer = ShardedScorer(settings, store, "1", "v1", local, redis, Queue(settings.rq_queue, connection=redis))
    return settings, scorer, local, calls


def test_helper_worker_scores_shards_with_the_same_result(setup, tmp_path):
    settings, scorer, local, calls = setup
    env = {"MODEL_DIR": str(settings.model_dir), "REDIS_URL": settings.redis_url, "SEED": "3", "DEVICE": "cpu",
           "INFER_BATCH_SIZE": "16", "MAX_TEXT_CHARS": "1000", "OMP_NUM_THREADS": "1",
           "SCORING_PRECISION": "fp32"}
    worker = services.start_rq_worker(settings.redis_url, env, queue=settings.rq_queue, log_dir=tmp_path / "logs")
    try:
        ids = np.arange(1, 101)
        alone_unc, alone_results = local(ids)
        calls.clear()

        def slow_owner(part):  # the owner waits (bounded) until the helper has claimed a shard of its own
            services.wait_until(lambda: any(not v.startswith(b"owner") for k in scorer.redis.keys("albackend:shards:*:claims")
                                            for v in scorer.redis.hvals(k)), 180, 0.2, "a helper to claim a shard")
            return local(part)

        scorer.local = slow_owner
        unc, results = scorer(ids)
    finally:
        worker.stop()
    assert np.allclose(unc, alone_unc, atol=1e-5)
    assert [r["result"] for r in results] == [r["result"] for r in alone_results]
    assert scorer.figures["shards"] == 5 and sum(calls) + 20 * scorer.figures["by_helpers"] == 100
    assert scorer.figures["by_helpers"] >= 1, "the helper worker scored no shard"


def test_shard_abandoned_by_a_dead_helper_is_rerun(setup):
    settings, scorer, local, calls = setup
    redis = scorer.redis
    # no worker runs: the owner scores everything itself; a "helper" that claimed shard 2 and died (its RQ job
    # no longer exists) must not block the round
    original = scorer._work

    def work_with_a_dead_helper(round_id, directory, shards):
        assert claim_next(redis, round_id, "job-that-died") == 0
        original(round_id, directory, shards)

    scorer._work = work_with_a_dead_helper
    unc, results = scorer(np.arange(1, 101))
    assert len(unc) == 100 and len(results) == 100
    assert scorer.figures["rerun"] == 1 and sum(calls) == 100
    assert not redis.keys(_keys("*")[0])
