"""Issue 10: wedged projects (pending marks, dead jobs, locks that outlive their holder, Redis down), the API
key (host rule, redaction of echoed keys), job-record pruning. Real Redis where Redis is involved."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from albackend.services import backoff, jobs
from albackend.adapters.app import create_app
from model import ActiveLearningModel
from albackend.adapters.redisconn import connect
from albackend.services.store import ModelStore
from albackend.services.training import training_job
from tests.support.fakes import _Server
from tests.support.published import CLS_CONFIG
from tests.support.services import REPO_ROOT, free_port
from tests.test_app_protocol import make_settings

KEY = "env-secret-key-0123456789abcdef"


class EchoingLS(_Server):
    """A Label Studio behind a proxy that echoes the Authorization header in every (400) error body, placed so
    that cutting the body at 300 characters before redacting would leave the key's first 12 characters."""

    def handle(self, h, rec):
        h.reply({"detail": "x" * 270 + rec["headers"].get("Authorization", "")}, 400)


def _webhook(c, project=7):
    return c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}})


# ------------------------------------------------------------------------------------ pending marks
def test_pending_mark_is_cleared_when_the_record_cannot_be_written(tmp_path, tiny):
    s = make_settings(tmp_path / "m", tiny)
    c = create_app(s, model_class=ActiveLearningModel).test_client()
    jobs_path = ModelStore(s.model_dir).project_dir(7) / "jobs"
    jobs_path.parent.mkdir(parents=True)
    jobs_path.write_text("not a directory")  # a real write failure (root ignores permissions)
    r = _webhook(c)
    assert r.status_code == 503 and "job record" in r.get_json()["error"], r.get_data(as_text=True)
    jobs_path.unlink()
    r = _webhook(c)
    assert r.status_code == 201 and r.get_json()["status"] == "queued", r.get_json()


@pytest.mark.redis
def test_rq_pending_mark_is_cleared_when_the_record_cannot_be_written(tmp_path, tiny, redis_server):
    s = make_settings(tmp_path / "m", tiny, redis_url=redis_server.url, rq_queue=f"q{free_port()}")
    q = jobs.RQQueue(s, ModelStore(s.model_dir))
    jobs_path = ModelStore(s.model_dir).project_dir(8) / "jobs"
    jobs_path.parent.mkdir(parents=True)
    jobs_path.write_text("x")
    with pytest.raises(jobs.QueueUnavailable):
        q.submit("8", "START_TRAINING")
    assert q.redis.get(jobs.PENDING_KEY.format("8")) is None
    jobs_path.unlink()
    job_id, queued = q.submit("8", "START_TRAINING")
    assert queued and q.submit("8", "START_TRAINING") == (job_id, False)
    q.redis.delete(jobs.PENDING_KEY.format("8"))


def test_redis_down_is_503_within_the_timeout(tmp_path, tiny):
    s = make_settings(tmp_path / "m", tiny, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=1.0)
    c = create_app(s, model_class=ActiveLearningModel).test_client()
    t0 = time.perf_counter()
    r = _webhook(c)
    assert r.status_code == 503 and "Redis" in r.get_json()["error"] and r.headers["Retry-After"]
    assert c.post("/train", json={"project": 7}).status_code == 503
    assert time.perf_counter() - t0 < 6.0
    assert c.get("/projects/7/status").status_code == 200


# ------------------------------------------------------------------------------------ dead jobs
def test_running_job_without_heartbeat_is_failed(tmp_path):
    store = ModelStore(tmp_path)
    rec = {**jobs.queued_record("train-3-a", "3", "x"), "state": "running", "started_at": time.time() - 100}
    store.write_job("3", rec)
    out = jobs.reconcile_liveness(store, rec)
    assert out["state"] == "failed" and "heartbeat" in out["reason"]
    assert store.read_job("3", "train-3-a")["state"] == "failed"
    fresh = {**rec, "id": "train-3-b", "state": "running"}
    (store.project_dir("3") / "jobs" / "train-3-b.beat").touch()
    assert jobs.reconcile_liveness(store, fresh)["state"] == "running"


def test_in_process_queued_job_of_a_dead_process_is_failed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rec = {**jobs.queued_record("train-3-c", "3", "x", "in-process"), "owner": {**jobs.owner(), "pid": dead.pid}}
    out = jobs.reconcile_liveness(ModelStore(tmp_path), rec)
    assert out["state"] == "failed" and str(dead.pid) in out["reason"]
    assert jobs.reconcile_liveness(ModelStore(tmp_path), jobs.queued_record("i", "3", "x", "in-process"))["state"] \
        == "queued"


