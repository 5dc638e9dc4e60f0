"""`python -m plasm`: clear CLI errors, --sync runs from an export and from a real Label Studio project (missing
project, wrong token, --push), and - with a real Redis and a real RQ worker - enqueued runs for classification and
NER followed with `status` until finished, a timed-out (killed) job reported as failed, a re-run, and `list`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from plasm import cli
from albackend.algorithms.plasm_filters import plan_filters
from tests.plasm.plasm_data import (CLS_CONFIG, FAST_CLASSICAL_CNN, FAST_CLASSICAL_TAGGER, FAST_TRAIN,
                                    ls_export, make_tiny_mpnet, write_export)
from tests.support import services
from tests.support.tiny import make_tiny_bert

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-models")
    return {"bert": str(make_tiny_bert(root / "bert")), "mpnet": str(make_tiny_mpnet(root / "mpnet"))}


@pytest.fixture(scope="module")
def fast_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-config") / "fast.json"
    path.write_text(json.dumps({"teacher_train": FAST_TRAIN, "successor_train": FAST_TRAIN,
                                "tracin_train": {**FAST_TRAIN, "min_steps": 6}, "max_length": 32,
                                "tracin_batch_size": 8}))
    return path


def _env(**extra) -> dict:
    env = services.backend_env({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra})
    for k in ("REDIS_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "ACQUISITION_MODEL"):
        if k not in extra:
            env.pop(k, None)
    return env


def plasm(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plasm", *args], cwd=REPO, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ============================================================================================ CLI errors
def test_cli_errors_are_one_line_exit_2(tmp_path, tiny):
    export, config = write_export(tmp_path, "classification", 10, 5)
    dead = f"redis://127.0.0.1:{services.free_port()}/0"
    cases = [
        (["run", "--export", str(export), "--redis-url", dead], "cannot reach Redis at redis://127.0.0.1"),
        (["run", "--export", str(tmp_path / "missing.json"), "--sync"], "export file not found"),
        (["run", "--export", str(export), "--sync", "--teacher", "no-such-model-xyz", "--model-dir", str(tmp_path)],
         "unknown model 'no-such-model-xyz'"),
        (["status", "plasm-nope", "--model-dir", str(tmp_path)], "no PLASM job 'plasm-nope'"),
    ]
    for args, expected in cases:
        line = _one_line_error(plasm(*args, timeout=120))
        assert expected in line, (args, line)


def test_cli_errors_in_process(tmp_path, capsys, tiny, monkeypatch):
    for var in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "REDIS_URL", "ACQUISITION_MODEL"):
        monkeypatch.delenv(var, raising=False)
    export, config = write_export(tmp_path / "a", "classification", 10, 5)
    alone = tmp_path / "b" / "tasks.json"
    alone.parent.mkdir()
    alone.write_text(export.read_text())
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    one_gold = tmp_path / "c" / "one.json"
    write_export(tmp_path / "c", "classification", 1, 5)
    os.replace(tmp_path / "c" / "classification.json", one_gold)
    os.replace(tmp_path / "c" / "classification.xml", tmp_path / "c" / "label_config.xml")
    cases = [
        (["run", "--export", str(alone), "--sync"], "no label config for"),
        (["run", "--export", str(alone), "--label-config", str(tmp_path / "x.xml"), "--sync"],
         "label config file not found"),
        (["run", "--export", str(bad_json), "--label-config", str(config), "--sync"], "is not valid JSON"),
        (["run", "--export", str(one_gold), "--sync"], "at least 2 usable annotated tasks, found 1"),
        (["run", "--export", str(export), "--sync", "--teacher", tiny["bert"], "--config", str(tmp_path / "no.json")],
         "config file not found"),
        (["run", "--export", str(export), "--sync", "--teacher", tiny["bert"], "--dev-fraction", "1.5"],
         "dev_fraction"),
        (["run", "--export", str(export), "--push", "--sync"], "--push needs a live project"),
        (["run", "--project", "3", "--sync", "--ls-url", "http://127.0.0.1:9"], "no Label Studio token"),
        (["run", "--export", str(export), "--sync", "--teacher", tiny["bert"], "--successor", "hf:nope-model-9",
          "--model-dir", str(tmp_path)], "successor: unknown model 'nope-model-9'"),
        (["run", "--export", str(export), "--sync", "--teacher", tiny["bert"], "--successor", "bilstm"],
         "the BiLSTM successor is a tagger"),
        (["status", "plasm-nope", "--redis-url", f"redis://127.0.0.1:{services.free_port()}/0", "--model-dir",
          str(tmp_path)], "cannot reach Redis"),
        (["run", "--sync"], "exactly one data source"),
    ]
    for args, expected in cases:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err, (args, err)


def _imported(stderr: str) -> set[str]:
    """Module names in a ``python -X importtime`` report."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_help_answers_without_importing_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "plasm", "--help"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "run" in proc.stdout and "distil" in proc.stdout
    assert not {"torch", "transformers"} & _imported(proc.stderr)


