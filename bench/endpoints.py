"""Endpoint latency benchmark: /webhook reply time and single-task /predict latency under real gunicorn,
idle and while a training job runs.

The backend runs under real gunicorn (tests/support/services.py start_backend: the in-process job queue, or
``--redis`` for a real redis-server + RQ worker). /predict serves the acquisition model (default "minilm-l6")
fine-tuned on a few AG News labels, so its latency is that of a real model. Client: one keep-alive
``requests.Session`` on 127.0.0.1, requests strictly sequential, loops bounded (``--n`` samples per figure,
at most ``--max-phase-s`` seconds per phase).

Phases
  idle  /predict (one task) and /webhook with an action the backend ignores (PROJECT_UPDATED: parse + answer,
        no job, so the backend stays idle), interleaved.
  load  the same two, plus /webhook ANNOTATION_CREATED (the real enqueue path: a job record + queue submit, or
        "already queued"), interleaved, while a training job runs. Only samples taken while training was
        running count; the ratio load/idle is printed next to the absolute p50/p99.

Training load (``--load``)
  ls       (default when Label Studio is installed, ``LS_VENV`` or .venv-ls): the real flow. A real Label
           Studio with an AG News project; the seed set is annotated, the backend connected, "Start Training"
           pressed; after iteration 0 is published the idle phase runs; then "Start Training" again and the
           load phase runs while the backend's own training jobs (fetch from LS -> train -> publish -> UPS
           rescore -> push predictions to LS) run - in the gunicorn process with the in-process queue, in the
           RQ worker with --redis. The ANNOTATION_CREATED webhooks keep queueing the next retrain, so
           training load is continuous; whether each sample fell inside a running job comes from the job
           records (started_at / finished_at).
  process  (fallback without Label Studio): the model is trained and published directly with the product's
           ``albackend.services.training.train_and_publish`` on labeled AG News tasks; the load is a separate
           ``python -c`` process fine-tuning the acquisition model on AG News for as long as the phase runs
           (same CPU, not the backend's job runner). Label Studio is replaced by a stub that answers after 30 s,
           so queued jobs wait on it without using CPU.
  none     idle phase only.

    python bench/endpoints.py                 # ~3-4 min with Label Studio on 2 CPU cores (n = 200)
    python bench/endpoints.py --redis         # real redis + RQ worker (training outside the web process)
    python bench/endpoints.py --load process  # no Label Studio
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)

import requests  # noqa: E402

from tests.support import services  # noqa: E402

PROJECT_TS = "1764000000"

LOAD_CODE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import benchcommon as bc
from albackend.models.acquisition import AcquisitionModel
from albackend.models.runtime import configure_runtime
from albackend.models.train import TrainConfig
configure_runtime()
rows = bc.load_pool(sys.argv[3], seed=1, limit=int(sys.argv[4]))
model = AcquisitionModel.create(sys.argv[2], bc.agnews_spec(), device="auto", max_length=int(sys.argv[5]))
def on_step(step, total, loss):
    if step == 1 or step % 20 == 0:
        print(f"LOAD step {step} loss {loss:.3f} t={time.time():.3f}", flush=True)
print("LOAD training started", flush=True)
model.fit(bc.examples(rows), TrainConfig(epochs=1000, min_steps=10**7, batch_size=16, lr=1e-4), on_step=on_step)
"""


# --------------------------------------------------------------------------------------------- payloads
def predict_payload(pid: int, task: dict) -> dict:
    """What Label Studio 1.23 posts for one task (tests/support/lsapi.py)."""
    return {"tasks": [task], "project": f"{pid}.{PROJECT_TS}", "label_config": bc.CLASSIFICATION_CONFIG,
            "params": {"login": None, "password": None, "context": None}}


