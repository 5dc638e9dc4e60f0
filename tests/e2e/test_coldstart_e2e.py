"""End to end: before any training, a real Label Studio serves the backend's cold-start ranking.

A classification project on default (sequential) sampling, AG News tasks with two exact copies of one text;
connecting the backend (gunicorn + RQ worker + redis) queues a cold-start round that embeds the pool with the
packaged encoder, ranks a sample, places the rest and pushes everything as predictions of ``coldstart-<id>``.
Then: LS's project is on uncertainty sampling with that model_version, every task holds exactly one non-empty
ranking of scores (non-constant), the copies are never both in the top, /next serves the lowest score, and the
backend's /predict answers the same scores. Tasks imported later get theirs from a TASKS_CREATED round. Labels +
Start Training then replace the cold start with the model's ranking and delete the cold-start predictions.
"""
from __future__ import annotations

import json
import math

import pytest
import requests

from tests.support import services
from tests.support.datasets import CLASSIFICATION_CONFIG, agnews_tasks, choices_result

pytestmark = [pytest.mark.labelstudio, pytest.mark.redis]

N_TASKS = 30
TOP = 8
TIMEOUT = 300.0


@pytest.fixture(scope="module")
def backend(redis_server, label_studio, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("coldstart-backend")
    env = {
        "MODEL_DIR": str(root / "models"), "REDIS_URL": redis_server.url, "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.meta["token"], "ACQUISITION_MODEL": "splade-tiny",
        "COLD_START": "true", "COLD_START_SAMPLE": "20",  # 20 ranked, the rest placed in chunks
        "NEAR_DUPLICATE_TOP": str(TOP), "PUBLISH_FIRST_CHUNK": "4", "PUBLISH_CHUNK": "6", "PUSH_BATCH": "4",
        "TRAIN_EPOCHS": "1", "TRAIN_MIN_STEPS": "10", "KEEP_PREDICTION_VERSIONS": "0", "RETRAIN_EVERY": "1000",
        "SEED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    stack = services.start_backend(env, root / "logs", workers=1, threads=4)
    yield stack
    stack.stop()


def status(backend, pid: int) -> dict:
    r = requests.get(f"{backend.url}/projects/{pid}/status", timeout=10)
    assert r.status_code == 200, r.text[:500]
    return r.json()


def wait_cold_start(backend, pid: int, at_least: int) -> dict:
    """The project's cold-start state once a round finished with ``at_least`` embedded tasks in total."""
    def done():
        backend.check_alive()
        cs = status(backend, pid).get("cold_start") or {}
        if cs.get("state") == "failed":
            pytest.fail(f"cold start failed: {cs.get('reason')!r}\n{backend.logs(4000)}")
        return cs if cs.get("state") == "finished" and cs.get("pool", 0) >= at_least else None

    return services.wait_until(done, TIMEOUT, 0.5, "cold start finished",
                               on_timeout=lambda: json.dumps(status(backend, pid), default=str)[:3000]
                               + backend.logs(4000))


def versioned(ls, pid: int, version: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for p in ls.list_predictions(pid):
        if p["model_version"] == version:
            out.setdefault(p["task"], []).append(p)
    return out


def test_cold_start_ranking_is_served_before_any_training(backend, ls_client):
    ls = ls_client
    tasks, labels = agnews_tasks(N_TASKS, seed=21)
    tasks += [{"data": dict(tasks[0]["data"])}, {"data": dict(tasks[0]["data"])}]  # two exact copies
    labels += [labels[0], labels[0]]
    project = ls.create_project("cold start e2e", CLASSIFICATION_CONFIG, sampling="Sequential sampling")
    pid = project["id"]
    ids = ls.import_tasks(pid, tasks)
    copies = {ids[0], ids[-2], ids[-1]}
    version = f"coldstart-{pid}"

    ml = ls.connect_ml(pid, backend.url, title="albackend")
    assert ml["state"] == "CO", ml
    cs = wait_cold_start(backend, pid, at_least=len(ids))
    print(f"[e2e cold start] {json.dumps({k: cs.get(k) for k in ('embedded', 'seconds', 'current_after_s')})}")
    assert cs["version"] == version and cs["encoder"] == "splade-tiny", cs
    assert cs["embedded"] == len(ids) and cs["predictions_pushed"] == len(ids), cs
    assert cs["near_duplicates_demoted"] >= 0 and cs["sampling_set"] is True, cs
    info = ls.get_project(pid)
    assert info["model_version"] == version and info["sampling"] == "Uncertainty sampling", info

    pushed = versioned(ls, pid, version)
    assert sorted(pushed) == sorted(ids) and all(len(p) == 1 for p in pushed.values()), \
        {t: len(p) for t, p in pushed.items()}
    scores = {t: float(p[0]["score"]) for t, p in pushed.items()}
    assert all(p[0]["result"] == [] for p in pushed.values())
    assert len(set(scores.values())) > len(ids) // 2, sorted(scores.values())  # a ranking, not a constant
    top = sorted(ids, key=lambda t: scores[t])[:TOP]
    assert len(copies & set(top)) <= 1, (copies, top, scores)  # one text is labeled once in the first batch

    nxt = ls.next_task(pid)
    assert nxt is not None and math.isclose(scores[nxt["id"]], min(scores.values()), abs_tol=1e-9), nxt

    # /setup reports the cold-start version, and /predict answers with the same scores (Retrieve predictions
    # finds nothing to add: every task already holds a prediction of the /setup version)
    all_tasks = ls.list_tasks(pid)
    r = requests.post(f"{backend.url}/predict", json={"tasks": all_tasks, "project": pid}, timeout=60)
    answered = r.json()["results"]
    assert {x["model_version"] for x in answered} == {version}
    by_id = {t["id"]: x for t, x in zip(all_tasks, answered)}
    assert all(math.isclose(by_id[t]["score"], scores[t], abs_tol=1e-9) for t in ids)
    ls.retrieve_predictions(pid)
    assert all(len(p) == 1 for p in versioned(ls, pid, version).values())

    # tasks imported later: TASKS_CREATED queues a round that places them into the ranking
    more, more_labels = agnews_tasks(4, seed=99)
    new_ids = ls.import_tasks(pid, more)
    cs = wait_cold_start(backend, pid, at_least=len(ids) + len(new_ids))
    assert cs["new"] == len(new_ids) and cs["predictions_pushed"] == len(new_ids), cs
    pushed = versioned(ls, pid, version)
    assert set(new_ids) <= set(pushed) and all(len(p) == 1 for p in pushed.values())

    # the first labels and Start Training: the model's ranking replaces the cold start, whose predictions go
    gold = dict(zip(ids + new_ids, labels + more_labels))
    seed = sorted(ids, key=lambda t: scores[t])[:8]
    for tid in seed:
        ls.create_annotation(tid, choices_result(gold[tid]))
    if len({gold[t] for t in seed}) < 2:
        extra = next(t for t in ids if gold[t] != gold[seed[0]])
        ls.create_annotation(extra, choices_result(gold[extra]))
    ls.train(ml["id"])

    def trained():
        backend.check_alive()
        st = status(backend, pid)
        failed = [j for j in st["jobs"] if j["state"] == "failed"]
        assert not failed, failed
        lt = st.get("last_training")
        return st if lt and ls.get_project(pid)["model_version"] == lt["model_version"] else None

    st = services.wait_until(trained, TIMEOUT, 1.0, "first model published", on_timeout=lambda: backend.logs(4000))
    lt = st["last_training"]
    assert lt["model_version"].startswith(f"al-{pid}-it0-"), lt
    assert version in (lt["pruned_versions"] or {}), lt
    assert not versioned(ls, pid, version), "cold-start predictions remain after the first model"
    model_scores = {t: float(p[0]["score"]) for t, p in versioned(ls, pid, lt["model_version"]).items()}
    model_top = sorted(model_scores, key=model_scores.get)[:TOP]
    assert len((copies - set(seed)) & set(model_top)) <= 1, (copies, model_top)  # also in the model's ranking
    assert "near_duplicates_demoted" in lt, lt