@pytest.mark.parametrize("command", [["run", "--successor"], ["run", "--teacher"],
                                     ["distil", "--out", "s", "--teacher"]])
def test_unknown_model_name_fails_before_torch_and_the_source_with_the_hub_allowed(tmp_path, command):
    """HF_HUB_OFFLINE unset: 'foo' is no packaged model, local directory or hub id (owner/name): one line, exit 2,
    before torch is imported, before the data source is read (the export does not exist), without the network."""
    env = _env()
    env.pop("HF_HUB_OFFLINE", None)
    source = ["--export", str(tmp_path / "missing.json"), "--sync"] if command[0] == "run" else ["--text-file", "x"]
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "plasm", *command, "foo", *source], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if not x.startswith("import time:")]
    role = command[-1].lstrip("-")
    assert errors == [f"error: {role}: unknown model 'foo': neither a packaged model (minilm-l6, mpnet, splade-tiny) "
                      "nor a local model directory, or a hub id owner/name"]
    assert not {"torch", "transformers"} & _imported(proc.stderr)


def test_distil_subcommand_is_delegated(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["distil", "--help"])
    assert exc.value.code == 0
    assert "--teacher" in capsys.readouterr().out


# ============================================================================================ --sync runs
def _check_run(run_dir: Path, kind: str) -> dict:
    from transformers import pipeline

    from plasm.successors import load_successor

    assert (run_dir / "COMPLETE").is_file()
    report = json.loads((run_dir / "report.json").read_text())
    c = report["counts"]
    assert c["kept"] + c["dropped"] == c["pseudo"] and c["dropped"] == c["dropped_uncertainty"] + c["dropped_tracin"]
    plan = plan_filters(report["q"], report["config"]["filter"], report["config"]["uncertainty_share"])
    assert report["fractions"]["planned_uncertainty"] == pytest.approx(plan.uncertainty_fraction)
    assert report["fractions"]["planned_tracin"] == pytest.approx(plan.tracin_fraction)
    lines = (run_dir / "pseudo_labels.jsonl").read_text().splitlines()
    assert len(lines) == c["pseudo"]
    task = "text-classification" if kind == "classification" else "token-classification"
    assert isinstance(pipeline(task, model=str(run_dir / "teacher"), device="cpu")("alice flew to paris"), list)
    succ = load_successor(run_dir / "successor", device="cpu")
    assert succ.kind == kind
    return report


