"""Checks of the test harness itself: dataset helpers, redis start/stop, and the LS client against a real LS.

The Label Studio part also pins down the LS 1.23 behaviour the backend relies on (documented in lsapi.py),
using an in-process fake ML backend so it does not depend on the backend under development.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys

import pytest

from tests.support import services
from bench.emulation.data import tokens_to_text
from tests.support.datasets import (AGNEWS_LABELS, CLASSIFICATION_CONFIG, CONLL_LABELS, agnews_tasks, choices_result,
                                    conll_tasks, spans_result)
from tests.support.fakes import FakeMLBackend
from tests.support.lsapi import LSAPIError


# --------------------------------------------------------------------------------------------- datasets
def test_iob2_to_char_spans():
    text, _, spans = tokens_to_text(["EU", "rejects", "German", "call", "Peter", "Blackburn", "x", "New", "York"],
                                    ["B-ORG", "O", "B-MISC", "O", "B-PER", "I-PER", "O", "I-LOC", "I-LOC"])
    assert text == "EU rejects German call Peter Blackburn x New York"
    assert spans == [(0, 2, "ORG"), (11, 17, "MISC"), (23, 38, "PER"), (41, 49, "LOC")]
    assert [text[s:e] for s, e, _ in spans] == ["EU", "German", "Peter Blackburn", "New York"]
    # adjacent B- of the same type are two entities
    _, _, spans = tokens_to_text(["A", "B"], ["B-PER", "B-PER"])
    assert spans == [(0, 1, "PER"), (2, 3, "PER")]


def test_agnews_tasks(shared_data):
    tasks, labels = agnews_tasks(12, seed=3)
    assert len(tasks) == len(labels) == 12
    assert all(set(t) == {"data"} and isinstance(t["data"]["text"], str) and t["data"]["text"] for t in tasks)
    assert set(labels[:4]) == set(AGNEWS_LABELS)  # balanced: every class in any 4-prefix
    assert agnews_tasks(12, seed=3) == (tasks, labels)  # deterministic
    assert agnews_tasks(12, seed=4)[0] != tasks
    _, labels_u = agnews_tasks(50, seed=0, balanced=False)
    assert set(labels_u) <= set(AGNEWS_LABELS)


def test_conll_tasks(shared_data):
    tasks, gold = conll_tasks(20, seed=1)
    assert len(tasks) == len(gold) == 20
    for task, spans in zip(tasks, gold):
        text = task["data"]["text"]
        assert spans, "min_entities=1"
        for s, e, lab in spans:
            assert 0 <= s < e <= len(text) and lab in CONLL_LABELS
            assert text[s:e] == text[s:e].strip() and text[s:e]
        res = spans_result(text, spans)
        assert [r["value"]["text"] for r in res] == [text[s:e] for s, e, _ in spans]
        assert all(r["type"] == "labels" and r["from_name"] == "label" and r["to_name"] == "text" for r in res)
        assert len({r["id"] for r in res}) == len(res)


def test_result_builders():
    assert choices_result("Sports") == [{"from_name": "label", "to_name": "text", "type": "choices",
                                         "value": {"choices": ["Sports"]}}]
    with pytest.raises(ValueError):
        spans_result("abc", [(2, 5, "PER")])


# --------------------------------------------------------------------------------------------- processes
def test_free_port_is_bindable():
    port = services.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.redis
def test_redis_start_stop(tmp_path):
    if services.redis_server_bin() is None:
        if services.in_ci():
            pytest.fail("redis-server missing under CI")
        pytest.skip("redis-server not installed")
    svc = services.start_redis(tmp_path)
    try:
        assert svc.url == f"redis://127.0.0.1:{svc.port}/0"
        import redis

        r = redis.Redis.from_url(svc.url)
        r.set("k", "v")
        assert r.get("k") == b"v"
        assert os.getpgid(svc.pid) == svc.pid  # own process group
    finally:
        code = svc.stop()
    assert code is not None and not svc.alive()
    services.wait_until(lambda: _group_gone(svc.pid), 10, 0.1, "redis group to be gone")
    svc.stop()  # idempotent


def test_service_failure_carries_log_tail(tmp_path):
    svc = services._spawn("boom", ["sh", "-c", "echo some-diagnostic-line; exit 3"], tmp_path / "boom.log")
    svc.proc.wait(timeout=10)
    with pytest.raises(services.ServiceError, match="some-diagnostic-line"):
        services.wait_http("http://127.0.0.1:1/health", timeout=5, service=svc)
    assert svc.stop() == 3


def test_stop_kills_the_whole_group(tmp_path):
    # a leader that ignores SIGTERM and has a child: stop() must still end both
    svc = services._spawn("stubborn", ["sh", "-c", "trap '' TERM; sleep 300 & wait"], tmp_path / "s.log")
    try:
        services.wait_until(lambda: len(os.popen(f"pgrep -g {svc.pid}").read().split()) >= 2, 10, 0.1,
                            "child to start")
    finally:
        svc.stop(timeout=1)
    assert svc.proc.returncode == -signal.SIGKILL
    services.wait_until(lambda: _group_gone(svc.pid), 10, 0.1, "orphaned child to be reaped")


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # zombies still count until init reaps them
    except ProcessLookupError:
        return True
    return False


# --------------------------------------------------------------------------------------------- Label Studio
@pytest.mark.labelstudio
def test_label_studio_api_roundtrip(label_studio, ls_client, shared_data):
    c = ls_client
    assert label_studio.meta["boot_seconds"] > 0
    assert c.whoami()["email"] == services.LS_USERNAME

    with pytest.raises(LSAPIError) as ei:
        c.post("/api/projects", json={"title": "ab", "label_config": CLASSIFICATION_CONFIG})
    assert ei.value.status_code == 400

    proj = c.create_project("harness classification", CLASSIFICATION_CONFIG)
    pid = proj["id"]
    assert proj["sampling"] == "Uncertainty sampling" and proj["model_version"] == ""

    tasks, labels = agnews_tasks(6, seed=0)
    ids = c.import_tasks(pid, tasks)
    assert len(ids) == 6
    listed = c.list_tasks(pid, page_size=4)  # two pages
    assert [t["id"] for t in listed] == ids
    assert [t["data"]["text"] for t in listed] == [t["data"]["text"] for t in tasks]
    assert all(t["annotations"] == [] and t["predictions"] == [] and t["is_labeled"] is False for t in listed)

    ann = c.create_annotation(ids[0], choices_result(labels[0]))
    assert ann["task"] == ids[0] and ann["result"][0]["value"]["choices"] == [labels[0]]
    back = c.get_task(ids[0])
    assert back["is_labeled"] is True
    assert back["annotations"][0]["result"] == choices_result(labels[0])
    assert [a["id"] for a in c.list_annotations(ids[0])] == [ann["id"]]

    # static predictions; PATCH model_version only accepts an existing prediction version or ML backend title
    scores = {ids[1]: 0.9, ids[2]: 0.2, ids[3]: 0.5}
    for tid, sc in scores.items():
        c.create_prediction(tid, choices_result("World"), score=sc, model_version="static-1")
    preds = c.list_predictions(pid)
    assert sorted((p["task"], p["model_version"], p["score"]) for p in preds) == \
        sorted((t, "static-1", s) for t, s in scores.items())
    assert [p["task"] for p in c.list_predictions(task=ids[2])] == [ids[2]]
    with pytest.raises(LSAPIError) as ei:
        c.patch_project(pid, model_version="no-such-version")
    assert ei.value.status_code == 400 and "Model version" in ei.value.response.text
    assert c.patch_project(pid, model_version="static-1")["model_version"] == "static-1"

    # uncertainty sampling: lowest score among unlabeled tasks with a current-version prediction; then locked
    nxt = c.next_task(pid)
    assert nxt["id"] == ids[2], nxt.get("queue")
    assert [p["score"] for p in nxt["predictions"]] == [0.2]
    assert c.next_task(pid)["id"] == ids[2]  # the lock: same task again
    c.create_annotation(ids[2], choices_result(labels[2]))
    assert c.next_task(pid)["id"] == ids[3]  # labeling releases it; next lowest (0.5) comes up


@pytest.mark.labelstudio
def test_label_studio_ml_backend_protocol(label_studio, ls_client, shared_data):
    """What LS sends a connected backend: /health, /setup, webhooks, START_TRAINING, batched /predict."""
    c = ls_client
    proj = c.create_project("harness ml protocol", CLASSIFICATION_CONFIG)
    pid = proj["id"]
    tasks, labels = agnews_tasks(5, seed=1)
    ids = c.import_tasks(pid, tasks)
    with FakeMLBackend(version="fake-v1") as fake:
        ml = c.connect_ml(pid, fake.url, title="albackend")
        assert ml["state"] == "CO" and ml["model_version"] == "fake-v1"
        assert c.get_project(pid)["model_version"] == "albackend"  # the title, not the /setup version
        hooks = c.list_webhooks(pid)
        assert [(h["url"], h["send_for_all_actions"]) for h in hooks] == [(fake.url + "/webhook", True)]
        setup = fake.seen("POST", "/setup")[-1]["body"]
        assert setup["project"].startswith(f"{pid}.") and setup["schema"] == CLASSIFICATION_CONFIG
        assert setup["access_token"] == label_studio.meta["token"]
        assert fake.seen("GET", "/health")

        c.create_annotation(ids[0], choices_result(labels[0]))
        created = [r["body"] for r in fake.seen("POST", "/webhook") if r["body"]["action"] == "ANNOTATION_CREATED"]
        assert len(created) == 1 and created[0]["project"]["id"] == pid and created[0]["task"]["id"] == ids[0]
        assert created[0]["annotation"]["result"] == choices_result(labels[0])

        assert c.train(ml["id"]) is None
        st = [r["body"] for r in fake.seen("POST", "/webhook") if r["body"]["action"] == "START_TRAINING"]
        assert len(st) == 1 and st[0]["project"]["id"] == pid and "annotation" not in st[0]

        n_predict = len(fake.seen("POST", "/predict"))
        res = c.retrieve_predictions(pid)
        assert res["processed_items"] == 5
        calls = fake.seen("POST", "/predict")[n_predict:]
        assert len(calls) == 1 and sorted(t["id"] for t in calls[0]["body"]["tasks"]) == sorted(ids)
        by_task = {}
        for p in c.list_predictions(pid):
            by_task.setdefault(p["task"], []).append(p)
        assert sorted(by_task) == sorted(ids)
        assert all(len(v) == 1 and v[0]["model_version"] == "fake-v1" and math.isfinite(v[0]["score"])
                   for v in by_task.values())
        # a second retrieve skips tasks that already hold a prediction of the /setup version
        c.retrieve_predictions(pid, task_ids=ids[:2])
        assert len(fake.seen("POST", "/predict")) == n_predict + 1
        assert len(c.list_predictions(pid)) == 5
        assert c.patch_project(pid, model_version="fake-v1")["model_version"] == "fake-v1"


def test_stop_kills_children_in_their_own_group(tmp_path):
    # like an RQ work horse: a forked child that calls setpgrp() leaves the leader's group, not its session
    code = ("import os, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.setpgrp(); print('child', os.getpid(), flush=True); time.sleep(300); sys.exit(0)\n"
            "time.sleep(300)\n")
    svc = services._spawn("horse", [sys.executable, "-c", code], tmp_path / "h.log")
    try:
        services.wait_until(lambda: "child " in svc.log_tail(), 10, 0.1, "child to start")
        child = int(svc.log_tail().split("child ")[1].split()[0])
        assert os.getpgid(child) == child != svc.pid
    finally:
        svc.stop(timeout=2)

    def child_gone():
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return open(f"/proc/{child}/stat").read().split(")")[1].split()[0] == "Z"  # killed, not yet reaped

    services.wait_until(child_gone, 10, 0.1, "setpgrp child to be killed")
