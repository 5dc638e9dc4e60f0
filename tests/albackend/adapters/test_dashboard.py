"""GET /projects/<id> through Flask's test client, over a project built by the real pieces: a tiny model trained
and published, the pool rescored into the prediction store, annotation webhooks through /webhook, the stop set
scored, job records as the training job writes them."""
from __future__ import annotations

import base64
import dataclasses
import re
import time

import pytest

from albackend.adapters import dashplots

from albackend.services import jobs
from albackend.adapters.app import create_app
from albackend.services.insights import project_figures, summary_line
from albackend.services.predstore import PredictionStore
from albackend.services.rescoring import rescore_pool, unlabeled_pool
from albackend.services.stopset import score_stop_set
from albackend.services.store import ModelStore
from albackend.services.training import train_and_publish
from model import ActiveLearningModel
from tests.albackend.services.test_quality import V0, event, predict, region
from tests.albackend.services.test_training import CLS, labeled_tasks, pool_tasks
from tests.support.published import CLS_CONFIG, NER_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ANNOTATED = list(range(1000, 1008))


@pytest.fixture(scope="module")
def settings(tiny, tmp_path_factory):
    from albackend.settings import Settings

    return dataclasses.replace(
        Settings.from_env(), model_dir=tmp_path_factory.mktemp("dash") / "models", acquisition_model=tiny,
        redis_url="", label_studio_url="", label_studio_api_key="", train_epochs=1, train_min_steps=4,
        train_batch_size=8, train_lr=1e-3, max_length=32, max_text_chars=1000, seed=11, device="cpu",
        stop_sample_size=20, quality_window=5, basic_auth_user="", basic_auth_pass="", log_level="WARNING")


