"""Property-based fuzzing of every endpoint against the real gunicorn app serving trained tiny models.

Label-Studio-shaped payloads with missing fields, wrong types, unicode (lone surrogates included), huge
texts, extreme ids, bad label configs, bad spans and cancelled annotations. The contract: no answer >= 500
and no traceback in the server log. FUZZ_EXAMPLES sets the default run's size (2,000); the `slow` run
does 10,000 (figures in docs/hardening.md).
"""
from __future__ import annotations

import json
import os
import time
import urllib.parse

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support import services
from tests.support.published import CLS_CONFIG, NER_CONFIG, publish_tiny_models
from tests.test_app_protocol import make_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING",
           "PROJECT_UPDATED", "", "annotation_created"]
BAD_CONFIGS = ["", "<View>", "<View/>", "not xml", "<View><Text name='t' value='$text'/></View>",
               '<View><Choices name="c" toName="x"><Choice value="a"/></Choices></View>',
               CLS_CONFIG.replace("Sports", "Sp\ud800orts"), NER_CONFIG.replace("$text", "$t\udfffx"),
               "<View>" * 5000, '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><View>&a;&a;</View>']


@pytest.fixture(scope="session")
def fuzz_backend(tmp_path_factory, tiny):
    """gunicorn (1 worker, 4 threads, in-process queue) over a store with trained models for projects 12, 13."""
    root = tmp_path_factory.mktemp("fuzz")
    models = root / "models"
    models.mkdir()
    publish_tiny_models(make_settings(models, tiny), models)
    env = {"MODEL_DIR": str(models), "ACQUISITION_MODEL": tiny, "MAX_LENGTH": "32", "TRAIN_MIN_STEPS": "4",
           "LABEL_STUDIO_URL": f"http://127.0.0.1:{services.free_port()}", "LABEL_STUDIO_API_KEY": "fuzz-key-0123",
           "PREDICT_UPS_MIN_TASKS": "200", "DEVICE": "cpu", "OMP_NUM_THREADS": "1", "LOG_LEVEL": "INFO"}
    svc = services.start_gunicorn(env, workers=1, threads=4, log_dir=root / "logs")
    yield svc
    svc.stop()


def _surrogate_text() -> st.SearchStrategy[str]:
    plain = st.text(alphabet=st.characters(categories=["L", "N", "Z", "P", "S", "Cs", "Cc"]), max_size=40)
    lone = st.builds(lambda a, c, b: a + chr(c) + b, plain, st.integers(0xD800, 0xDFFF), plain)
    huge = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é ", "\ud800", "Paris "]),
                     st.sampled_from([100_000, 30_000]))
    small = st.one_of(plain, lone, st.sampled_from(["Bob visited Paris", "match goal", ""]))
    return small, st.integers(0, 19).flatmap(lambda i: huge if i == 0 else small)  # 1 in 20 texts is huge


SMALL_TEXT, TEXT = _surrogate_text()
BIG_INT = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 0]))
SCALAR = st.one_of(st.none(), st.booleans(), BIG_INT, st.floats(allow_nan=False), TEXT)
PROJECT = st.one_of(st.sampled_from([12, 13, "12.1712345678", "13.17", "1.abc", "-rf", "1" * 300, "1e400", 12.0]),
                    BIG_INT, TEXT, st.none(), st.just({"id": 12}), st.just({"id": "x" * 300}), st.just([12]))
SPAN_VALUE = st.fixed_dictionaries({}, optional={
    "start": st.one_of(BIG_INT, st.just("0")), "end": st.one_of(BIG_INT, st.none()),
    "labels": st.one_of(st.lists(st.sampled_from(["PER", "LOC", "ORG", "\ud800"]), max_size=2), SCALAR),
    "choices": st.one_of(st.lists(st.sampled_from(["Sports", "Politics", "Other", 3]), max_size=3), SCALAR),
    "text": TEXT})
RESULT_ITEM = st.one_of(SCALAR, st.fixed_dictionaries({}, optional={
    "from_name": st.sampled_from(["label", "ner", "x", 1]), "to_name": st.sampled_from(["text", None]),
    "type": st.sampled_from(["choices", "labels", "textarea"]), "value": st.one_of(SPAN_VALUE, SCALAR)}))
ANNOTATION = st.one_of(SCALAR, st.fixed_dictionaries({}, optional={
    "id": BIG_INT, "result": st.one_of(st.lists(RESULT_ITEM, max_size=4), SCALAR),
    "was_cancelled": st.one_of(st.booleans(), SCALAR), "updated_at": st.one_of(TEXT, BIG_INT),
    "created_at": SCALAR, "completed_by": SCALAR}))
TASK = st.one_of(SCALAR, st.fixed_dictionaries({}, optional={
    "id": st.one_of(BIG_INT, SCALAR),
    "data": st.one_of(st.fixed_dictionaries({}, optional={"text": st.one_of(TEXT, SCALAR), "image": TEXT}), SCALAR),
    "annotations": st.one_of(st.lists(ANNOTATION, max_size=3), SCALAR), "project": PROJECT}))
