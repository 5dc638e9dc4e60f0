"""The protocol layer under a real gunicorn with a real redis and RQ worker (no Label Studio needed).

Label Studio stands in as a stub that answers every request after 30 s, so a training job that starts stays
"running" (waiting on Label Studio) for the whole test: that is what makes queue coalescing observable.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import services
from tests.support.datasets import CLASSIFICATION_CONFIG
from tests.support.fakes import SlowHTTPServer

pytestmark = pytest.mark.redis

TOKEN = "protocol-test-token-123456"
IMAGE_CONFIG = ('<View><Image name="image" value="$image"/>'
                '<Choices name="label" toName="image"><Choice value="cat"/><Choice value="dog"/></Choices></View>')
JOB_STATES = {"queued", "running", "finished", "failed"}


@pytest.fixture(scope="module")
def slow_ls():
    with SlowHTTPServer(delay=30.0, status=503) as srv:
        yield srv


def _env(root, **extra) -> dict:
    env = {"MODEL_DIR": str(root / "models"), "ACQUISITION_MODEL": "splade-tiny", "TRAIN_MIN_STEPS": "30",
           "TRAIN_EPOCHS": "1", "SEED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def backend(redis_server, slow_ls, tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    env = _env(root, REDIS_URL=redis_server.url, LABEL_STUDIO_URL=slow_ls.url, LABEL_STUDIO_API_KEY=TOKEN)
    stack = services.start_backend(env, root / "logs", workers=1, threads=4)
    yield stack
    stack.stop()


def _setup(url: str, project: int, schema: str, hostname: str, auth=None) -> requests.Response:
    return requests.post(f"{url}/setup", json={"project": f"{project}.1764000000", "schema": schema,
                                               "hostname": hostname, "access_token": TOKEN, "extra_params": None},
                         auth=auth, timeout=10)


def _project_payload(project: int) -> dict:
    return {"id": project, "title": f"project {project}", "label_config": CLASSIFICATION_CONFIG,
            "task_number": 40, "model_version": ""}


def _annotation_created(project: int, i: int) -> dict:
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["Sports"]}}]
    return {"action": "ANNOTATION_CREATED", "project": _project_payload(project),
            "task": {"id": 1000 + i, "data": {"text": f"match report number {i}"}, "project": project},
            "annotation": {"id": 5000 + i, "result": result, "task": 1000 + i, "project": project,
                           "completed_by": 1, "was_cancelled": False}}


def _status(url: str, project: int) -> dict:
    r = requests.get(f"{url}/projects/{project}/status", timeout=10)
    assert r.status_code == 200, r.text[:500]
    st = r.json()
    assert isinstance(st.get("jobs"), list), st
    assert all(j["state"] in JOB_STATES for j in st["jobs"]), st["jobs"]
    return st


def _burst(url: str, payloads: list[dict]) -> list[tuple[int, float]]:
    def post(p):
        t0 = time.perf_counter()
        r = requests.post(f"{url}/webhook", json=p, timeout=10)
        return r.status_code, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=5) as ex:
        return list(ex.map(post, payloads))


def _report(name: str, times: list[float]) -> None:
    ts = sorted(times)
    p99 = ts[min(len(ts) - 1, int(round(0.99 * (len(ts) - 1))))]
    print(f"\n[{name}] {len(ts)} webhooks: p50 {statistics.median(ts) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {ts[-1] * 1000:.1f} ms")


def _assert_coalesced(url: str, project: int, seconds: float = 4.0) -> list[dict]:
    """Over ``seconds``, the project never has more than 1 queued + 1 running job, nor more than 2 jobs."""
    deadline = time.monotonic() + seconds
    while True:
        jobs = _status(url, project)["jobs"]
        states = [j["state"] for j in jobs]
        assert states.count("queued") <= 1 and states.count("running") <= 1, jobs
        assert len(jobs) <= 2, f"a burst on project {project} created {len(jobs)} jobs: {jobs}"
        if time.monotonic() >= deadline:
            return jobs
        time.sleep(0.25)


def test_health_answers_within_a_second(backend):
    t0 = time.perf_counter()
    r = requests.get(f"{backend.url}/health", timeout=5)
    took = time.perf_counter() - t0
    assert r.status_code == 200 and r.json()["status"] == "UP", r.text
    assert took < 1.0, f"/health took {took:.2f} s (LS allows 1 s)"


def test_versions_and_metrics_are_json(backend):
    r = requests.get(f"{backend.url}/versions", timeout=5)
    assert r.status_code == 200 and isinstance(r.json()["versions"], list), r.text
    r = requests.get(f"{backend.url}/status", timeout=5)
    assert r.status_code == 200 and isinstance(r.json(), dict), r.text
    r = requests.get(f"{backend.url}/metrics", timeout=5)
    assert r.status_code == 200 and "albackend_http_requests_total" in r.text, r.text[:300]


def test_setup(backend, slow_ls):
    t0 = time.perf_counter()
    r = _setup(backend.url, 801, CLASSIFICATION_CONFIG, slow_ls.url)
    took = time.perf_counter() - t0
    assert r.status_code == 200 and isinstance(r.json()["model_version"], str), r.text
    assert took < 3.0, f"/setup took {took:.2f} s (LS allows 3 s)"
    # an <Image> project is not something this backend can learn: a clear 4xx JSON error, not a 500
    r = _setup(backend.url, 802, IMAGE_CONFIG, slow_ls.url)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and body, body


def test_webhook_rejects_malformed_bodies(backend):
    url = f"{backend.url}/webhook"
    for kw in ({"data": "{not json", "headers": {"Content-Type": "application/json"}},
               {"json": {}},  # no action (label-studio-ml 1.0.9 answers 500 here)
               {"json": {"action": ""}},
               {"json": [1, 2, 3]}):
        r = requests.post(url, timeout=5, **kw)
        assert 400 <= r.status_code < 500, (kw, r.status_code, r.text[:300])


def test_webhook_ignores_unknown_actions(backend):
    r = requests.post(f"{backend.url}/webhook", json={"action": "SOMETHING_NEW", "project": _project_payload(803)},
                      timeout=5)
    assert r.status_code == 200, r.text
    assert _status(backend.url, 803)["jobs"] == []


def test_webhook_burst_coalesces_training_jobs(backend, slow_ls):
    project = 804
    assert _setup(backend.url, project, CLASSIFICATION_CONFIG, slow_ls.url).status_code == 200
    results = _burst(backend.url, [_annotation_created(project, i) for i in range(20)])
    codes = [c for c, _ in results]
    times = [t for _, t in results]
    _report("ANNOTATION_CREATED burst", times)
    assert all(200 <= c < 300 for c in codes), codes
    assert max(times) < 1.0, f"slowest webhook reply {max(times):.2f} s; LS gives up after 1 s"
    jobs = _assert_coalesced(backend.url, project)
    assert jobs, "ANNOTATION_CREATED should queue a training job"

    # START_TRAINING ("Start Training" button), pressed 20 times on another project: same bound
    project = 805
    assert _setup(backend.url, project, CLASSIFICATION_CONFIG, slow_ls.url).status_code == 200
    results = _burst(backend.url, [{"action": "START_TRAINING", "project": _project_payload(project)}] * 20)
    _report("START_TRAINING burst", [t for _, t in results])
    assert all(200 <= c < 300 for c, _ in results), results
    assert max(t for _, t in results) < 1.0
    jobs = _assert_coalesced(backend.url, project, seconds=2.0)
    assert jobs and all({"id", "state"} <= set(j) for j in jobs), jobs
    assert len({j["id"] for j in jobs}) == len(jobs), jobs


def test_basic_auth(tmp_path, slow_ls):
    env = _env(tmp_path, BASIC_AUTH_USER="alice", BASIC_AUTH_PASS="s3cret-pass", LABEL_STUDIO_URL=slow_ls.url)
    web = services.start_gunicorn(env, workers=1, threads=2, log_dir=tmp_path / "logs")
    try:
        url = web.url
        ok, bad = ("alice", "s3cret-pass"), ("alice", "wrong")
        unknown = {"action": "SOMETHING_NEW", "project": _project_payload(806)}
        assert requests.get(f"{url}/versions", timeout=5).status_code == 401
        assert requests.get(f"{url}/versions", auth=bad, timeout=5).status_code == 401
        assert requests.post(f"{url}/webhook", json=unknown, timeout=5).status_code == 401
        assert requests.post(f"{url}/setup", json={}, timeout=5).status_code == 401
        r = requests.get(f"{url}/versions", auth=ok, timeout=5)
        assert r.status_code == 200 and isinstance(r.json()["versions"], list), r.text
        assert requests.get(f"{url}/health", auth=ok, timeout=5).status_code == 200
        assert requests.post(f"{url}/webhook", json=unknown, auth=ok, timeout=5).status_code == 200
        assert _setup(url, 806, CLASSIFICATION_CONFIG, slow_ls.url, auth=ok).status_code == 200
    finally:
        web.stop()