def webhook_payload(pid: int, task: dict, action: str, i: int) -> dict:
    project = {"id": pid, "title": "bench endpoints", "label_config": bc.CLASSIFICATION_CONFIG}
    if action == "PROJECT_UPDATED":
        return {"action": action, "project": project}
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["World"]}}]
    return {"action": action, "project": project, "task": {**task, "project": pid},
            "annotation": {"id": 900000 + i, "result": result, "task": task["id"], "project": pid,
                           "completed_by": 1, "was_cancelled": False}}


# --------------------------------------------------------------------------------------------- sampling
class Sampler:
    """Sequential, bounded request loops; every sample keeps its wall-clock start for load attribution."""

    def __init__(self, url: str, pid: int, tasks: list[dict]):
        self.url, self.pid, self.tasks = url, pid, tasks
        self.session = requests.Session()
        self.k = 0

    def one(self, kind: str) -> dict:
        task = self.tasks[self.k % len(self.tasks)]
        self.k += 1
        if kind == "predict":
            path, body = "/predict", predict_payload(self.pid, task)
        else:
            action = "ANNOTATION_CREATED" if kind == "webhook_train" else "PROJECT_UPDATED"
            path, body = "/webhook", webhook_payload(self.pid, task, action, self.k)
        t_wall = time.time()
        t0 = time.perf_counter()
        r = self.session.post(self.url + path, json=body, timeout=120)
        dt = time.perf_counter() - t0
        ok = r.status_code < 300
        if kind == "predict":
            res = r.json().get("results") if ok else None
            ok = ok and isinstance(res, list) and len(res) == 1 and bool(res[0].get("result"))
        return {"kind": kind, "t": t_wall, "t_end": t_wall + dt, "s": dt, "status": r.status_code, "ok": ok}

    def run(self, kinds: list[str], n: int, max_s: float, counted=None, stop=None) -> list[dict]:
        """Interleave ``kinds`` until each has ``n`` counted samples (``counted(samples) -> per-kind count``),
        or ``max_s`` elapsed, or ``stop()``, or 4n rounds."""
        samples: list[dict] = []
        t_end = time.monotonic() + max_s
        for rnd in range(4 * n):
            for kind in kinds:
                samples.append(self.one(kind))
            if stop is not None and stop():
                break
            if time.monotonic() > t_end:
                break
            if rnd % 10 == 9 or rnd + 1 >= n:
                counts = counted(samples) if counted else {k: sum(s["kind"] == k for s in samples) for k in kinds}
                if all(counts.get(k, 0) >= n for k in kinds):
                    break
        return samples


def summarize(samples: list[dict]) -> dict:
    out = {}
    for kind in sorted({s["kind"] for s in samples}):
        xs = [s["s"] * 1000 for s in samples if s["kind"] == kind]
        out[kind] = {"n": len(xs), "p50_ms": bc.percentile(xs, 50), "p99_ms": bc.percentile(xs, 99),
                     "mean_ms": sum(xs) / len(xs), "max_ms": max(xs),
                     "errors": sum(not s["ok"] for s in samples if s["kind"] == kind)}
    return out


# --------------------------------------------------------------------------------------------- job records
def job_windows(model_dir: Path, project: str) -> list[tuple[float, float, dict]]:
    """(started_at, finished_at or +inf, record) of every training job of the project that started."""
    from albackend.services.store import ModelStore

    out = []
    for rec in ModelStore(model_dir).jobs(project, limit=10_000):
        if rec.get("started_at"):
            out.append((float(rec["started_at"]), float(rec.get("finished_at") or float("inf")), rec))
    return sorted(out, key=lambda w: w[0])


def inside(s: dict, windows) -> bool:
    """The whole request ran while some training job was running."""
    return any(a <= s["t"] and s["t_end"] <= b for a, b, _ in windows)


