"""``python -m plasm distil``: distil a student acquisition model here (``--sync``, or without REDIS_URL) and print
its report, or enqueue :func:`plasm.distil_job.distil_job` on RQ and print the job id.

The teacher's name is checked first, before torch is imported (:func:`plasm.cli.options.precheck`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from rq import Queue

from albackend import settings
from albackend.models.runtime import configure_runtime
from plasm import distil_job
from plasm.cli.common import CLIError, connect_redis, safe_url

EXIT_STOPPED = 3


def params_from_args(args: argparse.Namespace) -> dict:
    """JSON-able job parameters; an API key only when given on the command line (workers read their env)."""
    params = {k: v for k, v in vars(args).items()
              if k not in ("command", "sync", "log_level") and isinstance(v, (str, int, float, bool, type(None)))}
    if not params.get("ls_key"):
        params.pop("ls_key", None)
    return params


def enqueue(params: dict, redis_url: str) -> int:
    conn = connect_redis(redis_url)
    job_id = f"distil-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{os.urandom(4).hex()}"
    try:
        Queue(settings.env("RQ_QUEUE") or "albackend", connection=conn).enqueue(
            distil_job.JOB_FUNC, params, job_id=job_id, job_timeout=24 * 3600, result_ttl=7 * 86400,
            failure_ttl=7 * 86400, description=f"distil {params['teacher']} -> {params['out']}")
    except Exception as exc:  # noqa: BLE001 - any Redis/RQ failure is one line for the user
        raise CLIError(f"cannot enqueue on Redis at {safe_url(redis_url)}: {type(exc).__name__}: {exc}") from None
    print(job_id)
    return 0


def print_summary(report: dict) -> None:
    if not report.get("complete", True):
        print(f"stopped at step {report['step']}/{report['total_steps']}; continue with --resume")
        return
    mem, losses, q = report.get("memory", {}), report["losses"], report.get("quality", {})
    print(f"student: {report['teacher']} layers {report['teacher_layers_kept']} of {report['teacher_num_layers']}"
          f" (MLM head: {'yes' if report['teacher_has_mlm_head'] else 'no'}), losses {'+'.join(losses['used'])}")
    if losses.get("note"):
        print(f"note: {losses['note']}")
    print(f"distilled on {report['distilled_on']['n_texts']} texts ({report['distilled_on']['source']}), "
          f"{report['steps']} steps in {report['train_seconds']:.0f} s on {report['device']}, peak RSS "
          f"{mem.get('peak_rss_mb')} MB" + (f", CUDA peak {mem['cuda_peak_allocated_mb']} MB" if len(mem) > 1 else ""))
    print("losses first -> last 20 steps: " + ", ".join(f"{k} {losses['first'].get(k, float('nan')):.4f} -> {v:.4f}"
                                                        for k, v in losses["final_mean_last_20"].items()))
    if q.get("skipped"):
        print(f"quality report skipped: {q['skipped']}")
        return
    for pair, rho in (q.get("spearman_lc") or {}).items():
        print(f"LC Spearman {pair}: {rho:.3f}")
    if q.get("speed"):
        sp = q["speed"]
        print(f"scoring: student {sp['student_texts_per_second']} texts/s, teacher {sp['teacher_texts_per_second']}"
              f" texts/s: speed-up x{sp['speedup']}")
    print(f"{q.get('verdict', '')} (quality report {q.get('seconds', 0):.0f} s, peak RSS {q.get('peak_rss_mb')} MB)")


def main(args: argparse.Namespace) -> int:
    configure_runtime()  # the teacher's name was checked before this module was imported (cli.options)
    params = params_from_args(args)
    redis_url = settings.env("REDIS_URL")
    if not args.sync and redis_url:
        return enqueue(params, redis_url)
    if not args.sync:
        print("REDIS_URL is not set: running in this process", file=sys.stderr)
    report = distil_job.run(params, progress=True)
    print_summary(report)
    return 0 if report.get("complete", True) else EXIT_STOPPED