HOLD_LOCK = """
import sys, time
import albackend.services.jobs as j
from albackend.settings import Settings
from albackend.services.store import ModelStore
j.LOCK_TTL_S = 2.0
s = Settings.from_env()
with j.project_lock(s, ModelStore(s.model_dir), "9"):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.redis
def test_redis_lock_is_renewed_while_held_and_freed_when_the_holder_is_killed(tmp_path, tiny, redis_server):
    s = make_settings(tmp_path / "m", tiny, redis_url=redis_server.url)
    env = {"REDIS_URL": redis_server.url, "MODEL_DIR": str(tmp_path / "m"), "PYTHONPATH": str(REPO_ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **env})
    try:
        assert holder.stdout.readline().strip() == "locked"
        time.sleep(3.0)  # past the 2 s TTL: still held, since the holder renews it
        lock = connect(s.redis_url).lock(jobs.LOCK_KEY.format("9"), timeout=jobs.LOCK_TTL_S)
        assert not lock.acquire(blocking_timeout=1.0)
        holder.kill()
        holder.wait()
        t0 = time.perf_counter()
        assert lock.acquire(blocking_timeout=10.0)
        assert time.perf_counter() - t0 < 3.0
        lock.release()
    finally:
        holder.kill()


# ------------------------------------------------------------------------------------ the API key
def test_env_key_never_goes_to_a_host_named_in_setup(tmp_path, tiny):
    with EchoingLS() as evil:
        s = make_settings(tmp_path / "m", tiny, label_studio_url="", label_studio_api_key=KEY)
        c = create_app(s, model_class=ActiveLearningModel).test_client()
        assert c.post("/setup", json={"project": "7.1", "schema": CLS_CONFIG, "hostname": evil.url,
                                      "access_token": ""}).status_code == 200
        ModelStore(s.model_dir).write_job("7", jobs.queued_record("train-7-x", "7", "x"))
        record = training_job("7", "train-7-x", settings=s)
        assert record["state"] == "failed" and "LABEL_STUDIO_URL" in record["reason"]
        assert evil.requests == []


def test_echoed_key_is_redacted_everywhere(tmp_path, tiny, caplog):
    caplog.set_level(logging.DEBUG)
    with EchoingLS() as ls:
        s = make_settings(tmp_path / "m", tiny, label_studio_url=ls.url, label_studio_api_key=KEY)
        c = create_app(s, model_class=ActiveLearningModel).test_client()
        ModelStore(s.model_dir).write_job("7", jobs.queued_record("train-7-y", "7", "x"))
        record = training_job("7", "train-7-y", settings=s)
        assert ls.requests and ls.requests[0]["headers"]["Authorization"] == f"Token {KEY}"
    assert record["state"] == "failed" and "[REDACTED]" in record["reason"]
    outputs = {"record": json.dumps(record), "status": c.get("/projects/7/status").get_data(as_text=True),
               "metrics": c.get("/metrics").get_data(as_text=True),
               "status_all": c.get("/status").get_data(as_text=True), "log": caplog.text}
    for name, text in outputs.items():
        assert KEY[:8] not in text, name  # not even the prefix a 300-character cut would have left


# ------------------------------------------------------------------------------------ housekeeping
def test_job_records_are_pruned_to_job_history(tmp_path, tiny):
    s = make_settings(tmp_path / "m", tiny, job_history=5)
    store = ModelStore(s.model_dir)
    q = jobs.InProcessQueue(s, store, runner=lambda p, j: None)
    for _ in range(30):
        q.submit("4", "x")
        time.sleep(0.01)
    assert len(list((store.project_dir("4") / "jobs").glob("*.json"))) <= 5


def test_ls_unreachable_backs_off_instead_of_failing_every_webhook(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(backoff, "BASE_S", 1.0)
    s = make_settings(tmp_path / "m", tiny, job_history=1000)  # LABEL_STUDIO_URL: a closed port
    c = create_app(s, model_class=ActiveLearningModel).test_client()
    store = ModelStore(s.model_dir)
    t0 = time.monotonic()
    codes = []
    while time.monotonic() - t0 < 3.0 and len(codes) < 200:
        codes.append(_webhook(c, 6).status_code)
        time.sleep(0.01)
    records = store.jobs("6", limit=1000)
    failed = [r for r in records if r["state"] == "failed"]
    assert set(codes) == {201} and len(records) <= 5, (len(codes), [(r["state"], r.get("reason")) for r in records])
    assert failed and all("unreachable" in r["reason"] for r in failed)
    assert failed[0]["backoff"]["failures"] >= 1
    assert backoff.active(store, "6")
