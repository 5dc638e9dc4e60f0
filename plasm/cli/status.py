"""``python -m plasm status <job id>``: stage, progress, timings and errors of a run (RQ first, else status.json)."""

from __future__ import annotations

import json
import time

from albackend import settings
from plasm import runs
from plasm.cli.common import CLIError, connect_redis, model_dir, safe_url


def _find(args) -> dict:
    redis_url = args.redis_url or settings.env("REDIS_URL")
    record, redis_error = None, None
    if redis_url:
        try:
            connect_redis(redis_url)
            record = runs.job_status(args.job, redis_url=redis_url)
        except CLIError as exc:
            redis_error = str(exc)
    if record is None:
        record = runs.job_status(args.job, model_dir=model_dir(args))
    if record is None:
        where = [f"Redis at {safe_url(redis_url)}" if redis_url and not redis_error else None,
                 f"{runs.runs_root(model_dir(args))}"]
        raise CLIError(redis_error or f"no PLASM job {args.job!r} (looked in {' and '.join(w for w in where if w)})")
    return record


def when(seconds) -> str:
    """Epoch seconds as UTC ISO time ('' when unknown)."""
    if not isinstance(seconds, (int, float)):
        return str(seconds or "")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _print(record: dict, job: str) -> None:
    line = f"{record.get('run_id', job)}: {record.get('state')}"
    if record.get("stage"):
        line += f", stage {record['stage']} ({100 * float(record.get('stage_progress') or 0):.0f}%)"
    print(line + f", overall {100 * float(record.get('progress') or 0):.0f}%")
    info = {k: v for k, v in (record.get("info") or {}).items() if not isinstance(v, (dict, list))}
    if info:
        print("  " + ", ".join(f"{k} {v}" for k, v in info.items()))
    timings = {k: v for k, v in (record.get("timings") or {}).items() if isinstance(v, (int, float))}
    if timings:
        print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    if record.get("reason"):
        print(f"  error (stage {record.get('failed_stage')}): {record['reason']}")
    for note in record.get("errors") or []:
        if note != record.get("reason"):
            print(f"  note: {note}")
    for note in (record.get("summary") or {}).get("warnings") or []:
        print(f"  warning: {note}")
    if record.get("run_dir"):
        print(f"  run dir: {record['run_dir']}")


def main(args) -> int:
    while True:
        record = _find(args)
        if not args.wait or record.get("state") in ("finished", "failed"):
            break
        time.sleep(args.interval)
    if args.json:
        print(json.dumps(record, default=str))
    else:
        _print(record, args.job)
    return 0
