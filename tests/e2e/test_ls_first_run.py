"""A Label Studio team's first run, against a real Label Studio 1.23.2, with data generated in the repository (no
``../shared``): these are the end-to-end tests a fresh clone's ``make test`` runs.

- A project created with LS's default sampling ("Sequential sampling": the Community UI cannot choose another),
  the backend connected, Start Training: the backend switches the project to "Uncertainty sampling" and /next
  serves the lowest score of the new model version.
- A task whose text is a file LS serves (uploaded, ``/data/upload/...``) gets a prediction when opened; an
  unreadable link gets none, and nothing fails.
- A project with one class annotated: opening a task stores no prediction (no ``untrained-*``), Start Training
  fails with its reason, and LS's own API shows that reason in the backend's ML record description.
- A Label Studio started without ``--enable-legacy-api-token`` (a new 1.23 install), driven by a personal access
  token: connect, train, predictions pushed, model_version set, and a PLASM run with ``--project`` and that token.

The backend runs its jobs in-process (no Redis): the shortest setup a team starts with.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.plasm.plasm_data import FAST_CLASSICAL_CNN, FAST_TRAIN
from tests.support import services
from tests.support.datasets import CLASSIFICATION_CONFIG, choices_result, news_tasks
from tests.support.lsapi import LSClient
from tests.support.tiny import make_tiny_bert

pytestmark = pytest.mark.labelstudio

REPO = Path(__file__).resolve().parents[2]
N_TASKS = 32
N_SEED = 8
TIMEOUT = 300.0
BACKEND_ENV = {"ACQUISITION_MODEL": "splade-tiny", "TRAIN_EPOCHS": "1", "TRAIN_MIN_STEPS": "20",
               "PUBLISH_FIRST_CHUNK": "8", "PUBLISH_CHUNK": "16", "SEED": "0", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1",
               # these tests follow the retrain and no-model paths: a cold-start round (its own e2e,
               # tests/e2e/test_coldstart_e2e.py) would switch the sampling and store ranked predictions at connect
               "COLD_START": "false"}


def start_stack(root: Path, ls) -> services.BackendStack:
    """gunicorn with the in-process job queue, calling ``ls`` back with its token."""
    env = {**BACKEND_ENV, "MODEL_DIR": str(root / "models"), "LABEL_STUDIO_URL": ls.url,
           "LABEL_STUDIO_API_KEY": ls.meta["token"]}
    return services.start_backend(env, root / "logs", with_worker=False, workers=1, threads=8)


@pytest.fixture(scope="module")
def backend(label_studio, tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("first-run"), label_studio)
    yield stack
    stack.stop()


# --------------------------------------------------------------------------------------------- helpers
def new_project(ls: LSClient, n_tasks: int = N_TASKS, seed: int = 3) -> tuple[int, list[int], dict[int, str]]:
    """A project with LS's default sampling and ``n_tasks`` generated news tasks; (id, task ids, gold labels)."""
    project = ls.create_project(f"first run {uuid.uuid4().hex[:6]}", CLASSIFICATION_CONFIG, sampling=None)
    tasks, labels = news_tasks(n_tasks, seed=seed)
    ids = ls.import_tasks(project["id"], tasks)
    return project["id"], ids, dict(zip(ids, labels))


def wait_job(stack, project: int, timeout: float = TIMEOUT) -> dict:
    """The project's job (it has one) once it is finished or failed."""
    def done():
        stack.check_alive()
        jobs = requests.get(f"{stack.url}/projects/{project}/status", timeout=10).json().get("jobs") or []
        assert len(jobs) <= 1, f"one Start Training, one job: {jobs}"
        return jobs and jobs[0]["state"] in ("finished", "failed") and jobs[0]

    return services.wait_until(done, timeout, 1.0, f"a finished job of project {project}",
                               on_timeout=lambda: stack.logs(6000))


def train_until_current(ls: LSClient, stack, project: int, ml_id: int) -> dict:
    """Start Training, wait for the job; it must finish and its version must become the project's."""
    t0 = time.monotonic()
    ls.train(ml_id)
    job = wait_job(stack, project)
    assert job["state"] == "finished", f"{job.get('reason')}\n{stack.logs(6000)}"
    version = job["stats"]["model_version"]
    services.wait_until(lambda: ls.get_project(project)["model_version"] == version, 60, 0.5,
                        f"project {project} on {version}")
    job["e2e_seconds"] = round(time.monotonic() - t0, 1)
    print(f"\n[first-run] project {project}: Start Training -> {version} current in {job['e2e_seconds']} s")
    return job