BATCH_TASK = st.builds(lambda t, i, pid: {"id": i, "data": {"text": t}, "project": pid},
                      SMALL_TEXT, BIG_INT, st.sampled_from([12, 13]))
LARGE_BATCH = st.builds(lambda ts, n: (ts * n)[:n], st.lists(BATCH_TASK, min_size=1, max_size=4),
                        st.integers(200, 230))  # the UPS path of large batches (>= 200 tasks)
TASKS = st.integers(0, 9).flatmap(lambda i: LARGE_BATCH if i == 0 else st.lists(TASK, max_size=12))


def _json(path: str, body) -> tuple[str, str, dict]:
    """Python's json module writes (and Flask reads) Infinity/NaN; requests' json= refuses them."""
    return "POST", path, {"data": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


REQUESTS = st.one_of(
    st.builds(lambda p, s, h, t: _json("/setup", {"project": p, "schema": s, "hostname": h, "access_token": t}),
              PROJECT, st.one_of(st.sampled_from([CLS_CONFIG, NER_CONFIG] + BAD_CONFIGS), TEXT, SCALAR),
              st.one_of(TEXT, st.just("http://evil.example")), SCALAR),
    st.builds(lambda ts, p, keep: _json("/predict", {"tasks": ts, **({"project": p} if keep else {})}),
              TASKS, PROJECT, st.booleans()),
    st.builds(lambda ts: _json("/predict", {"tasks": ts}),
              st.lists(st.builds(lambda t, i, pid: {"id": i, "data": {"text": t}, "project": pid},
                                 TEXT, BIG_INT, st.sampled_from([12, 13])), max_size=10)),
    st.builds(lambda a, p, t, ann: _json("/webhook", {"action": a, "project": p, "task": t, "annotation": ann}),
              st.one_of(st.sampled_from(ACTIONS), SCALAR), st.one_of(PROJECT, st.just({"id": 12, "label_config": 1})),
              TASK, ANNOTATION),
    st.builds(lambda p: _json("/train", {"project": p}), PROJECT),
    st.builds(lambda body: _json("/webhook", body), SCALAR),
    st.builds(lambda raw: ("POST", "/predict", {"data": raw, "headers": {"Content-Type": "application/json"}}),
              st.one_of(st.binary(max_size=64), st.just(b"[" * 100_000), st.just(b'{"tasks": [' + b"1," * 1000 + b"1]}"))),
    st.builds(lambda p: ("GET", "/projects/" + urllib.parse.quote(str(p).encode("utf-8", "surrogatepass"), safe="")
                         + "/status", {}), PROJECT),
    st.builds(lambda p: ("GET", "/projects/" + urllib.parse.quote(str(p).encode("utf-8", "surrogatepass"), safe=""),
                         {}), PROJECT),  # the dashboard
    st.builds(lambda p: ("GET", "/versions", {"params": {"project": str(p).encode("utf-8", "surrogatepass")}}),
              PROJECT),
    st.sampled_from([("GET", "/health", {}), ("GET", "/metrics", {}), ("GET", "/status", {}), ("GET", "/", {}), ("GET", "/nope", {}),
                     ("DELETE", "/predict", {})]),
)


def _fuzz(backend, n: int) -> dict:
    session = requests.Session()
    seen: dict[str, int] = {}
    http_s: dict[str, float] = {}
    t0 = time.perf_counter()

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(REQUESTS)
    def one(req):
        method, path, kwargs = req
        t = time.perf_counter()
        r = session.request(method, backend.url + path, timeout=60, **kwargs)
        http_s[path.split("/")[1]] = http_s.get(path.split("/")[1], 0.0) + time.perf_counter() - t
        seen[f"{path.split('/')[1]} {r.status_code}"] = seen.get(f"{path.split('/')[1]} {r.status_code}", 0) + 1
        assert r.status_code < 500, f"{method} {path} -> {r.status_code}: {r.text[:300]}"
        assert "Traceback" not in r.text

    one()
    seconds = time.perf_counter() - t0
    backend.check_alive()
    log = services.tail(backend.log_path, 10**8)
    assert "Traceback" not in log and "Logging error" not in log, log[log.find("Traceback") - 2000:][:6000]
    print(f"\n[fuzz] {n} examples in {seconds:.1f} s (HTTP {sum(http_s.values()):.1f} s: "
          f"{ {k: round(v, 1) for k, v in http_s.items()} }); statuses {dict(sorted(seen.items()))}")
    return seen


def test_fuzz_every_endpoint_no_5xx(fuzz_backend):
    seen = _fuzz(fuzz_backend, int(os.environ.get("FUZZ_EXAMPLES", "2000")))
    assert any(k.startswith("predict 200") for k in seen) and any(k.startswith("setup 4") for k in seen), seen


@pytest.mark.slow
def test_fuzz_long_run(fuzz_backend):
    _fuzz(fuzz_backend, int(os.environ.get("FUZZ_EXAMPLES_LONG", "10000")))
