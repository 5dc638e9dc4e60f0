"""How fast Label Studio takes predictions: POST /api/projects/<id>/import/predictions with several chunk sizes and
concurrencies, against a real LS started by the script (its default SQLite database, as `label-studio start`).

    .venv/bin/python bench/ls_push.py --tasks 5000
    .venv/bin/python bench/ls_push.py --tasks 17321 --push 2048 --chunks 256,2048 --concurrency 1 \
        --ls-env fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short=true
(the second: the first chunk of a live-loop publish into a 17k-task project, with LS's batched import switched on;
without that flag LS 1.23 recounts every task of the project after each import request.)
Writes bench/out/ls_push.json; the backend's PUSH_BATCH default comes from this measurement.
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)

from albackend.adapters.lsclient import LabelStudioClient  # noqa: E402
from tests.support import services  # noqa: E402
from tests.support.lsapi import LSClient  # noqa: E402


def payloads(ids: list[int], version: str) -> list[dict]:
    return [{"task": t, "score": (t % 97) / 97.0, "model_version": version, "result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["World"]}}]}
        for t in ids]


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services it started (finally blocks)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--chunks", default="100,500,2000")
    p.add_argument("--concurrency", default="1,2")
    p.add_argument("--push", type=int, default=0, help="predictions pushed per run (default: one per task)")
    p.add_argument("--preload", action="store_true",
                   help="first store one prediction per task under another version (untimed), as a live project holds")
    p.add_argument("--ls-env", action="append", default=[], help="Label Studio server environment, KEY=VALUE")
    p.add_argument("--out", default=None, help="JSON path (default bench/out/ls_push.json)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ls-push-"))
    ls_svc = services.start_label_studio(tmp / "ls", extra_env=dict(kv.split("=", 1) for kv in args.ls_env))
    out = {"machine": bc.machine_info(), "args": vars(args), "runs": []}
    try:
        ls = LSClient.for_service(ls_svc, timeout=600)
        pid = ls.create_project("push bench", bc.CLASSIFICATION_CONFIG)["id"]
        rows = bc.load_pool(limit=args.tasks)
        ids = ls.import_tasks(pid, [{"data": {"text": r.text}} for r in rows])
        client = LabelStudioClient(ls_svc.url, ls_svc.meta["token"], timeout=600)
        pushed = ids[:args.push] if args.push else ids
        if args.preload:
            client.import_predictions(pid, payloads(ids, "preloaded"), chunk=2000)
        k = 0
        for conc in (int(c) for c in args.concurrency.split(",")):
            for chunk in (int(c) for c in args.chunks.split(",")):
                version = f"bench-{k}"
                k += 1
                t0 = time.perf_counter()
                client.import_predictions(pid, payloads(pushed, version), chunk=chunk, concurrency=conc)
                push_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                deleted = client.delete_model_version(pid, version)
                run = {"chunk": chunk, "concurrency": conc, "push_s": round(push_s, 2),
                       "predictions_per_s": round(len(pushed) / push_s, 1),
                       "seconds_per_request": round(push_s / -(-len(pushed) // chunk), 2), "delete_s": round(time.perf_counter() - t1, 2),
                       "deleted": deleted}
                out["runs"].append(run)
                print(run, flush=True)
    finally:
        ls_svc.stop()
    bc.print_table(f"LS import/predictions, {args.tasks} tasks", ["chunk", "concurrency", "push s", "pred/s",
                   "s/request", "delete s"], [[r["chunk"], r["concurrency"], r["push_s"], r["predictions_per_s"],
                                               r["seconds_per_request"], r["delete_s"]]
                                 for r in out["runs"]])
    out_path = Path(args.out) if args.out else Path(__file__).resolve().parent / "out" / "ls_push.json"
    print("wrote", bc.write_json(out_path, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
