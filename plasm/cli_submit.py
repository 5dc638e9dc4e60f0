"""Where a checked ``python -m plasm run`` goes: enqueued on RQ (:func:`enqueue`), or executed in this process
with a progress bar (:func:`run_sync`, ``--sync``). Both take the job params built by :mod:`plasm.cli_run`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from plasm.cli_common import EXIT_RUN_FAILED, CLIError, env, safe_url

__all__ = ["enqueue", "run_sync"]


def enqueue(params: dict, cfg, data, conn, redis_url: str, args) -> int:
    """Enqueue ``plasm.job.plasm_job`` (job id = run id), write the queued status.json, print the job id."""
    from rq import Queue

    from plasm import job as plasm_job

    run_id, run_dir = params["run_id"], Path(params["run_dir"])
    queue = args.queue or env("RQ_QUEUE", "albackend") or "albackend"
    enqueued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta = {"kind": "plasm", "run_id": run_id, "run_dir": str(run_dir), "state": "queued", "stage": None,
            "progress": 0.0, "timings": {}, "errors": [], "enqueued_at": enqueued_at}
    try:
        Queue(queue, connection=conn).enqueue_call(
            plasm_job.JOB_FUNC, args=(params,), job_id=run_id, timeout=args.timeout, result_ttl=7 * 86400,
            failure_ttl=30 * 86400, meta=meta, description=f"PLASM {cfg.teacher} -> {cfg.successor} ({cfg.filter})")
    except Exception as exc:  # noqa: BLE001
        (run_dir / plasm_job.CONNECTION_FILE).unlink(missing_ok=True)
        raise CLIError(f"cannot enqueue on Redis at {safe_url(redis_url)}: {type(exc).__name__}: {exc}") from None
    from albackend.store import atomic_write_text

    atomic_write_text(run_dir / plasm_job.STATUS_FILE, json.dumps({**meta, "queue": queue}, indent=1))
    if args.json:
        print(json.dumps({"job_id": run_id, "run_dir": str(run_dir), "queue": queue, "data": data.summary()}))
    else:
        print(run_id)
        print(f"queued on {queue!r}: gold {len(data.gold)}, pool {len(data.pool_texts)}; run dir {run_dir}\n"
              f"follow it with: python -m plasm status {run_id}", file=sys.stderr)
    return 0


def run_sync(params: dict, args) -> int:
    """Execute the job here (progress bar on stderr); 0, or EXIT_RUN_FAILED with one ``error:`` line."""
    from tqdm.auto import tqdm

    from plasm import job as plasm_job

    bar = tqdm(total=100, desc="load", unit="%", bar_format="{desc:<14} {percentage:3.0f}%|{bar}| {elapsed} {postfix}",
               file=sys.stderr)

    last = {"stage": None, "t": 0.0}

    def echo(stage: str, fraction: float, info: dict) -> None:
        now = time.monotonic()
        changed = stage != last["stage"]
        if not changed and now - last["t"] < 0.2 and fraction < 1.0:
            return
        last.update(stage=stage, t=now)
        if changed:
            bar.set_description_str(stage, refresh=False)
            bar.set_postfix_str("", refresh=False)
        target = int(round(100 * fraction))
        if target > bar.n:
            bar.update(target - bar.n)
        post = {k: info[k] for k in ("step", "steps", "loss", "q", "kept") if k in info}
        if post:
            bar.set_postfix(post, refresh=False)
        bar.refresh()

    reporter = plasm_job.Reporter(params["run_id"], Path(params["run_dir"]), job=None, echo=echo)
    try:
        summary = plasm_job.execute(params, reporter)
    except KeyboardInterrupt:
        bar.close()
        print(f"error: interrupted; run {params['run_id']} marked failed in {params['run_dir']}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the job records the reason; show it on one line
        bar.close()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: PLASM run failed in stage {reporter.state.get('failed_stage')}: {type(exc).__name__}: {first}",
              file=sys.stderr)
        return EXIT_RUN_FAILED
    bar.close()
    if args.json:
        print(json.dumps({"job_id": params["run_id"], **summary}, default=str))
    else:
        _print_summary(params["run_id"], summary)
    return 0


def _print_summary(run_id: str, summary: dict) -> None:
    c = summary["counts"]
    print(f"{run_id}: finished -> {summary['run_dir']}")
    print(f"  gold {c['gold']} (train {c['gold_train']}, dev {c['dev']}), pool {c['pool']}, pseudo {c['pseudo']}: "
          f"dropped {c['dropped_uncertainty']} by uncertainty + {c['dropped_tracin']} by TracIn, kept {c['kept']}")
    print(f"  q = {summary['q']:.4f}; dev: " + ", ".join(
        f"{role} " + " ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
        for role, m in summary["dev_metrics"].items()))
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings"].items() if v is not None))
