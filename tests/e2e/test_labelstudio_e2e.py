"""End to end: a real Label Studio drives the backend (gunicorn + RQ worker + redis) through two AL iterations.

For a classification project (AG News) and an NER project (CoNLL-2003):

iteration 0 (full pool): import tasks, label a seed set, connect the backend, press "Start Training" over the LS
API, wait for the backend to publish a model version; then LS's project.model_version is that version, every
unlabeled task holds a prediction of it (pushed by the backend itself), "Retrieve predictions" on all tasks leaves
exactly one prediction of it per task, the predictions are well formed, and /next serves the lowest-scored task.

iteration 1 (UPS subsample, UPS_FULL_ITERATIONS=0): label two more tasks while connected (their
ANNOTATION_CREATED webhooks may start training too), press "Start Training", wait until the backend is idle;
then the last training was not a full-pool one, only the UPS subsample got predictions of the new version, the
counts in /projects/<id>/status agree with what LS holds, and /next serves the lowest current-version score.

The seed set is labeled *before* the backend is connected: the backend trains on ANNOTATION_CREATED webhooks as
well as on START_TRAINING, so labeling while connected would start trainings on 1, 2, ... labels and iteration 0
would not be the one the button started.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import requests

from tests.support import services
from tests.support.datasets import (AGNEWS_LABELS, CLASSIFICATION_CONFIG, CONLL_LABELS, NER_CONFIG,
                                    agnews_tasks, choices_result, conll_tasks, spans_result)
from tests.support.lsapi import LSClient

pytestmark = [pytest.mark.labelstudio, pytest.mark.redis]

N_TASKS = 36
N_SEED = 8
TRAIN_TIMEOUT = 300.0
JOB_STATES = {"queued", "running", "finished", "failed"}


@pytest.fixture(scope="module")
def backend(redis_server, label_studio, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-backend")
    env = {
        "MODEL_DIR": str(root / "models"),
        "REDIS_URL": redis_server.url,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.meta["token"],
        "ACQUISITION_MODEL": "splade-tiny",
        "TRAIN_EPOCHS": "2",
        "TRAIN_MIN_STEPS": "30",
        "UPS_ENABLED": "true",
        "UPS_GAMMA": "0.1",
        "UPS_T": "0.01",
        "UPS_FULL_ITERATIONS": "0",
        "PUBLISH_FIRST_CHUNK": "5",  # several chunks even on a small pool: progressive publish is exercised
        "PUBLISH_CHUNK": "10",
        "PUSH_BATCH": "4",
        "KEEP_PREDICTION_VERSIONS": "0",
        "RETRAIN_EVERY": "10",
        "COLD_START": "false",  # iteration 0 is the first sync and version here; tests/e2e/test_coldstart_e2e.py
        "SEED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    stack = services.start_backend(env, root / "logs", workers=1, threads=4)
    yield stack
    stack.stop()


# --------------------------------------------------------------------------------------------- helpers
class Ctx:
    """One project's run: LS client, backend URL, diagnostics."""

    def __init__(self, ls: LSClient, backend, project: int, kind: str, gold: dict[int, object]):
        self.ls, self.backend, self.project, self.kind, self.gold = ls, backend, project, kind, gold
        self.history: list[dict] = []

    def status(self) -> dict:
        r = requests.get(f"{self.backend.url}/projects/{self.project}/status", timeout=10)
        assert r.status_code == 200, f"status: HTTP {r.status_code} {r.text[:500]}"
        st = r.json()
        self.history.append(st)
        return st

    def diag(self) -> str:
        last = json.dumps(self.history[-1], indent=1, default=str)[:4000] if self.history else "no status yet"
        return f"\nlast status: {last}\n{self.backend.logs(5000)}"

    def annotate(self, task_id: int, text: str) -> None:
        gold = self.gold[task_id]
        result = choices_result(gold) if self.kind == "classification" else spans_result(text, gold)
        self.ls.create_annotation(task_id, result)

    def wait_idle(self, known_jobs: set, min_iteration: int) -> dict:
        """Wait until the backend has no queued/running job for the project, at least one job started after
        ``known_jobs`` finished, the last training reached ``min_iteration`` and LS shows its version."""
        t0 = time.monotonic()

        def done():
            self.backend.check_alive()
            st = self.status()
            jobs = st.get("jobs") or []
            new = [j for j in jobs if j["id"] not in known_jobs]
            failed = [j for j in new if j.get("state") == "failed"]
            if failed:
                pytest.fail(f"training job failed: {failed[0].get('reason')!r}{self.diag()}")
            if any(j.get("state") in ("queued", "running") for j in jobs):
                return None
            lt = st.get("last_training")
            if not lt or lt.get("iteration") is None or lt["iteration"] < min_iteration:
                return None
            if not any(j.get("state") == "finished" for j in new):
                return None
            if self.ls.get_project(self.project)["model_version"] != lt["model_version"]:
                return None
            return st

        st = services.wait_until(done, TRAIN_TIMEOUT, 1.0, f"training iteration >= {min_iteration}",
                                 on_timeout=self.diag)
        print(f"[e2e {self.kind}] iteration {st['last_training']['iteration']} idle after "
              f"{time.monotonic() - t0:.1f} s: {json.dumps(st['last_training'], default=str)}")
        return st

    def predictions_by_task(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        for p in self.ls.list_predictions(self.project):
            out.setdefault(p["task"], []).append(p)
        return out


def _versioned(preds: dict[int, list[dict]], version: str) -> dict[int, list[dict]]:
    return {t: [p for p in ps if p["model_version"] == version] for t, ps in preds.items()
            if any(p["model_version"] == version for p in ps)}


def _check_score(p: dict) -> float:
    s = p.get("score")
    assert isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s), p
    return float(s)