def current_scores(ls: LSClient, project: int, version: str, unlabeled: set[int]) -> dict[int, float]:
    return {p["task"]: float(p["score"]) for p in ls.list_predictions(project)
            if p["model_version"] == version and p["task"] in unlabeled}


@pytest.fixture(scope="module")
def trained(label_studio, ls_client, backend):
    """A project on LS's default sampling, seed set labeled, the backend connected and trained once."""
    ls = ls_client
    project, ids, gold = new_project(ls)
    assert ls.get_project(project)["sampling"] == "Sequential sampling"
    for tid in ids[:N_SEED]:
        ls.create_annotation(tid, choices_result(gold[tid]))
    ml = ls.connect_ml(project, backend.url, title="albackend")
    job = train_until_current(ls, backend, project, ml["id"])
    return {"project": project, "ids": ids, "ml": ml, "job": job, "unlabeled": set(ids[N_SEED:])}


# --------------------------------------------------------------------------------------------- tests
def test_default_sampling_becomes_uncertainty_and_next_serves_the_lowest_score(ls_client, trained):
    ls, project, job = ls_client, trained["project"], trained["job"]
    assert ls.get_project(project)["sampling"] == "Uncertainty sampling"
    assert job["stats"]["sampling_set"] is True
    scores = current_scores(ls, project, job["stats"]["model_version"], trained["unlabeled"])
    assert set(scores) == trained["unlabeled"], "every unlabeled task holds a prediction of the new version"
    assert len(set(scores.values())) > 1, "a constant score would leave the order to chance"
    nxt = ls.next_task(project)
    assert nxt is not None and nxt["id"] in scores, nxt
    assert math.isclose(scores[nxt["id"]], min(scores.values()), abs_tol=1e-9), (nxt["id"], nxt.get("queue"))


def test_text_served_by_label_studio_gets_a_prediction(ls_client, backend, trained):
    ls, project = ls_client, trained["project"]
    version = trained["job"]["stats"]["model_version"]
    (uploaded,) = ls.upload_text_files(project, {"match report.txt": "Rovers beat Albion 3-1 in the league cup final."})
    link = ls.get_task(uploaded)["data"]["text"]
    assert link.startswith(f"/data/upload/{project}/"), link
    assert requests.get(ls.url + link, timeout=10).status_code == 401, "LS serves it to authenticated users only"
    (broken,) = ls.import_tasks(project, [{"data": {"text": f"/data/upload/{project}/no-such-file.txt"}}])
    for tid in (uploaded, broken):
        ls.get_task(tid)  # opening a task in the labeling UI: LS asks the backend's /predict for it
    preds = {p["task"]: p for p in ls.list_predictions(project) if p["task"] in (uploaded, broken)}
    assert set(preds) == {uploaded}, f"{preds}\n{backend.logs(6000)}"
    assert preds[uploaded]["model_version"] == version and preds[uploaded]["result"][0]["type"] == "choices"
    assert math.isfinite(preds[uploaded]["score"])
    assert ls.get_task(broken)["data"]["text"].endswith("no-such-file.txt")  # untouched, and asked again later


def test_one_class_annotated_shows_the_reason_in_label_studio_and_stores_no_empty_predictions(ls_client, backend):
    ls = ls_client
    project, ids, gold = new_project(ls, n_tasks=12, seed=5)
    sports = [t for t in ids if gold[t] == "Sports"]
    for tid in sports:
        ls.create_annotation(tid, choices_result("Sports"))
    ml = ls.connect_ml(project, backend.url, title="albackend")
    for tid in ids[:4]:
        ls.get_task(tid)  # opened before any model exists
    assert ls.retrieve_predictions(project)["processed_items"] == len(ids)
    ls.train(ml["id"])
    job = wait_job(backend, project)
    assert job["state"] == "failed"
    assert "only 1 class annotated (Sports)" in job["reason"] and "need at least 2 classes" in job["reason"]
    record = services.wait_until(lambda: (r := ls.get_ml(ml["id"])) and "Training: failed" in r["description"]
                                 and r, 60, 2.0, "the failure in the ML backend description",
                                 on_timeout=lambda: f"{ls.get_ml(ml['id'])}\n{backend.logs(8000)}")
    assert "TrainingSkipped: only 1 class annotated (Sports); need at least 2 classes" in record["description"]
    assert record["description"].endswith("; no model yet")
    assert [r["description"] for r in ls.list_ml(project)] == [record["description"]]  # what the model page reads
    assert ls.list_predictions(project) == [], "no prediction (untrained-* or other) before a model exists"