def webhook(task: dict, label: str) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": CLS_CONFIG},
            "task": {"id": task["id"], "data": task["data"], "project": 1},
            "annotation": {"id": 5000 + task["id"], "task": task["id"], "was_cancelled": False,
                           "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 2)),
                           "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                       "value": {"choices": [label]}}]}}


@pytest.fixture(scope="module")
def project(settings):
    """Project 1 after one retrain and eight annotations of tasks that carried its predictions."""
    store = ModelStore(settings.model_dir)
    tasks = labeled_tasks() + pool_tasks(40)
    stats: dict = {"seconds": {}}
    model, info = train_and_publish(settings, store, "1", CLS, tasks, stats)
    _, rescore = rescore_pool(model, unlabeled_pool(tasks, model, 1000), project_dir=store.project_dir("1"),
                              version=info["model_version"], iteration=0, strategy=info["strategy"],
                              settings=settings)
    stop = score_stop_set(settings, store, "1", model, tasks, info["model_version"], 0)
    stats.update(model_version=info["model_version"], iteration=0, rescore=rescore, stop_set=stop)
    stats["seconds"].update(sync=0.2, publish=1.5, stop_set=stop["seconds"])
    done = {**jobs.queued_record("train-1-a", "1", "START_TRAINING", "in-process"), "state": "finished",
            "started_at": time.time() - 5, "duration_s": 4.2, "stats": stats}
    store.write_job("1", done)
    time.sleep(0.01)  # the running job is the newer record
    running = {**jobs.queued_record("train-1-b", "1", "ANNOTATION_CREATED", "in-process"), "state": "running",
               "started_at": time.time(), "progress": {"phase": "publishing", "scored": 5, "to_score": 20}}
    store.write_job("1", running)
    (store.project_dir("1") / "jobs" / "train-1-b.beat").touch()
    client = create_app(settings, model_class=ActiveLearningModel).test_client()
    gold = {t["id"]: ("Sports" if i % 3 else "Politics") for i, t in enumerate(pool_tasks(40)) if t["id"] in ANNOTATED}
    for t in pool_tasks(40):
        if t["id"] in gold:
            assert client.post("/webhook", json=webhook(t, gold[t["id"]])).status_code == 200
    return store, client, info, gold


def test_the_page_shows_the_agreement_of_the_version(project, settings):
    store, client, info, gold = project
    shown = PredictionStore(store.project_dir("1") / "predictions.sqlite").get(ANNOTATED)
    agree = [shown[t][2][0]["value"]["choices"] == [gold[t]] for t in ANNOTATED]
    resp = client.get("/projects/1")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert html.count("<svg") == 6  # stopping, prequential, labels, pool, ups, job stages
    assert not re.search(r"<script|<link|<img|src=|href=.http", html)  # no script, no external asset
    row = re.search(rf"<tr><td class=l>{info['model_version']}</td><td>0</td><td>8</td><td>([0-9.]+)</td>", html)
    assert row and float(row.group(1)) == pytest.approx(sum(agree) / 8, abs=1e-3)
    assert f"<b>{sum(agree[-5:]) / 5:.2f}</b> over the last 5 annotations" in html  # QUALITY_WINDOW=5
    assert 'http-equiv="refresh"' in html and "<progress value='5' max='20'>" in html  # a job is running
    figures = project_figures(settings, store, "1")
    assert summary_line(figures) in html.replace("&#x27;", "'")
    assert summary_line(figures).startswith(f"it 0 · agreement {sum(agree[-5:]) / 5:.2f} (n=5) · stop: ")


def test_stopping_figures_come_from_the_stop_set(project, settings):
    store, client, info, _ = project
    html = client.get("/projects/1").get_data(as_text=True)
    assert "stabilizing predictions" in html and "needs 3 kappas (4 versions), has 0" in html
    assert re.search(r"<b id=decision>(continue|consider stopping|stop)</b>", html)


def test_unknown_and_bad_projects(project):
    _, client, _, _ = project
    assert client.get("/projects/999").status_code == 404
    assert client.get("/projects/abc").status_code == 400
    assert client.get("/projects/1.abc").status_code == 400


def test_the_page_is_behind_basic_auth(project, settings):
    guarded = dataclasses.replace(settings, basic_auth_user="u", basic_auth_pass="p")
    client = create_app(guarded, model_class=ActiveLearningModel).test_client()
    assert client.get("/projects/1").status_code == 401
    ok = client.get("/projects/1", headers={"Authorization": "Basic " + base64.b64encode(b"u:p").decode()})
    assert ok.status_code == 200


def test_a_cached_page_is_fast(project):
    _, client, _, _ = project
    client.get("/projects/1")
    t0 = time.perf_counter()
    for _ in range(5):
        assert client.get("/projects/1").status_code == 200
    per_page = (time.perf_counter() - t0) / 5
    print(f"dashboard page, plots cached: {per_page * 1000:.0f} ms")
    assert per_page < 0.3


def test_the_same_figures_in_metrics(project, settings):
    store, client, info, gold = project
    text = client.get("/metrics").get_data(as_text=True)
    figures = project_figures(settings, store, "1")
    window = figures["quality"]["window"]
    assert f'albackend_prequential_agreement{{metric="accuracy",project="1"}} {window["accuracy"]}' in text
    assert 'albackend_prequential_annotations{project="1"} 8.0' in text
    assert 'albackend_prequential_version_agreement{iteration="0",project="1"}' in text
    assert 'albackend_iteration{project="1"} 0.0' in text
    assert 'albackend_stopping_decision{project="1"} 0.0' in text
    assert 'albackend_stopping_criterion_met{criterion="stabilizing predictions",project="1"} 0.0' in text
    assert re.search(r'albackend_stopping_uncertainty\{project="1"\} [0-9.]+', text)
    assert 'albackend_pool_tasks{project="1",scored_by="current"} 40.0' in text
    assert 'albackend_ups_last_round{figure="scored",project="1"} 40.0' in text
    assert 'albackend_gold_labels{label="Sports",project="1"} 6.0' in text
    assert "albackend_http_requests_total" in text  # the counted metrics are still there


def test_a_tagging_project_shows_span_scores(settings, tmp_path):
    local = dataclasses.replace(settings, model_dir=tmp_path / "m")
    store = ModelStore(local.model_dir)
    predict(store, 3, V0, [region(0, 3, "PER"), region(15, 20, "LOC")])
    client = create_app(local, model_class=ActiveLearningModel).test_client()
    payload = {**event(3, [region(0, 3, "PER")], config=NER_CONFIG, text="Bob met Ann in Paris"),
               "project": {"id": 5, "label_config": NER_CONFIG}}
    assert client.post("/webhook", json=payload).status_code == 200
    html = client.get("/projects/5").get_data(as_text=True)
    assert "<th>f1</th><th>precision</th><th>recall</th>" in html  # tp 1, fp 1, fn 0
    assert re.search(rf"<td class=l>{V0}</td><td>0</td><td>1</td><td>0.667</td><td>0.500</td><td>1.000</td>", html)
    assert "span F1 0.67 (n=1)" in html and html.count("<svg") == 1  # no model, stop set or job yet


def test_plots_are_shared_through_the_project_directory(tmp_path):
    plots = dashplots.Plots(tmp_path)
    first = plots.svg("labels", {"a": 1, "b": 2}, dashplots.labels)
    assert first.startswith("<svg") and [p.name[:7] for p in tmp_path.iterdir()] == ["labels-"]
    dashplots._CACHE.clear()  # another process: only the file is there
    (only,) = tmp_path.iterdir()
    only.write_text(first.replace("<svg", "<svg data-from-file", 1))
    assert plots.svg("labels", {"a": 1, "b": 2}, dashplots.labels).startswith("<svg data-from-file")
    plots.svg("labels", {"a": 1, "b": 3}, dashplots.labels)  # new data: rendered, the old file replaced
    assert len(list(tmp_path.glob("labels-*.svg"))) == 1 and not only.exists()
