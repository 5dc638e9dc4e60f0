"""The protocol layer (albackend.adapters.app) through Flask's test client: a real app over a tmp model store, no Redis
(in-process job queue), tiny real models published into the store. Label Studio's side of the contract (checked
against a real LS 1.23.2 in tests/support/lsapi.py): one result per task in order, model_version equal to /setup's,
2xx webhooks at once,
JSON 4xx for bad input and never a stack trace."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from albackend.services import jobs
from albackend.adapters.app import create_app
from model import ActiveLearningModel
from albackend.models.acquisition import AcquisitionModel
from albackend.settings import Settings
from albackend.services.store import ModelStore
from albackend.services.taskstore import TaskStore
from tests.support.published import CLS_CONFIG, NER_CONFIG, labeled, publish_tiny_models
from tests.support.services import free_port

IMAGE_CONFIG = ('<View><Image name="image" value="$image"/><Choices name="c" toName="image">'
                '<Choice value="cat"/><Choice value="dog"/></Choices></View>')
TOKEN = "ls-token-abcdef-123456"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_settings(root, tiny, **over) -> Settings:
    base = dataclasses.replace(
        Settings.from_env(), model_dir=root, acquisition_model=tiny, query_strategy="auto", redis_url="",
        label_studio_url=f"http://127.0.0.1:{free_port()}", label_studio_api_key=TOKEN, train_epochs=1,
        train_min_steps=4, train_max_steps=0, train_batch_size=8, train_lr=1e-3, max_length=32,
        infer_batch_size=32, max_text_chars=100_000, ups_enabled=True, predict_ups_min_tasks=200,
        push_predictions=True, basic_auth_user="", basic_auth_pass="", seed=5, device="cpu", log_level="WARNING")
    return dataclasses.replace(base, **over)


@pytest.fixture
def settings(tmp_path, tiny):
    return make_settings(tmp_path / "models", tiny)


@pytest.fixture
def client(settings):
    return create_app(settings, model_class=ActiveLearningModel).test_client()


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny):
    """A model store with a trained classifier for project 12 and a trained tagger for project 13."""
    root = tmp_path_factory.mktemp("published")
    cls_info, ner_info = publish_tiny_models(make_settings(root, tiny), root)
    return root, cls_info, ner_info


@pytest.fixture
def pub_client(published, tiny):
    root, _, _ = published
    return create_app(make_settings(root, tiny), model_class=ActiveLearningModel).test_client()


def assert_json_error(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)[:300]
    assert resp.is_json, resp.get_data(as_text=True)[:300]
    body = resp.get_json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert "Traceback" not in resp.get_data(as_text=True)
    return body["error"]


def setup(c, project="12.1712345678", schema=CLS_CONFIG, headers=None):
    return c.post("/setup", json={"project": project, "schema": schema, "hostname": "http://127.0.0.1:1",
                                  "access_token": TOKEN, "extra_params": None}, headers=headers)


def task(i, text):
    return {"id": i, "data": {"text": text}, "annotations": [], "predictions": [], "project": 12}


# ----------------------------------------------------------------------------------------- /health


def test_health(client):
    for path in ("/health", "/"):
        r = client.get(path)
        assert r.status_code == 200 and r.get_json()["status"] == "UP"
    assert client.get("/health").get_json()["queue"] == "in-process"


# ------------------------------------------------------------------------------------------ /setup


def test_setup_valid(client, settings):
    r = setup(client)
    assert r.status_code == 200
    assert r.get_json() == {"model_version": "untrained-12"}
    pdir = ModelStore(settings.model_dir).project_dir("12")
    assert json.loads((pdir / "spec.json").read_text())["labels"] == ["Sports", "Politics"]
    conn = pdir / "connection.json"
    assert oct(conn.stat().st_mode & 0o777) == "0o600"
    # label_config is accepted in place of schema; repeated setup is idempotent
    r = client.post("/setup", json={"project": "12.1712345678", "label_config": CLS_CONFIG})
    assert r.get_json() == {"model_version": "untrained-12"}


def test_setup_is_fast(client):
    t0 = time.perf_counter()
    for _ in range(5):
        assert setup(client).status_code == 200
    assert (time.perf_counter() - t0) / 5 < 1.0  # LS waits 3 s; nothing may load or train here


@pytest.mark.parametrize("schema, fragment", [(IMAGE_CONFIG, "no <Text>"), ("<View>", "not valid XML"),
                                              ("", "empty")])
def test_setup_invalid_config_is_422(client, schema, fragment):
    msg = assert_json_error(setup(client, schema=schema), 422)
    assert "unsupported label config" in msg and fragment in msg


@pytest.mark.parametrize("body", [{"schema": CLS_CONFIG}, {"project": None, "schema": CLS_CONFIG},
                                  {"project": "../etc", "schema": CLS_CONFIG},
                                  {"project": ["1"], "schema": CLS_CONFIG}, {"project": True}])
def test_setup_without_a_valid_project_is_400(client, body):
    assert_json_error(client.post("/setup", json=body), 400)


def test_setup_reports_the_published_version(pub_client, published):
    _, cls_info, _ = published
    assert setup(pub_client).get_json() == {"model_version": cls_info["model_version"]}


# ---------------------------------------------------------------------------------------- /predict


def test_predict_without_model_answers_no_prediction_per_task(client):
    """One empty prediction list per task: LS stores nothing (no empty ``untrained-*`` predictions)."""
    assert setup(client).get_json()["model_version"] == "untrained-12"
    tasks = [task(i, f"text {i}") for i in range(5)] + [{"id": 9, "data": {}}]
    r = client.post("/predict", json={"tasks": tasks, "project": "12.1712345678", "label_config": CLS_CONFIG})
    assert r.status_code == 200
    assert r.get_json()["results"] == [[] for _ in tasks]
    assert client.post("/predict", json={"tasks": [], "project": "12"}).get_json() == {"results": []}


def test_predict_classification(pub_client, published, tiny):
    root, cls_info, _ = published
    version = setup(pub_client).get_json()["model_version"]
    assert version == cls_info["model_version"]
    texts = ["the striker scored a late goal", "senate passed the budget vote", "minister", "league match 3",
             "a long text about elections and the new budget of the government " * 5]
    tasks = [task(100 + i, t) for i, t in enumerate(texts)]
    r = pub_client.post("/predict", json={"tasks": tasks, "project": "12.1712345678"})
    assert r.status_code == 200
    results = r.get_json()["results"]
    assert len(results) == len(tasks)
    model = AcquisitionModel.load(cls_info["path"], device="cpu")
    want = [model.spec.labels[int(j)] for j in model.predict(texts).probs.argmax(axis=1)]
    for res, label in zip(results, want):
        assert res["model_version"] == version
        assert isinstance(res["score"], float) and 0.0 <= res["score"] <= 1.0
        assert len(res["result"]) == 1
        item = res["result"][0]
        assert item["from_name"] == "label" and item["to_name"] == "text" and item["type"] == "choices"
        assert item["value"]["choices"] == [label]  # same order as the tasks
    # the project can come from the tasks when the payload has none
    r2 = pub_client.post("/predict", json={"tasks": tasks[:2]})
    assert [x["result"] for x in r2.get_json()["results"]] == [x["result"] for x in results[:2]]


def test_predict_ner_regions_match_the_text(pub_client, published):
    _, _, ner_info = published
    version = setup(pub_client, project="13.1712345678", schema=NER_CONFIG).get_json()["model_version"]
    assert version == ner_info["model_version"]
    texts = ["Bob visited Paris", "  Bob   visited   Paris  ", "Zoë visited Łódź 🙂", "מוחמד visited القاهرة",
             "nothing", "Bob visited Paris " * 40]
    tasks = [{"id": 200 + i, "data": {"text": t}, "project": 13} for i, t in enumerate(texts)]
    r = pub_client.post("/predict", json={"tasks": tasks, "project": 13})
    assert r.status_code == 200
    results = r.get_json()["results"]
    assert len(results) == len(tasks)
    n_regions = 0
    for text, res in zip(texts, results):
        assert res["model_version"] == version and isinstance(res["score"], float)
        for region in res["result"]:
            v = region["value"]
            assert region["type"] == "labels" and region["from_name"] == "ner" and region["to_name"] == "text"
            assert v["labels"][0] in ("PER", "LOC")
            assert 0 <= v["start"] < v["end"] <= len(text)
            assert v["text"] == text[v["start"]:v["end"]]
            assert isinstance(region["score"], float)
            n_regions += 1
    assert [(x["value"]["text"], x["value"]["labels"]) for x in results[0]["result"]] == [
        ("Bob", ["PER"]), ("Paris", ["LOC"])]
    assert n_regions >= 4


BAD_TASKS = [
    {"id": 1, "data": {}},                                   # no text field
    {"id": 2, "data": {"text": 42}},                         # not a string
    {"id": 3, "data": {"text": None}},
    {"id": 4, "data": {"text": ""}},                         # empty
    {"id": 5, "data": {"text": "   "}},
    {"id": 6, "data": {"text": "x" * (2 << 20)}},            # 2 MB
    {"id": 7, "data": {"text": "🙂👩\u200d👩\u200d👧 مرحبا بالعالم שלום עולם"}},
    {"id": 8},                                               # no data
    "not a task",
    {"data": {"text": "no id at all"}},
    {"id": "abc", "data": {"text": "string id"}},
    {"id": 12, "data": {"text": "ok"}},
]


@pytest.mark.parametrize("project, ups_min", [("12", 200), ("13", 200), ("12", 3), ("13", 3)])
def test_predict_bad_tasks_still_one_result_each(published, tiny, project, ups_min):
    root, cls_info, ner_info = published
    c = create_app(make_settings(root, tiny, predict_ups_min_tasks=ups_min), model_class=ActiveLearningModel).test_client()
    version = (cls_info if project == "12" else ner_info)["model_version"]
    for _ in range(2):  # the second batch may be served from the prediction store (UPS path)
        r = c.post("/predict", json={"tasks": BAD_TASKS, "project": project})
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        results = r.get_json()["results"]
        assert len(results) == len(BAD_TASKS)
        for res in results:
            assert isinstance(res, dict) and isinstance(res["result"], list)
            assert res["model_version"] == version and isinstance(res["score"], float)
        for i in (0, 1, 2, 7, 8):
            assert results[i]["result"] == []


def test_predict_duplicate_task_ids_still_one_result_each(published, tiny):
    root, cls_info, _ = published
    c = create_app(make_settings(root, tiny, predict_ups_min_tasks=2), model_class=ActiveLearningModel).test_client()
    tasks = [task(7, "goal"), task(7, "vote"), task(8, "match")]
    for _ in range(2):
        results = c.post("/predict", json={"tasks": tasks, "project": "12"}).get_json()["results"]
        assert len(results) == 3 and all(isinstance(r, dict) and r["result"] for r in results)


def test_predict_bad_payloads(client):
    assert_json_error(client.post("/predict", json={"tasks": "nope", "project": 12}), 400)
    assert_json_error(client.post("/predict", json={"project": 12}), 400)
    assert_json_error(client.post("/predict", json={"tasks": ["x"]}), 400)  # no project anywhere
    assert_json_error(client.post("/predict", json=[1, 2]), 400)


# ---------------------------------------------------------------------------------------- /webhook


def test_webhook_errors_and_ignored_actions(client):
    assert_json_error(client.post("/webhook", data=b"{not json", content_type="application/json"), 400)
    assert_json_error(client.post("/webhook", json={"project": {"id": 12}}), 400)
    assert_json_error(client.post("/webhook", json={"action": "", "project": 12}), 400)
    assert_json_error(client.post("/webhook", json={"action": ["START_TRAINING"], "project": 12}), 400)
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 12}})
    assert r.status_code == 200 and r.get_json() == {"status": "ignored", "action": "PROJECT_UPDATED"}
    r = client.post("/webhook", json={"action": "TASKS_CREATED"})
    assert r.status_code == 200
    assert_json_error(client.post("/webhook", json={"action": "START_TRAINING"}), 400)  # no project


def _wait(pred, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_webhook_queues_training_jobs(client, settings):
    store = ModelStore(settings.model_dir)
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 21, "title": "t"}})
    assert r.status_code == 201
    job_a = r.get_json()["job_id"]
    assert job_a.startswith("train-21-")
    # the in-process job runs with the app's settings (its store) and fails clearly: LS is unreachable
    assert _wait(lambda: (store.read_job("21", job_a) or {}).get("state") == "failed")
    assert "unreachable" in store.read_job("21", job_a)["reason"]
    # the project's own min_annotations_to_start_training (1) overrides RETRAIN_EVERY
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 21,
                                      "min_annotations_to_start_training": 1},
                                      "task": {"id": 5, "project": 21}, "annotation": {"id": 1, "result": []}})
    assert r.status_code == 201 and r.get_json()["job_id"] != job_a
    r = client.post("/train", json={"project": 21})
    assert r.status_code == 201 and r.get_json()["job_id"]


def test_annotation_events_queue_a_retrain_every_n(settings):
    """RETRAIN_EVERY annotation events queue one retrain; the ones before are journalled, not queued."""
    app = create_app(dataclasses.replace(settings, retrain_every=3), model_class=ActiveLearningModel)
    store = ModelStore(settings.model_dir)
    answers = []
    for i in range(3):
        r = app.test_client().post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 41},
                                                     "task": {"id": 100 + i}, "annotation": {"id": i}})
        answers.append((r.status_code, r.get_json()["status"]))
    assert answers == [(200, "recorded"), (200, "recorded"), (201, "queued")]
    assert [t for t, _ in TaskStore(store.project_dir("41")).dirty()] == [100, 101, 102]


def test_webhook_burst_queues_at_most_one_job(settings):
    app = create_app(settings, model_class=ActiveLearningModel)
    store = ModelStore(settings.model_dir)
    payload = {"action": "ANNOTATION_CREATED", "project": {"id": 31, "min_annotations_to_start_training": 1},
               "task": {"id": 1, "project": 31},
               "annotation": {"id": 1, "result": []}}
    with jobs.project_lock(settings, store, "31"):  # a job of this project is busy: the next ones must wait
        r = app.test_client().post("/webhook", json={**payload, "action": "START_TRAINING"})
        job_a = r.get_json()["job_id"]
        assert _wait(lambda: (store.read_job("31", job_a) or {}).get("state") == "running")

        def post(_):
            t0 = time.perf_counter()
            resp = app.test_client().post("/webhook", json=payload)
            return resp.status_code, resp.get_json(), time.perf_counter() - t0

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(20)))
        assert all(code == 201 for code, _, _ in answers)
        assert all(dt < 1.0 for _, _, dt in answers)  # LS gives a webhook 1 s
        ids = {body["job_id"] for _, body, _ in answers}
        assert len(ids) == 1 and job_a not in ids
        assert sum(body["status"] == "queued" for _, body, _ in answers) == 1
        states = [j["state"] for j in store.jobs("31")]
        assert sorted(states) == ["queued", "running"]
    job_b = ids.pop()
    assert _wait(lambda: all((store.read_job("31", j) or {}).get("state") == "failed" for j in (job_a, job_b)))
    status = app.test_client().get("/projects/31/status").get_json()
    assert {j["id"] for j in status["jobs"]} == {job_a, job_b}
    assert all("unreachable" in j["reason"] for j in status["jobs"])
    assert TOKEN not in json.dumps(status)


# ------------------------------------------------------------------------------- /versions /metrics


def test_versions(pub_client, published, client):
    _, cls_info, ner_info = published
    r = pub_client.get("/versions")
    assert r.status_code == 200
    assert set(r.get_json()["versions"]) == {cls_info["model_version"], ner_info["model_version"]}
    assert pub_client.get("/versions?project=12").get_json() == {"versions": [cls_info["model_version"]]}
    assert pub_client.get("/versions?project=99").get_json() == {"versions": []}
    assert client.get("/versions").get_json() == {"versions": []}
    assert_json_error(pub_client.get("/versions?project=../x"), 400)


def test_metrics(pub_client, published):
    setup(pub_client)
    pub_client.post("/predict", json={"tasks": [task(1, "goal")], "project": 12})
    pub_client.post("/webhook", data=b"junk", content_type="application/json")
    r = pub_client.get("/status")
    assert r.status_code == 200 and r.is_json
    m = r.get_json()
    assert m["uptime_s"] >= 0
    assert m["latency"]["/setup"]["n"] >= 1 and m["latency"]["/predict"]["p50_ms"] >= 0
    assert m["responses"]["/webhook 400"] >= 1
    assert set(m["projects"]) == {"12", "13"}
    assert m["projects"]["12"]["model_version"] == published[1]["model_version"]
    prom = pub_client.get("/metrics")
    assert prom.status_code == 200 and prom.mimetype == "text/plain"
    assert 'albackend_http_requests_total{endpoint="/webhook",status="400"}' in prom.get_data(as_text=True)


def test_project_status(pub_client, published, client):
    st = pub_client.get("/projects/12/status").get_json()
    assert st["project"] == "12" and st["model_version"] == published[1]["model_version"]
    assert st["iteration"] == 0 and st["jobs"] == [] and st["last_training"] is None
    st = client.get("/projects/77/status").get_json()
    assert st["model_version"] is None and st["jobs"] == []
    assert_json_error(client.get("/projects/a%20b/status"), 400)
    assert_json_error(client.get("/projects/abc/status"), 400)
    assert_json_error(client.get("/nope"), 404)
    assert_json_error(client.put("/setup"), 405)


# ------------------------------------------------------------------------------------------- auth


def _basic(user, pwd):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pwd}".encode()).decode()}


def test_basic_auth(tmp_path, tiny):
    c = create_app(make_settings(tmp_path / "m", tiny, basic_auth_user="ls", basic_auth_pass="pä55:word"),
                   model_class=ActiveLearningModel).test_client()
    for path in ("/health", "/versions", "/metrics", "/status"):
        r = c.get(path)
        assert_json_error(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert c.get(path, headers=_basic("ls", "pä55:word")).status_code == 200
        assert_json_error(c.get(path, headers=_basic("ls", "wrong")), 401)
        assert_json_error(c.get(path, headers=_basic("other", "pä55:word")), 401)
    assert_json_error(setup(c), 401)
    assert setup(c, headers=_basic("ls", "pä55:word")).status_code == 200
    for header in ("Basic !!!notbase64", "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), "Bearer x",
                   "Basic ", "Token " + TOKEN):
        assert_json_error(c.get("/health", headers={"Authorization": header}), 401)


# --------------------------------------------------------------------------------- garbage bodies


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook", "/train"])
def test_garbage_bodies_never_500(client, path):
    rng = np.random.default_rng(0)
    bodies = [
        rng.bytes(3 << 20),                                        # 3 MB of random bytes
        b"\xff\xfe\x00garbage",                                    # invalid UTF-8
        b"[" * 100_000 + b"]" * 100_000,                           # deeply nested JSON
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        json.dumps({"project": 12, "tasks": [{"id": i} for i in range(5000)], "action": 1}).encode()[:-7],
        b"null", b"123", b'"str"', b"[]", b"",
        json.dumps({"project": {"id": None}, "action": "START_TRAINING", "tasks": [[]]}).encode(),
        json.dumps({"project": 1e308, "action": "START_TRAINING", "schema": 5}).encode(),
    ]
    for body in bodies:
        for ctype in ("application/json", "text/plain"):
            r = client.post(path, data=body, content_type=ctype)
            text = r.get_data(as_text=True)
            assert r.status_code < 500, (path, body[:40], r.status_code, text[:200])
            assert "Traceback" not in text and 'File "' not in text
            assert r.is_json