def wait_published(url: str, pid: int, timeout: float, stack) -> dict:
    def idle():
        stack.check_alive()
        st = requests.get(f"{url}/projects/{pid}/status", timeout=10).json()
        jobs = st.get("jobs") or []
        if any(j.get("state") in ("queued", "running") for j in jobs):
            return None
        if jobs and all(j.get("state") == "failed" for j in jobs):
            raise RuntimeError(f"training failed: {jobs[0].get('reason')}\n{stack.logs(3000)}")
        return st if st.get("model_version") else None

    return services.wait_until(idle, timeout, 1.0, "the first model to be published", on_timeout=stack.logs)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="minilm-l6", help="acquisition model (ACQUISITION_MODEL)")
    ap.add_argument("--pool-csv", type=Path, default=bc.DEFAULT_POOL)
    ap.add_argument("--n", type=int, default=200, help="samples per endpoint and phase")
    ap.add_argument("--load", choices=["auto", "ls", "process", "none"], default="auto")
    ap.add_argument("--redis", action="store_true", help="real redis-server + RQ worker instead of in-process")
    ap.add_argument("--tasks", type=int, default=400, help="tasks in the project (ls) / texts to predict on")
    ap.add_argument("--seed-labels", type=int, default=16, help="annotated tasks the first model trains on")
    ap.add_argument("--train-min-steps", type=int, default=30,
                    help="TRAIN_MIN_STEPS of the backend (product default 60; latency does not depend on it)")
    ap.add_argument("--train-epochs", type=int, default=5, help="TRAIN_EPOCHS of the backend")
    ap.add_argument("--max-length", type=int, default=256, help="MAX_LENGTH of the backend")
    ap.add_argument("--threads", type=int, default=4, help="gunicorn threads (one worker)")
    ap.add_argument("--max-phase-s", type=float, default=600.0, help="bound on each measuring phase")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, model store)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/endpoints.json"))
    args = ap.parse_args(argv)

    load = args.load
    if load == "auto":
        load = "ls" if services.have_label_studio() else "process"
    rows = bc.load_pool(args.pool_csv, seed=args.seed, limit=max(args.tasks, args.seed_labels + 8))
    seed_rows, rest = bc.seed_split(rows, args.seed_labels)
    root = Path(tempfile.mkdtemp(prefix="bench-endpoints-"))
    model_dir = root / "models"
    env = {"MODEL_DIR": str(model_dir), "ACQUISITION_MODEL": args.model, "TRAIN_MIN_STEPS": str(args.train_min_steps),
           "TRAIN_EPOCHS": str(args.train_epochs), "MAX_LENGTH": str(args.max_length), "SEED": str(args.seed),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "LOG_LEVEL": "INFO"}
    started: list = []  # services and processes to stop, in reverse order
    notes: list[str] = []
    result: dict = {}
    t_start = time.monotonic()
    try:
        if args.redis:
            redis = services.start_redis(root / "redis")
            started.append(redis)
            env["REDIS_URL"] = redis.url
        if load == "ls":
            from tests.support.lsapi import LSClient

            ls = services.start_label_studio(root / "ls")
            started.append(ls)
            client = LSClient.for_service(ls)
            pid = int(client.create_project("bench endpoints", bc.CLASSIFICATION_CONFIG)["id"])
            ids = client.import_tasks(pid, [{"data": {"text": r.text}} for r in rows])
            for tid, r in zip(ids, seed_rows):  # annotate before connecting: no training on 1, 2, ... labels
                client.create_annotation(tid, bc.labeled_task(tid, r)["annotations"][0]["result"])
            env.update(LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.meta["token"])
            stack = services.start_backend(env, root / "logs", workers=1, threads=args.threads)
            started.append(stack)
            ml = client.connect_ml(pid, stack.url, title="albackend")
            t0 = time.perf_counter()
            client.train(ml["id"])
            st = wait_published(stack.url, pid, 1200, stack)
            notes.append(f"Label Studio {ls.url}: project {pid}, {len(ids)} tasks, {len(seed_rows)} annotated; "
                         f"iteration 0 published in {time.perf_counter() - t0:.1f} s ({st['model_version']})")
            seeded = set(ids[:len(seed_rows)])
            tasks = [t for t in client.list_tasks(pid) if t["id"] not in seeded]
        else:
            from albackend.settings import Settings
            from albackend.services.store import ModelStore
            from albackend.services.training import train_and_publish

            pid = 1
            settings = dataclasses.replace(
                Settings.from_env(), model_dir=model_dir.resolve(), acquisition_model=args.model,
                train_min_steps=args.train_min_steps, train_epochs=args.train_epochs, max_length=args.max_length,
                seed=args.seed)
            stats: dict = {"seconds": {}}
            labeled = [bc.labeled_task(i + 1, r) for i, r in enumerate(seed_rows)]
            _, info = train_and_publish(settings, ModelStore(settings.model_dir), str(pid), bc.agnews_spec(),
                                        labeled, stats)
            notes.append(f"model {info['model_version']} trained on {stats['gold']} AG News labels in "
                         f"{stats['seconds']['train']:.1f} s and published with train_and_publish (no Label Studio)")
            if load == "process":
                from tests.support.fakes import SlowHTTPServer

                stub = SlowHTTPServer(delay=30.0, status=503)
                stub.__enter__()
                started.append(stub)
                env.update(LABEL_STUDIO_URL=stub.url, LABEL_STUDIO_API_KEY="bench-token-0123456789")
            stack = services.start_backend(env, root / "logs", workers=1, threads=args.threads)
            started.append(stack)
            tasks = [{"id": 1000 + i, "data": {"text": r.text}, "annotations": [], "predictions": []}
                     for i, r in enumerate(rest)]

        sampler = Sampler(stack.url, pid, tasks)
        for kind in ("predict", "webhook_ignored"):  # warm-up: model load into the web process, first requests
            for _ in range(3):
                sampler.one(kind)
        # ---- idle phase
        idle = sampler.run(["predict", "webhook_ignored"], args.n, args.max_phase_s)
        # ---- load phase
        load_samples: list[dict] = []
        load_info: dict = {"mode": load}
        if load == "ls":
            client.train(ml["id"])
            services.wait_until(lambda: any(w[1] == float("inf") for w in job_windows(model_dir, str(pid))),
                                120, 0.1, "the training job to start", on_timeout=stack.logs)

            def counted(samples):
                w = job_windows(model_dir, str(pid))
                return {k: sum(s["kind"] == k and inside(s, w) for s in samples)
                        for k in ("predict", "webhook_train", "webhook_ignored")}

            raw = sampler.run(["predict", "webhook_train", "webhook_ignored"], args.n, args.max_phase_s,
                              counted=counted)
            windows = job_windows(model_dir, str(pid))
            load_samples = [s for s in raw if inside(s, windows)]
            during = [w for w in windows if w[1] > raw[0]["t"] and w[0] < raw[-1]["t_end"]]
            load_info.update(
                samples_total=len(raw), samples_outside_training=len(raw) - len(load_samples),
                training_jobs_overlapping=len(during),
                training_jobs=[{"state": r.get("state"), "iteration": (r.get("stats") or {}).get("iteration"),
                                "duration_s": r.get("duration_s"), "seconds": (r.get("stats") or {}).get("seconds"),
                                "rescore": {k: v for k, v in ((r.get("stats") or {}).get("rescore") or {}).items()
                                            if k in ("full_pool", "scored", "pool_size")}}
                               for _, _, r in during],
                where="RQ worker process" if args.redis else "gunicorn worker process (in-process queue thread)")
            notes.append(f"load: the backend's own training jobs ({load_info['where']}); "
                         f"{len(during)} jobs overlapped the load phase")
        elif load == "process":
            log_path = root / "logs" / "load.log"
            fh = open(log_path, "wb")
            proc = subprocess.Popen(
                [services.backend_python(), "-c", LOAD_CODE, str(Path(__file__).resolve().parent), args.model,
                 str(args.pool_csv), "2000", str(args.max_length)],
                stdout=fh, stderr=subprocess.STDOUT, env=services.backend_env(), cwd=bc.REPO_ROOT,
                start_new_session=True)
            started.append(("process", proc, fh))
            services.wait_until(lambda: proc.poll() is None and "LOAD step 1 " in log_path.read_text(), 300, 0.2,
                                "the training load process to start", on_timeout=lambda: services.tail(log_path))
            t_load = time.time()
            raw = sampler.run(["predict", "webhook_train", "webhook_ignored"], args.n, args.max_phase_s,
                              stop=lambda: proc.poll() is not None)
            alive = proc.poll() is None
            steps = [ln for ln in log_path.read_text().splitlines() if ln.startswith("LOAD step")]
            load_samples = raw if alive else []
            load_info.update(samples_total=len(raw), load_process_alive_at_end=alive,
                             load_steps_logged=steps[-1] if steps else None, started_at=t_load,
                             where="separate python process (AcquisitionModel.fit on AG News)")
            notes.append("load: a separate python -c process fine-tuning the acquisition model on 2,000 AG News "
                         "texts (no Label Studio; not the backend's own job runner)")
        metrics = requests.get(stack.url + "/status", timeout=30).json()
        stack.check_alive()

        s_idle, s_load = summarize(idle), summarize(load_samples) if load_samples else {}
        ratios = {}
        for k in ("predict", "webhook_ignored"):
            if k in s_load and k in s_idle:
                ratios[k] = {"p50": s_load[k]["p50_ms"] / s_idle[k]["p50_ms"],
                             "p99": s_load[k]["p99_ms"] / s_idle[k]["p99_ms"]}
        if "webhook_train" in s_load and "webhook_ignored" in s_idle:
            ratios["webhook_train_vs_idle_ignored"] = {
                "p50": s_load["webhook_train"]["p50_ms"] / s_idle["webhook_ignored"]["p50_ms"],
                "p99": s_load["webhook_train"]["p99_ms"] / s_idle["webhook_ignored"]["p99_ms"]}
        result = {
            "benchmark": "endpoints", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "load_mode": load, "queue": "rq" if args.redis else "in-process", "model": args.model,
            "idle": s_idle, "load": s_load, "ratio_load_over_idle": ratios, "load_info": load_info,
            "server_metrics": metrics.get("latency"), "notes": notes,
            "total_s": time.monotonic() - t_start, "machine": bc.machine_info(),
        }
    finally:
        for item in reversed(started):
            try:
                if isinstance(item, tuple):
                    _, proc, fh = item
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGTERM)
                        try:
                            proc.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            os.killpg(proc.pid, signal.SIGKILL)
                            proc.wait(timeout=10)
                    fh.close()
                elif hasattr(item, "__exit__") and not hasattr(item, "stop"):
                    item.__exit__(None, None, None)
                else:
                    item.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                print(f"warning: stopping {item!r} failed: {exc}", file=sys.stderr)
        if args.keep or not result:
            print(f"temporary directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    rows_out = []
    for phase, summ in (("idle", result["idle"]), ("load", result["load"])):
        for kind, v in summ.items():
            r = None if phase == "idle" else (
                ratios.get("webhook_train_vs_idle_ignored") if kind == "webhook_train" else ratios.get(kind))
            rows_out.append([phase, kind, v["n"], v["p50_ms"], v["p99_ms"], v["max_ms"], v["errors"],
                             r["p50"] if r else float("nan"), r["p99"] if r else float("nan")])
    bc.print_table(f"Endpoint latency (ms), gunicorn 1 worker x {args.threads} threads, {result['queue']} queue, "
                   f"load = {load}, model {args.model}",
                   ["phase", "request", "n", "p50 ms", "p99 ms", "max ms", "errors", "p50 / idle", "p99 / idle"],
                   rows_out)
    for note in notes:
        print(f"  - {note}")
    if load != "none" and any(result["load"].get(k, {}).get("n", 0) < args.n for k in ("predict", "webhook_train")):
        print(f"  ! fewer than {args.n} samples fell inside training (bounded loop): see load_info in the JSON")
    print("  (webhook_train under load is compared with the idle webhook_ignored: an idle enqueue would start a job)")
    bc.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