def test_sync_run_from_export(tmp_path, tiny, fast_config_file):
    export, _ = write_export(tmp_path / "data", "tagging", 20, 15)
    out = tmp_path / "run"
    proc = plasm("run", "--export", str(export), "--teacher", tiny["bert"], "--successor", "hf:" + tiny["mpnet"],
                 "--filter", "both", "--sync", "--out", str(out), "--config", str(fast_config_file), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["run_dir"] == str(out) and summary["counts"]["gold"] == 20
    assert summary["counts"]["pool"] == 16  # 15 unannotated + 1 with only a cancelled annotation
    assert "teacher" in proc.stderr  # the progress bar names the stages
    _check_run(out, "tagging")
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["progress"] == 1.0 and status["timings"]["teacher"] > 0
    assert (out / "input" / "export.json").is_file()
    # the run dir is complete now: a second run into it is refused
    line = _one_line_error(plasm("run", "--export", str(export), "--teacher", tiny["bert"], "--sync", "--out",
                                 str(out)))
    assert "already holds a complete PLASM run" in line


@pytest.fixture
def ls_project(ls_client):
    """A project in the real Label Studio with the tasks of ``ls_export``: 16 annotated, 10 not, 1 cancelled."""
    tasks = ls_export("classification", 16, 10, seed=3)
    project = ls_client.create_project(f"plasm cli {uuid.uuid4().hex[:8]}", CLS_CONFIG)
    ids = ls_client.import_tasks(project["id"], [{"data": t["data"]} for t in tasks])
    for task_id, task in zip(ids, tasks):
        for ann in task.get("annotations") or []:
            ls_client.create_annotation(task_id, ann["result"], was_cancelled=ann["was_cancelled"])
    return project["id"], ids


@pytest.mark.labelstudio
def test_sync_run_from_project_with_push_and_ls_errors(tmp_path, tiny, fast_config_file, capsys, monkeypatch,
                                                       label_studio, ls_client, ls_project):
    monkeypatch.delenv("ACQUISITION_MODEL", raising=False)
    project, task_ids = ls_project
    token = label_studio.meta["token"]
    base = ["run", "--ls-url", label_studio.url, "--sync", "--model-dir", str(tmp_path / "models")]
    missing = project + 10_000
    assert cli.main([*base, "--project", str(missing), "--ls-token", token]) == 2
    assert f"project {missing} does not exist" in capsys.readouterr().err
    assert cli.main([*base, "--project", str(project), "--ls-token", "wrong-token-123"]) == 2
    err = capsys.readouterr().err
    assert "refused the API key (401" in err and "wrong-token" not in err
    code = cli.main([*base, "--project", str(project), "--ls-token", token, "--teacher", tiny["bert"],
                     "--successor", "cnn", "--config", str(fast_config_file), "--push", "--json", "--filter", "none"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    summary = json.loads(out.out)
    assert summary["push"]["pushed"] == len(task_ids)
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "models" / "plasm" and not (run_dir / "connection.json").exists()
    _check_run(run_dir, "classification")
    preds = ls_client.list_predictions(project=project)
    assert len(preds) == len(task_ids) and {p["model_version"] for p in preds} == {summary["job_id"]}
    assert {p["task"] for p in preds} == set(task_ids)
    assert all(p["result"][0]["from_name"] == "topic" and p["result"][0]["type"] == "choices" for p in preds)


# ============================================================================================ RQ
@pytest.fixture(scope="module")
def rq_stack(tmp_path_factory):
    if services.redis_server_bin() is None:
        if services.in_ci():
            pytest.fail("redis-server missing under CI")
        pytest.skip("redis-server not installed")
    root = tmp_path_factory.mktemp("plasm-rq")
    redis = services.start_redis(root / "redis")
    queue = f"plasm-test-{os.getpid()}"
    model_dir = root / "models"
    env = {"MODEL_DIR": str(model_dir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    worker = services.start_rq_worker(redis.url, env, queue=queue, log_dir=root / "logs")
    yield {"redis": redis.url, "queue": queue, "model_dir": model_dir, "worker": worker}
    worker.stop(timeout=5)
    redis.stop()


def _status(stack, job_id: str) -> dict:
    proc = plasm("status", job_id, "--json", "--redis-url", stack["redis"], "--model-dir", str(stack["model_dir"]),
                 timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _wait(stack, job_id: str, timeout: float = 400) -> tuple[dict, list[dict]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _status(stack, job_id)
        seen.append(s)
        if s["state"] in ("finished", "failed"):
            return s, seen
        stack["worker"].check_alive()
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not finish: {seen[-1]}\n{stack['worker'].log_tail()}")


def _enqueue(stack, *args) -> str:
    proc = plasm("run", *args, "--redis-url", stack["redis"], "--queue", stack["queue"], "--model-dir",
                 str(stack["model_dir"]), timeout=120)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert job_id.startswith("plasm-") and "\n" not in job_id
    return job_id


@pytest.mark.redis
@pytest.mark.parametrize("kind, successor, filt", [("classification", "cnn", "uncertainty"),
                                                   ("tagging", "hf-other", "both")])
def test_rq_worker_runs_plasm_from_export(rq_stack, tmp_path, tiny, fast_config_file, kind, successor, filt):
    export, config = write_export(tmp_path, kind, 24, 20)
    successor = "hf:" + tiny["mpnet"] if successor == "hf-other" else successor
    cfg = json.loads(fast_config_file.read_text())
    cfg["classical"] = FAST_CLASSICAL_CNN if kind == "classification" else FAST_CLASSICAL_TAGGER
    if successor.startswith("hf:"):
        cfg.pop("classical")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    job_id = _enqueue(rq_stack, "--export", str(export), "--label-config", str(config), "--teacher", tiny["bert"],
                      "--successor", successor, "--filter", filt, "--config", str(tmp_path / "cfg.json"))
    final, seen = _wait(rq_stack, job_id)
    assert final["state"] == "finished", final
    assert final["rq_status"] == "finished" and final["progress"] == 1.0 and not final.get("reason")
    assert set(final["timings"]) >= {"load", "split", "teacher", "pseudo_label", "filter", "successor", "total"}
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress)
    run_dir = Path(final["run_dir"])
    assert run_dir == rq_stack["model_dir"] / "plasm" / job_id
    report = _check_run(run_dir, kind)
    assert report["counts"]["gold"] == 24 and report["counts"]["pool"] == 21
    assert final["summary"]["counts"] == report["counts"]
    # `list` shows it, finished
    proc = plasm("list", "--json", "--redis-url", rq_stack["redis"], "--queue", rq_stack["queue"], "--model-dir",
                 str(rq_stack["model_dir"]))
    assert proc.returncode == 0, proc.stderr
    listed = {r["run_id"]: r for r in json.loads(proc.stdout)}
    assert listed[job_id]["state"] == "finished"
    text = plasm("status", job_id, "--redis-url", rq_stack["redis"])
    assert text.returncode == 0 and f"{job_id}: finished" in text.stdout and "timings:" in text.stdout


@pytest.mark.redis
def test_rq_killed_job_is_failed_without_complete_marker_and_rerun_works(rq_stack, tmp_path, tiny, fast_config_file):
    export, config = write_export(tmp_path, "classification", 24, 20)
    common = ["--export", str(export), "--teacher", tiny["bert"], "--successor", "cnn", "--config",
              str(fast_config_file)]
    # RQ stops the job after 2 s; 20,000 minimum teacher steps keep it busy far longer than that however idle the
    # machine is: early stopping on the 2-example dev set waits for them (it once cut the teacher to 6 steps, and
    # the job finished inside the limit on a quiet CI machine).
    job_id = _enqueue(rq_stack, *common, "--min-steps", "20000", "--timeout", "2")
    final, _ = _wait(rq_stack, job_id, timeout=120)
    assert final["state"] == "failed", final
    assert "Timeout" in final["reason"] or "timeout" in final["reason"], final["reason"]
    run_dir = rq_stack["model_dir"] / "plasm" / job_id
    assert not (run_dir / "COMPLETE").exists()
    text = plasm("status", job_id, "--redis-url", rq_stack["redis"])
    assert "failed" in text.stdout and "error" in text.stdout
    # a job that fails inside the pipeline records its stage and reason
    from redis import Redis
    from rq import Queue

    bad_id = "plasm-test-bad-" + str(os.getpid())
    bad_dir = rq_stack["model_dir"] / "plasm" / bad_id
    params = {"run_id": bad_id, "run_dir": str(bad_dir), "config": {"teacher": tiny["bert"]}, "push": False,
              "source": {"kind": "export", "export": str(tmp_path / "vanished.json"), "label_config": str(config)}}
    Queue(rq_stack["queue"], connection=Redis.from_url(rq_stack["redis"])).enqueue_call(
        "plasm.job.plasm_job", args=(params,), job_id=bad_id, meta={"kind": "plasm", "state": "queued"})
    bad, _ = _wait(rq_stack, bad_id, timeout=120)
    assert bad["state"] == "failed" and bad["failed_stage"] == "load" and "export file not found" in bad["reason"]
    assert json.loads((bad_dir / "status.json").read_text())["state"] == "failed"
    assert not (bad_dir / "COMPLETE").exists()
    # running it again works: a new job id, a fresh run directory
    again = _enqueue(rq_stack, *common)
    assert again != job_id
    final, _ = _wait(rq_stack, again)
    assert final["state"] == "finished", final
    _check_run(rq_stack["model_dir"] / "plasm" / again, "classification")
    states = {r["run_id"]: r["state"] for r in json.loads(plasm(
        "list", "--json", "--redis-url", rq_stack["redis"], "--queue", rq_stack["queue"]).stdout)}
    assert states[job_id] == "failed" and states[again] == "finished" and states[bad_id] == "failed"
