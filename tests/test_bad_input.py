"""Regression tests for issue 10's bad-input 500s, one per root cause (the fuzz test in tests/e2e finds the
rest): lone surrogates, task ids outside int64, project ids Label Studio never sends, 100 KB texts, Latin-1
basic auth, oversized bodies."""
from __future__ import annotations

import base64
import dataclasses

import pytest

from albackend.adapters.app import basic_auth_ok, create_app
from model import ActiveLearningModel
from albackend.domain.examples import gold_examples, task_text
from albackend.domain.labelconfig import ConfigError, parse_label_config
from albackend.models.acquisition import AcquisitionModel
from albackend.models.infer import CHARS_PER_TOKEN, encode
from albackend.services.rescoring import unlabeled_pool
from albackend.services.store import ModelStore
from albackend.services.training import train_and_publish
from tests.support.published import CLS_CONFIG, NER_CONFIG, labeled
from tests.test_app_protocol import assert_json_error, client, make_settings, pub_client, published, settings  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SURROGATE = "a\ud800b \udfff end"


def test_lone_surrogates_become_replacement_characters_one_for_one():
    spec = parse_label_config(NER_CONFIG)
    text = task_text({"data": {"text": SURROGATE}}, spec, 0)
    assert text == "a\ufffdb \ufffd end" and len(text) == len(SURROGATE)
    text.encode("utf-8")


def test_label_config_with_a_lone_surrogate_is_a_config_error():
    with pytest.raises(ConfigError, match="surrogate"):
        parse_label_config(CLS_CONFIG.replace("Sports", "Sp\ud800orts"))


def test_a_surrogate_task_neither_fails_training_nor_rescoring(tmp_path, tiny):
    s = make_settings(tmp_path, tiny)
    spec = parse_label_config(CLS_CONFIG)
    bad = labeled(99, "Sports")
    bad["data"]["text"] = "goal \ud800 match"
    tasks = [labeled(i, "Sports" if i % 2 else "Politics") for i in range(1, 7)] + [bad,
             {"id": 500, "data": {"text": "vote \udc00 senate"}}]
    model, info = train_and_publish(s, ModelStore(tmp_path), "5", spec, tasks, {"seconds": {}})
    assert info["gold"] == 7
    pool = unlabeled_pool(tasks, model, s.max_text_chars)
    assert len(model.predict(pool.texts).probs) == 1


def test_ner_gold_spans_keep_their_offsets_around_a_surrogate():
    spec = parse_label_config(NER_CONFIG)
    task = {"id": 1, "data": {"text": "\ud800Bob visited Paris"}, "annotations": [{"result": [
        {"from_name": "ner", "value": {"start": 1, "end": 4, "labels": ["PER"]}}]}]}
    (ex,), skips = gold_examples([task], spec, 0)
    assert not skips and ex.text[1:4] == "Bob"


def test_long_texts_are_cut_by_characters_before_tokenizing(tiny):
    calls = []

    class Recording:  # the real tokenizer, recording what it is asked to tokenize
        def __init__(self, tok):
            self.tok = tok

        def __call__(self, texts, **kw):
            calls.extend(len(t) for t in texts)
            return self.tok(texts, **kw)

    model = AcquisitionModel.create(tiny, parse_label_config(CLS_CONFIG), device="cpu", max_length=32, seed=0)
    enc = encode(Recording(model.tokenizer), ["word " * 20_000, "short"], 32, words=True)
    assert max(calls) == 32 * CHARS_PER_TOKEN and len(enc.input_ids[0]) == 32


def test_predict_surrogates_and_extreme_task_ids(published, tiny):
    root, cls_info, _ = published
    for ups_min in (200, 3):  # the plain path and the prediction-store (UPS) path
        c = create_app(make_settings(root, tiny, predict_ups_min_tasks=ups_min), model_class=ActiveLearningModel).test_client()
        tasks = [{"id": i, "data": {"text": t}} for i, t in [(2**63, "goal"), (-(2**63) - 1, SURROGATE),
                                                              (2**63 - 1, "vote"), (7, "\udfff")]] * 60
        r = c.post("/predict", json={"tasks": tasks, "project": 12})
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        results = r.get_json()["results"]
        assert len(results) == 240 and all(x["model_version"] == cls_info["model_version"] for x in results)


@pytest.mark.parametrize("project", ["1" * 300, "1.abc", "-rf", "1e400", 1e400, 10**30, -3, "12 "])
def test_project_ids_label_studio_never_sends_are_400(client, project):  # noqa: F811
    body = {"project": project, "schema": CLS_CONFIG, "action": "START_TRAINING", "tasks": [{"id": 1}]}
    for path in ("/setup", "/webhook", "/train", "/predict"):
        assert_json_error(client.post(path, json=body), 400)
    assert_json_error(client.get("/versions", query_string={"project": str(project)}), 400)
    assert_json_error(client.get(f"/projects/{project}/status"), 400)


def _basic(user: bytes, pwd: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + pwd).decode()


def test_basic_auth_accepts_utf8_and_latin1():
    assert basic_auth_ok(_basic(b"ls", "pä55".encode("latin-1")), "ls", "pä55")  # requests, LS's user:pass@ URLs
    assert basic_auth_ok(_basic(b"ls", "pä55".encode()), "ls", "pä55")  # browsers
    assert not basic_auth_ok(_basic(b"ls", b"pa55"), "ls", "pä55")
    assert basic_auth_ok(_basic(b"ls", "p€".encode()), "ls", "p€")  # not Latin-1: UTF-8 only
    assert not basic_auth_ok("Basic ???", "ls", "p")


def test_body_over_the_cap_is_413_before_reading(settings, published):  # noqa: F811
    c = create_app(dataclasses.replace(settings, max_request_mb=0.5), model_class=ActiveLearningModel).test_client()
    r = c.post("/predict", data=b"x" * (600 * 1024), content_type="application/json")
    assert_json_error(r, 413)
    assert c.post("/predict", json={"tasks": [], "project": 12}).status_code == 200
