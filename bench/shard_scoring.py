"""Rescoring scaled out over RQ workers: one owner alone vs the owner plus helper workers (one torch thread each).

Publishes the default acquisition model (untrained head: the scoring cost is the same) for a project whose task
mirror holds ``--pool`` AG News texts, then scores them through `albackend.services.sharding.ShardedScorer` exactly as a
full-pool retrain does, with 0 and ``--helpers`` helper RQ workers, in the same run.

    .venv/bin/python bench/shard_scoring.py --pool 4000 --helpers 1
Writes bench/out/shard_scoring.json.
"""
from __future__ import annotations

import argparse
import signal
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchcommon as bc  # noqa: E402  (also puts the repo root on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from albackend.models.acquisition import AcquisitionModel  # noqa: E402
from albackend.services.jobs import redis_client, rq_queue  # noqa: E402
from albackend.services.rescoring import score_texts  # noqa: E402
from albackend.settings import Settings  # noqa: E402
from albackend.services.sharding import ShardedScorer  # noqa: E402
from albackend.services.store import ModelStore  # noqa: E402
from albackend.services.taskstore import TaskStore  # noqa: E402
from tests.support import services  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services it started (finally blocks)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=4000)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--helpers", type=int, default=1)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--pool-csv", default=None, help="text,label,label_name CSV (default: the shared AG News pool)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "shard_scoring.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="shard-bench-"))
    redis_svc = services.start_redis(tmp / "redis")
    settings = dataclasses.replace(Settings.from_env(), model_dir=tmp / "models", redis_url=redis_svc.url,
                                   score_shard_size=args.shard_size, device="cpu")
    store = ModelStore(settings.model_dir)
    model = AcquisitionModel.create(args.model, bc.agnews_spec(), device="cpu", max_length=settings.max_length)
    model.meta.update(strategy="least_confident", iteration=0)
    with store.staging("1") as staged:
        model.save(staged)
        store.publish("1", staged, "v1", 0, strategy="least_confident")
    rows = bc.load_pool(args.pool_csv or bc.DEFAULT_POOL, limit=args.pool)
    texts = {i + 1: r.text for i, r in enumerate(rows)}
    TaskStore(store.project_dir("1")).upsert([{"id": i, "data": {"text": t}} for i, t in texts.items()],
                                             with_annotations=False)

    def local(ids):
        unc, results, _ = score_texts(model, [texts[int(t)] for t in ids], "least_confident", "v1",
                                      settings.infer_batch_size, None, 0)
        return unc, results

    env = {"MODEL_DIR": str(settings.model_dir), "REDIS_URL": redis_svc.url, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    ids = np.array(sorted(texts))
    redis = redis_client(settings)  # the training job's client
    out = {"machine": bc.machine_info(), "args": vars(args), "runs": {}}
    try:
        for helpers in (0, args.helpers):
            workers = [services.start_rq_worker(redis_svc.url, env, log_dir=tmp / "logs") for _ in range(helpers)]
            try:
                scorer = ShardedScorer(settings, store, "1", "v1", local, redis, rq_queue(settings))
                t0 = time.perf_counter()
                unc, _ = scorer(ids)
                seconds = time.perf_counter() - t0
            finally:
                for w in workers:
                    w.stop()
            out["runs"][f"{helpers + 1} worker(s)"] = {"seconds": round(seconds, 2), **scorer.figures,
                                                       "texts_per_s": round(len(ids) / seconds, 1)}
            print(f"{helpers + 1} worker(s): {seconds:.1f} s, {scorer.figures}", flush=True)
    finally:
        redis_svc.stop()
    one, many = (out["runs"][k]["seconds"] for k in out["runs"])
    out["speedup"] = round(one / many, 2)
    print(f"speed-up with {args.helpers + 1} workers: {out['speedup']}x (load {bc.machine_info().get('loadavg_1m')})")
    print("wrote", bc.write_json(args.out, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