# --------------------------------------------------------------------------------------------- tokens
@pytest.fixture(scope="module")
def label_studio_pat(tmp_path_factory):
    if not services.have_label_studio():
        pytest.skip(f"Label Studio venv not found: {services.label_studio_bin()}")
    svc = services.start_label_studio(tmp_path_factory.mktemp("ls-pat"), legacy_token=False)
    print(f"\n[label_studio without legacy tokens] {svc.url} ready in {svc.meta['boot_seconds']} s")
    yield svc
    svc.stop(timeout=15)


def test_personal_access_token_end_to_end(label_studio_pat, tmp_path):
    svc = label_studio_pat
    pat = svc.meta["token"]
    assert svc.meta["token_kind"] == "personal access token" and pat.startswith("eyJ")
    legacy = requests.get(f"{svc.url}/api/current-user/whoami", timeout=10,
                          headers={"Authorization": f"Token {services.LS_TOKEN}"})
    assert legacy.status_code == 401, "legacy tokens are off, as on a new 1.23 install"
    ls = LSClient(svc.url, pat)
    stack = start_stack(tmp_path, svc)
    try:
        project, ids, gold = new_project(ls)
        for tid in ids[:N_SEED]:
            ls.create_annotation(tid, choices_result(gold[tid]))
        ml = ls.connect_ml(project, stack.url, title="albackend")
        job = train_until_current(ls, stack, project, ml["id"])
        version = job["stats"]["model_version"]
        scores = current_scores(ls, project, version, set(ids[N_SEED:]))
        assert len(scores) == N_TASKS - N_SEED and job["stats"]["predictions_pushed"] == N_TASKS - N_SEED
        info = ls.get_project(project)
        assert info["model_version"] == version and info["sampling"] == "Uncertainty sampling"
        services.wait_until(lambda: "Training: finished" in ls.get_ml(ml["id"])["description"], 60, 2.0,
                            "the finished job in the ML backend description")  # written after the job record
        logs = stack.logs(200_000)
        assert pat not in logs and pat.split(".")[2] not in logs, "the token must never be logged"
    finally:
        stack.stop()
    run = plasm_run_with_the_token(svc, pat, project, tmp_path)
    assert run["counts"]["gold"] == N_SEED and run["push"]["pushed"] == N_TASKS
    pushed = [p for p in ls.list_predictions(project) if p["model_version"] == run["job_id"]]
    assert {p["task"] for p in pushed} == set(ids)


def plasm_run_with_the_token(svc, pat: str, project: int, tmp_path: Path) -> dict:
    """``python -m plasm run --project ... --ls-token <PAT> --push --sync`` with tiny models; its JSON summary."""
    config = tmp_path / "fast.json"
    config.write_text(json.dumps({"teacher_train": FAST_TRAIN, "successor_train": FAST_TRAIN, "max_length": 32,
                                  "classical": FAST_CLASSICAL_CNN}))
    teacher = make_tiny_bert(tmp_path / "tiny-bert")
    env = services.backend_env({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    for k in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "REDIS_URL", "ACQUISITION_MODEL"):
        env.pop(k, None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "plasm", "run", "--project", str(project), "--ls-url", svc.url,
                           "--ls-token", pat, "--teacher", str(teacher), "--successor", "cnn", "--filter", "none",
                           "--config", str(config), "--model-dir", str(tmp_path / "plasm-models"), "--push",
                           "--sync", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pat not in proc.stdout + proc.stderr
    print(f"\n[first-run] PLASM --project with a personal access token: {time.monotonic() - t0:.1f} s")
    return json.loads(proc.stdout)
