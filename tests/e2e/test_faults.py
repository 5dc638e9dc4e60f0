"""Fault tests: a real Label Studio, Redis, RQ worker and gunicorn; a training job is killed or starved mid-fit.

For each fault (kill -9 of the RQ work horse, of the whole RQ worker, of the gunicorn worker running an
in-process job; Redis stopped; Redis frozen by SIGSTOP) the previous model stays served, the interrupted job
ends up `failed` with a reason (or finished, where it could complete), and the next START_TRAINING trains
successfully within 60 s of the fault. The supervisor's part (docker-compose `restart:`) is played by the test:
it starts a new worker or Redis where the fault killed one.

Settings are per process, so the job that is interrupted runs in a worker started with an endless fit
(TRAIN_MIN_STEPS=100000: the fault always lands mid-fit), and the trainings before and after it run in
workers with a short one. Replacing an idle worker frees nothing the interrupted job held: its Redis lock,
pending mark and job record are exactly as the fault left them.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from tests.support import services
from tests.support.published import CLS_CONFIG, labeled

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.labelstudio,
              pytest.mark.usefixtures("one_torch_thread")]
RECOVERY_S = 60.0
FAST, ENDLESS = {"TRAIN_MIN_STEPS": "20"}, {"TRAIN_MIN_STEPS": "100000"}


@pytest.fixture(scope="module")
def ls_project(label_studio, ls_client):
    """A classification project with 8 labeled and 12 unlabeled tasks."""
    pid = ls_client.create_project("faults", CLS_CONFIG)["id"]
    tasks = [labeled(i, "Sports" if i % 2 else "Politics") for i in range(20)]
    ids = ls_client.import_tasks(pid, [{"data": t["data"]} for t in tasks])
    for tid, t in list(zip(ids, tasks))[:8]:
        ls_client.create_annotation(tid, t["annotations"][0]["result"])
    return pid


def _env(root, label_studio, tiny, **extra) -> dict:
    env = {"MODEL_DIR": str(root / "models"), "ACQUISITION_MODEL": tiny, "MAX_LENGTH": "32",
           "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.meta["token"],
           "TRAIN_EPOCHS": "1", "TRAIN_MIN_STEPS": "20", "TRAIN_BATCH_SIZE": "8", "SEED": "0",
           "OMP_NUM_THREADS": "1", "DEVICE": "cpu"}
    env.update(extra)
    return env


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = open(f"/proc/{name}/stat").read()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _status(url: str, project: int, timeout: float = 10) -> dict:
    r = requests.get(f"{url}/projects/{project}/status", timeout=timeout)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def _job(url: str, project: int, job_id: str) -> dict | None:
    return next((j for j in _status(url, project)["jobs"] if j["id"] == job_id), None)


def _start(url: str, project: int) -> str:
    r = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}, timeout=10)
    assert r.status_code == 201, r.text[:300]
    return r.json()["job_id"]


def _wait_state(url: str, project: int, job_id: str, states: set[str], timeout: float) -> dict:
    return services.wait_until(lambda: (j := _job(url, project, job_id)) and j["state"] in states and j,
                               timeout, 0.5, f"job {job_id} to reach {states}")


def _train_ok(url: str, project: int, timeout: float = 180) -> str:
    job = _wait_state(url, project, _start(url, project), {"finished", "failed"}, timeout)
    assert job["state"] == "finished", job
    return job["stats"]["model_version"]


def _served_version(url: str, project: int) -> str:
    r = requests.post(f"{url}/predict", json={"tasks": [{"id": 1, "data": {"text": "goal"}}], "project": project},
                      timeout=30)
    assert r.status_code == 200, r.text[:300]
    return r.json()["results"][0]["model_version"]


def _mid_fit(url: str, project: int) -> str:
    """Queue a retrain and return once it has been running (fetching done, fitting) for a moment."""
    job_id = _start(url, project)
    _wait_state(url, project, job_id, {"running"}, 60)
    time.sleep(3.0)
    assert _job(url, project, job_id)["state"] == "running", _job(url, project, job_id)
    return job_id


def _swap_worker(stack, redis_url: str, env: dict, log_dir, **over) -> None:
    """Replace the (idle or dead) RQ worker by one with `over` in its environment."""
    stack.worker.stop(timeout=5)
    stack.worker = services.start_rq_worker(redis_url, {**env, **over}, log_dir=log_dir)


def _recovers(url: str, project: int, faulted: str, t_fault: float, before: str) -> None:
    """The interrupted job is not left running, and a new START_TRAINING publishes within RECOVERY_S."""
    assert _served_version(url, project) == before
    left = RECOVERY_S - (time.monotonic() - t_fault)
    deadline = time.monotonic() + left
    job_id = None
    while time.monotonic() < deadline:
        r = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}, timeout=10)
        if r.status_code == 201 and r.json()["status"] == "queued":
            job_id = r.json()["job_id"]
            break
        time.sleep(1.0)
    assert job_id, f"no new job could be queued within {RECOVERY_S:.0f} s of the fault"
    job = _wait_state(url, project, job_id, {"finished", "failed"}, max(1.0, deadline - time.monotonic()))
    assert job["state"] == "finished", job
    took = time.monotonic() - t_fault
    # a dead job's heartbeat goes stale after jobs.STALE_S: on a quiet machine the next job can finish before
    # that, so wait for the reconciliation, within the same minute from the fault
    old = _wait_state(url, project, faulted, {"failed"}, max(1.0, RECOVERY_S - (time.monotonic() - t_fault)))
    assert old["state"] == "failed" and old["reason"], old
    print(f"\n[faults] recovered in {took:.1f} s; interrupted job: {old['state']}: {old.get('reason')}")
    assert _served_version(url, project) == job["stats"]["model_version"]


@pytest.fixture
def rq_stack(tmp_path, label_studio, tiny, ls_project):
    redis = services.start_redis(tmp_path / "redis")
    env = _env(tmp_path, label_studio, tiny, REDIS_URL=redis.url, REDIS_TIMEOUT="1")
    stack = services.start_backend(env, tmp_path / "logs", workers=1, threads=4)
    yield redis, stack, env
    stack.stop()
    redis.stop()


def test_kill_horse_mid_fit(rq_stack, ls_project, tmp_path):
    redis, stack, env = rq_stack
    url = stack.web.url
    before, faulted = _prelude(rq_stack, ls_project, tmp_path)
    horses = _children(stack.worker.pid)
    assert horses, "no work horse found"
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    t_fault = time.monotonic()
    services.wait_until(lambda: "Work-horse terminated" in stack.worker.log_tail(), 30, desc="RQ to notice")
    _swap_worker(stack, redis.url, env, tmp_path / "w3", **FAST)
    _recovers(url, ls_project, faulted, t_fault, before)


def test_kill_whole_rq_worker_mid_fit(rq_stack, ls_project, tmp_path):
    redis, stack, env = rq_stack
    url = stack.web.url
    before, faulted = _prelude(rq_stack, ls_project, tmp_path)
    os.killpg(stack.worker.pid, signal.SIGKILL)
    for pid in services._session_members(stack.worker.pid):
        os.kill(pid, signal.SIGKILL)
    t_fault = time.monotonic()
    stack.worker.stop(timeout=2)
    stack.worker = services.start_rq_worker(redis.url, env, log_dir=tmp_path / "w3")  # restart: always
    _recovers(url, ls_project, faulted, t_fault, before)


def test_kill_gunicorn_worker_mid_in_process_job(tmp_path, label_studio, tiny, ls_project):
    env = _env(tmp_path, label_studio, tiny)
    web = services.start_gunicorn(env, workers=1, threads=4, log_dir=tmp_path / "l1")
    before = _train_ok(web.url, ls_project)
    web.stop()
    web = services.start_gunicorn({**env, **ENDLESS}, workers=1, threads=4, log_dir=tmp_path / "l2")
    try:
        faulted = _mid_fit(web.url, ls_project)
        (worker,) = _children(web.pid)
        os.kill(worker, signal.SIGKILL)
        t_fault = time.monotonic()
        services.wait_http(web.url + "/health", 60, service=web)  # the master starts a new worker
        assert _served_version(web.url, ls_project) == before
        # not wedged: the respawned worker starts the next job (its endless fit is stopped below)
        _wait_state(web.url, ls_project, _start(web.url, ls_project), {"running"}, RECOVERY_S)
        print(f"\n[faults] gunicorn worker killed: next job running {time.monotonic() - t_fault:.1f} s later")
        assert time.monotonic() - t_fault < RECOVERY_S
    finally:
        web.stop()
    web = services.start_gunicorn(env, workers=1, threads=4, log_dir=tmp_path / "l3")
    try:  # the clock restarts: a short-fit server had to be started (settings are per process)
        _recovers(web.url, ls_project, faulted, time.monotonic(), before)
    finally:
        web.stop()


def _prelude(rq_stack, project: int, tmp_path) -> tuple[str, str]:
    """Train the previous model with a short fit, then start an endless one: (previous version, its job id)."""
    redis, stack, env = rq_stack
    before = _train_ok(stack.web.url, project)
    _swap_worker(stack, redis.url, env, tmp_path / "w2", **ENDLESS)
    return before, _mid_fit(stack.web.url, project)


def _redis_unavailable(url: str, project: int, before: str) -> tuple[float, float]:
    """Redis down or frozen: /webhook answers 503 naming Redis and /status answers, both within 5 s; the
    previous model is still served. Returns (webhook seconds, status seconds)."""
    t0 = time.perf_counter()
    r = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}, timeout=20)
    webhook_s = time.perf_counter() - t0
    assert r.status_code == 503 and "Redis" in r.json()["error"], r.text[:300]
    t0 = time.perf_counter()
    assert _status(url, project)["model_version"] == before
    status_s = time.perf_counter() - t0
    assert webhook_s < 5.0 and status_s < 5.0, (webhook_s, status_s)
    assert _served_version(url, project) == before
    return webhook_s, status_s


def test_redis_stopped_mid_fit(rq_stack, ls_project, tmp_path):
    redis, stack, env = rq_stack
    before, faulted = _prelude(rq_stack, ls_project, tmp_path)
    port = redis.port
    redis.stop(timeout=2)
    t_fault = time.monotonic()
    webhook_s, status_s = _redis_unavailable(stack.web.url, ls_project, before)
    print(f"\n[faults] Redis stopped: /webhook 503 in {webhook_s:.2f} s, /status {status_s:.2f} s")
    new_redis = services.start_redis(tmp_path / "redis2", port=port)  # restart: always
    try:
        _swap_worker(stack, new_redis.url, env, tmp_path / "w3", **FAST)  # dead, or stuck in the endless fit
        _recovers(stack.web.url, ls_project, faulted, t_fault, before)
    finally:
        new_redis.stop()


def test_redis_frozen_mid_fit(rq_stack, ls_project, tmp_path):
    redis, stack, env = rq_stack
    before, faulted = _prelude(rq_stack, ls_project, tmp_path)
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        webhook_s, status_s = _redis_unavailable(stack.web.url, ls_project, before)
        print(f"\n[faults] Redis frozen: /webhook 503 in {webhook_s:.2f} s, /status {status_s:.2f} s")
        time.sleep(5)
    finally:
        os.kill(redis.pid, signal.SIGCONT)
    t_thawed = time.monotonic()  # a freeze ends when Redis answers again: recovery is timed from then
    _swap_worker(stack, redis.url, env, tmp_path / "w3", **FAST)  # the endless fit holds the old one
    _recovers(stack.web.url, ls_project, faulted, t_thawed, before)
