"""The live loop at real size: a real Label Studio, the backend under gunicorn + an RQ worker + Redis, the shared
AG News pool (17,321 tasks) or a replicated 100,000-task pool, and N iterations of

    seed annotations (once) -> "Start Training" (POST /api/ml/<id>/train) -> K annotations served by /next with
    their gold labels -> "Start Training" -> ...

Per iteration it reports:
  click -> current   seconds from the click until LS's project.model_version is the new version
  click -> /next     seconds until /next serves a task that carries a prediction of the new version
  click -> done      seconds until the job finished (last chunk pushed, old versions pruned)
  stages             the job's own sync / train / score / push seconds
  bytes              bytes the job fetched from LS; predictions stored in LS after the iteration
  peak RSS           of the web (gunicorn) and worker (rq worker + work horse) process trees, sampled

    .venv/bin/python bench/live_loop.py --pool 17321 --iterations 6
    .venv/bin/python bench/live_loop.py --pool 100000 --model splade-tiny --iterations 4
    .venv/bin/python bench/live_loop.py --pool 400 --seed-labels 40 --per-iteration 5 --iterations 3  # smoke
    .venv/bin/python bench/live_loop.py --pool 1000 --model splade-tiny --seed-labels 40 --per-iteration 30 \
        --iterations 6 --env KEEP_PREDICTION_VERSIONS=10 --dashboard docs/img/dashboard.png  # the dashboard

Only Start Training triggers retrains here (RETRAIN_EVERY is set above the number of annotations) so each
iteration is one click. Writes bench/out/live_loop/<name>.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import signal
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)
import requests  # noqa: E402

from tests.support import browser, services  # noqa: E402
from tests.support.lsapi import LSClient  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "live_loop"


class RSSSampler(threading.Thread):
    """Peak resident memory of process trees (a session each), sampled every ``period`` seconds."""

    def __init__(self, groups: dict[str, int], period: float = 0.5):
        super().__init__(daemon=True)
        self.groups, self.period, self.peak = groups, period, {k: 0 for k in groups}
        self._stop = threading.Event()

    @staticmethod
    def tree_rss(sid: int) -> int:
        total = 0
        for pid in services._session_members(sid):
            try:
                with open(f"/proc/{pid}/status") as fh:
                    total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) * 1024
            except (OSError, StopIteration, ValueError):
                continue
        return total

    def run(self) -> None:
        while not self._stop.wait(self.period):
            for name, sid in self.groups.items():
                self.peak[name] = max(self.peak[name], self.tree_rss(sid))

    def stop(self) -> dict:
        self._stop.set()
        return {k: round(v / 2**20, 1) for k, v in self.peak.items()}


def pool_tasks(n: int, seed: int, path: str | None = None) -> tuple[list[dict], list[str]]:
    """The shared AG News pool, replicated with a suffix per copy when ``n`` exceeds it."""
    rows = bc.load_pool(path or bc.DEFAULT_POOL, seed=seed)
    tasks, labels = [], []
    for i in range(n):
        text, label = rows[i % len(rows)].text, bc.AGNEWS_LABELS[rows[i % len(rows)].label]
        copy = i // len(rows)
        tasks.append({"data": {"text": text if copy == 0 else f"{text} (copy {copy})"}})
        labels.append(label)
    return tasks, labels


def choices(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def import_tasks(ls: LSClient, pid: int, tasks: list[dict], batch: int = 10_000) -> list[int]:
    ids: list[int] = []
    for i in range(0, len(tasks), batch):
        ids += ls.import_tasks(pid, tasks[i:i + batch])
    return ids


def wait_for(pred, timeout: float, period: float = 0.25):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = pred()
        if value:
            return value
        time.sleep(period)
    raise TimeoutError("condition not met in time")


def job_record(backend_url: str, pid: int, known: set) -> dict | None:
    st = requests.get(f"{backend_url}/projects/{pid}/status", params={"jobs": 50}, timeout=30).json()
    new = [j for j in st.get("jobs") or [] if j["id"] not in known]
    return new[0] if new else None


def one_iteration(ls: LSClient, backend_url: str, pid: int, ml_id: int, known: set, gold: dict, k: int,
                  timeout: float) -> dict:
    """Click Start Training, time what annotators see, then label ``k`` tasks served by /next."""
    before = ls.get_project(pid)["model_version"]
    t_click = time.monotonic()
    ls.train(ml_id)
    version = wait_for(lambda: (v := ls.get_project(pid)["model_version"]) != before and v, timeout)
    t_current = time.monotonic() - t_click
    nxt = ls.next_task(pid)
    served_new = bool(nxt) and any(p.get("model_version") == version for p in nxt.get("predictions") or [])
    t_next = time.monotonic() - t_click
    job = wait_for(lambda: (j := job_record(backend_url, pid, known)) and j["state"] in ("finished", "failed") and j,
                   timeout, 1.0)
    t_done = time.monotonic() - t_click
    known.add(job["id"])
    if job["state"] != "finished":
        raise RuntimeError(f"training job failed: {job.get('reason')}")
    labeled = 0
    while labeled < k and nxt:
        ls.create_annotation(nxt["id"], choices(gold[nxt["id"]]))
        labeled += 1
        nxt = ls.next_task(pid) if labeled < k else None
    s = job.get("stats") or {}
    sec = s.get("seconds") or {}
    rescore = s.get("rescore") or {}
    versions = ls.get(f"/api/projects/{pid}/model-versions/")
    return {"iteration": s.get("iteration"), "model_version": version, "gold": s.get("gold"),
            "click_to_current_s": round(t_current, 1), "click_to_next_s": round(t_next, 1),
            "next_has_new_version": served_new, "click_to_done_s": round(t_done, 1),
            "job_first_publish_s": sec.get("first_publish"), "sync_s": sec.get("sync"), "train_s": sec.get("train"),
            "score_s": sec.get("rescore"), "push_s": sec.get("push"), "push_wait_s": sec.get("push_wait"),
            "publish_s": sec.get("publish"),
            "queued_s": round(job["started_at"] - job["queued_at"], 2) if job.get("started_at") else None,
            "job_s": job.get("duration_s"), "full_pool": rescore.get("full_pool"), "scored": rescore.get("scored"),
            "pool_size": rescore.get("pool_size"), "sync_mode": (s.get("sync") or {}).get("mode"),
            "bytes_fetched": s.get("bytes_fetched"), "predictions_in_ls": int(sum(versions.values())),
            "versions_in_ls": len(versions), "annotated_after": labeled}


def dashboard(backend_url: str, pid: int, png: Path) -> dict:
    """GET /projects/<pid> timed (first: plots rendered; then cached), and a Chromium screenshot of it."""
    url = f"{backend_url}/projects/{pid}"
    times = []
    for _ in range(4):
        t = time.perf_counter()
        requests.get(url, timeout=60).raise_for_status()
        times.append(round((time.perf_counter() - t) * 1000, 1))
    browser.screenshot(url, png, width=1200, height=2300)
    return {"page_ms": times, "screenshot": str(png)}


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="live-loop-"))
    tasks, labels = pool_tasks(args.pool, args.seed, args.pool_csv)
    redis = services.start_redis(tmp / "redis")
    ls_svc = services.start_label_studio(tmp / "ls", extra_env=dict(kv.split("=", 1) for kv in args.ls_env))
    env = {"MODEL_DIR": str(tmp / "models"), "REDIS_URL": redis.url, "LABEL_STUDIO_URL": ls_svc.url,
           "LABEL_STUDIO_API_KEY": ls_svc.meta["token"], "ACQUISITION_MODEL": args.model,
           "RETRAIN_EVERY": "1000000", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "COLD_START": "false",  # the run times Start Training; --env COLD_START=true adds the connect-time round
           "SEED": str(args.seed), **dict(kv.split("=", 1) for kv in args.env)}
    backend = None
    try:
        ls = LSClient.for_service(ls_svc, timeout=600)
        project = ls.create_project("live loop", bc.CLASSIFICATION_CONFIG, sampling="Sequential sampling")
        pid = project["id"]
        t0 = time.monotonic()
        ids = import_tasks(ls, pid, tasks)
        import_s = time.monotonic() - t0
        gold = dict(zip(ids, labels))
        for tid in random.Random(args.seed).sample(ids, args.seed_labels):
            ls.create_annotation(tid, choices(gold[tid]))
        backend = services.start_backend(env, tmp / "logs", workers=args.web_workers, threads=4)
        ml = ls.connect_ml(pid, backend.url, title="albackend")
        rss = RSSSampler({"web": backend.web.pid, "worker": backend.worker.pid})
        rss.start()
        known: set = set()
        rows = []
        for it in range(args.iterations):
            row = one_iteration(ls, backend.url, pid, ml["id"], known, gold, args.per_iteration, args.timeout)
            rows.append(row)
            print(f"[live_loop] {row}", flush=True)
        peak = rss.stop()
        sampling = ls.get_project(pid).get("sampling")
        shown = dashboard(backend.url, pid, Path(args.dashboard)) if args.dashboard else None
        return {"machine": bc.machine_info(), "args": vars(args), "pool": len(ids), "import_s": round(import_s, 1),
                "iterations": rows, "peak_rss_mb": peak, "project_sampling_after": sampling,
                "ls_boot_s": ls_svc.meta.get("boot_seconds"), "load_after": os.getloadavg(), "dashboard": shown,
                "ml_backend_title": ls.list_ml(pid)[0]["title"]}
    finally:
        if backend is not None:
            backend.stop()
        ls_svc.stop()
        redis.stop()


def table(result: dict) -> None:
    header = ["it", "gold", "full", "scored", "sync", "click→current", "click→/next", "click→done", "sync s",
              "train s", "score s", "push s", "job s", "sync+push wait %", "KB fetched", "preds in LS"]
    rows = []
    for r in result["iterations"]:  # push time the job waited on (the rest overlapped scoring)
        share = 100 * ((r["sync_s"] or 0) + (r["push_wait_s"] or 0)) / max(r["job_s"] or 1, 1e-9)
        rows.append([r["iteration"], r["gold"], r["full_pool"], r["scored"], r["sync_mode"], r["click_to_current_s"],
                     r["click_to_next_s"], r["click_to_done_s"], r["sync_s"], r["train_s"], r["score_s"],
                     r["push_s"], r["job_s"], round(share, 1), round((r["bytes_fetched"] or 0) / 1024),
                     r["predictions_in_ls"]])
    bc.print_table(f"Live loop, {result['pool']:,} tasks, model {result['args']['model']}, peak RSS "
                   f"{result['peak_rss_mb']} MB, load after {result['load_after']}", header, rows)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services it started (finally blocks)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=17321, help="tasks (the AG News pool, replicated beyond 17,321)")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--seed-labels", type=int, default=200)
    p.add_argument("--per-iteration", type=int, default=20, help="annotations served by /next per iteration")
    p.add_argument("--web-workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", action="append", default=[], help="extra backend environment, KEY=VALUE")
    p.add_argument("--ls-env", action="append", default=[],
                   help="Label Studio server environment, KEY=VALUE (e.g. LS's batched prediction import flag)")
    p.add_argument("--name", default=None)
    p.add_argument("--pool-csv", default=None, help="text,label,label_name CSV (default: the shared AG News pool)")
    p.add_argument("--out", default=None, help="JSON path (default bench/out/live_loop/<name>.json)")
    p.add_argument("--dashboard", default=None, help="save a Chromium screenshot of /projects/<id> here at the end")
    args = p.parse_args(argv)
    result = run(args)
    table(result)
    name = args.name or f"pool{args.pool}-{args.model}"
    print("wrote", bc.write_json(args.out or OUT / f"{name}.json", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