def _check_result(kind: str, text: str, result: list[dict]) -> None:
    assert isinstance(result, list), result
    if kind == "classification":
        assert len(result) == 1, result
        r = result[0]
        assert (r["from_name"], r["to_name"], r["type"]) == ("label", "text", "choices"), r
        assert len(r["value"]["choices"]) == 1 and r["value"]["choices"][0] in AGNEWS_LABELS, r
        return
    for r in result:  # NER: any number of regions, each a valid span of the task text
        assert (r["from_name"], r["to_name"], r["type"]) == ("label", "text", "labels"), r
        v = r["value"]
        s, e = v["start"], v["end"]
        assert isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(text), (r, len(text))
        assert v["text"] == text[s:e], (r, text)
        assert v["labels"] and set(v["labels"]) <= set(CONLL_LABELS), r


def _build(kind: str):
    if kind == "classification":
        tasks, labels = agnews_tasks(N_TASKS, seed=11)  # balanced: the seed set holds all four classes
        return CLASSIFICATION_CONFIG, tasks, labels
    tasks, spans = conll_tasks(N_TASKS, seed=11, max_tokens=30)
    return NER_CONFIG, tasks, spans


# --------------------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("kind", ["classification", "ner"])
def test_two_active_learning_iterations(kind, backend, label_studio, ls_client):
    ls = ls_client
    config, tasks, gold_list = _build(kind)
    project = ls.create_project(f"e2e {kind}", config, sampling="Uncertainty sampling")
    pid = project["id"]
    ids = ls.import_tasks(pid, tasks)
    text = {tid: t["data"]["text"] for tid, t in zip(ids, tasks)}
    ctx = Ctx(ls, backend, pid, kind, dict(zip(ids, gold_list)))

    # ---- seed set (before connecting; see the module docstring)
    seed = ids[:N_SEED]
    for tid in seed:
        ctx.annotate(tid, text[tid])
    if kind == "classification":
        assert len({ctx.gold[t] for t in seed}) >= 2
    labeled = set(seed)

    ml = ls.connect_ml(pid, backend.url, title="albackend")
    assert ml["state"] == "CO", ml
    assert any(h["url"] == backend.url + "/webhook" for h in ls.list_webhooks(pid))
    known: set = set()  # a new project: every job the backend reports from now on is ours

    # ---- iteration 0: Start Training -> full pool rescored and pushed by the backend
    ls.train(ml["id"])
    st = ctx.wait_idle(known, min_iteration=0)
    lt = st["last_training"]
    v0 = lt["model_version"]
    unlabeled = [t for t in ids if t not in labeled]
    assert isinstance(v0, str) and v0, lt
    assert lt["iteration"] == 0, f"the Start Training job should be iteration 0{ctx.diag()}"
    assert st["model_version"] == v0 and str(st["project"]) == str(pid), st
    assert ls.get_project(pid)["model_version"] == v0
    assert all(j["state"] in JOB_STATES for j in st["jobs"]), st["jobs"]
    new_jobs = [j for j in st["jobs"] if j["id"] not in known]
    assert [j["state"] for j in new_jobs] == ["finished"], new_jobs
    assert isinstance(new_jobs[0]["duration_s"], (int, float)) and new_jobs[0]["duration_s"] > 0, new_jobs
    # the job ran on the RQ worker, not in the web process
    assert new_jobs[0]["id"] in backend.worker.log_tail(200_000), backend.worker.log_tail()

    assert lt["full_pool"] is True, lt
    assert lt["pool_size"] == len(unlabeled), (lt, len(unlabeled))
    assert lt["scored"] == len(unlabeled) and lt["skipped_by_ups"] == 0, lt

    pushed = _versioned(ctx.predictions_by_task(), v0)
    assert set(unlabeled) <= set(pushed), f"unlabeled tasks without a {v0} prediction: " \
                                          f"{sorted(set(unlabeled) - set(pushed))}"
    assert all(len(pushed[t]) == 1 for t in unlabeled), {t: len(pushed[t]) for t in unlabeled}
    assert lt["predictions_pushed"] == len(unlabeled), lt
    # progressive publish: the version became current after the first chunk, before the whole pool was pushed
    assert 0 < lt["current_after_s"] <= lt["job_seconds"]["publish"], lt
    # the first sync reads the whole project, without predictions
    assert lt["sync"]["mode"] == "full" and lt["sync"]["reason"] == "first sync", lt["sync"]
    assert lt["sync"]["tasks"] == N_TASKS and lt["sync"]["annotations"] == N_SEED, lt["sync"]
    first_fetch = lt["sync"]["bytes_fetched"]

    # "Retrieve predictions" on every task: /setup must report v0, /predict fills only the labeled tasks
    res = ls.retrieve_predictions(pid)
    assert res["processed_items"] == N_TASKS, res
    preds = ctx.predictions_by_task()
    cur = _versioned(preds, v0)
    assert sorted(cur) == sorted(ids), f"tasks without a {v0} prediction: {sorted(set(ids) - set(cur))}"
    for tid in ids:
        assert len(cur[tid]) == 1, f"task {tid} has {len(cur[tid])} predictions of {v0}: duplicates"
        _check_score(cur[tid][0])
        _check_result(kind, text[tid], cur[tid][0]["result"])
    assert all(len(ps) == 1 for ps in preds.values()), "retrieve must not add predictions of another version"

    # uncertainty sampling: /next serves the lowest v0 score among unlabeled tasks
    scores0 = {t: float(cur[t][0]["score"]) for t in unlabeled}
    nxt = ls.next_task(pid)
    assert nxt is not None and nxt["id"] in scores0, nxt
    assert math.isclose(scores0[nxt["id"]], min(scores0.values()), abs_tol=1e-9), \
        (nxt["id"], scores0[nxt["id"]], min(scores0.values()), nxt.get("queue"))

    # ---- iteration 1: label the served task and one more while connected, then Start Training
    known = {j["id"] for j in st["jobs"]}
    more = [nxt["id"], next(t for t in unlabeled if t != nxt["id"])]
    for tid in more:
        ctx.annotate(tid, text[tid])
    labeled |= set(more)
    ls.train(ml["id"])
    st = ctx.wait_idle(known, min_iteration=1)
    lt = st["last_training"]
    v1 = lt["model_version"]
    unlabeled = [t for t in ids if t not in labeled]
    assert v1 != v0 and st["model_version"] == v1 and ls.get_project(pid)["model_version"] == v1, (v0, st)
    assert all(j["state"] == "finished" for j in st["jobs"] if j["id"] not in known), st["jobs"]

    assert lt["full_pool"] is False, lt
    assert lt["pool_size"] == len(unlabeled), (lt, len(unlabeled))
    # incremental sync: only the two tasks whose ANNOTATION_CREATED webhooks were journalled are fetched
    assert lt["sync"]["mode"] == "incremental", lt["sync"]
    assert (lt["sync"]["new_tasks"], lt["sync"]["changed_tasks"]) == (0, 2), lt["sync"]
    assert lt["sync"]["annotations"] == N_SEED + 2 and lt["sync"]["bytes_fetched"] < first_fetch / 2, lt["sync"]
    # the previous version's predictions are deleted from LS (KEEP_PREDICTION_VERSIONS=0)
    assert list(lt["pruned_versions"]) == [v0] and lt["pruned_versions"][v0] > 0, lt["pruned_versions"]
    assert not _versioned(ctx.predictions_by_task(), v0), "predictions of the superseded version remain"
    assert 0 < lt["scored"] < lt["pool_size"], lt
    assert lt["skipped_by_ups"] == lt["pool_size"] - lt["scored"], lt

    preds = ctx.predictions_by_task()
    cur = _versioned(preds, v1)
    rescored = [t for t in unlabeled if t in cur]
    assert len(rescored) == lt["scored"], (len(rescored), lt)
    assert lt["predictions_pushed"] == lt["scored"], lt
    assert not set(cur) - set(ids), "predictions of v1 on tasks outside the project"
    for tid in rescored:
        assert len(cur[tid]) == 1, f"task {tid} has {len(cur[tid])} predictions of {v1}"
        _check_score(cur[tid][0])
        _check_result(kind, text[tid], cur[tid][0]["result"])
    if lt["iteration"] == 1:
        # UPS keeps the previous iteration's most uncertain task with probability 1 (rank 0 <= gamma)
        most_uncertain = min(unlabeled, key=lambda t: scores0[t])
        assert most_uncertain in rescored, (most_uncertain, scores0[most_uncertain], rescored)

    scores1 = {t: float(cur[t][0]["score"]) for t in rescored}
    nxt = ls.next_task(pid)
    assert nxt is not None and nxt["id"] in scores1, (nxt and nxt["id"], nxt and nxt.get("queue"), rescored)
    assert math.isclose(scores1[nxt["id"]], min(scores1.values()), abs_tol=1e-9), \
        (nxt["id"], scores1[nxt["id"]], min(scores1.values()))
