"""``python -m plasm list``: recent PLASM runs with their state (RQ's registries and the local run directories)."""

from __future__ import annotations

import json
import sys

from albackend import settings
from plasm import runs
from plasm.cli.common import CLIError, connect_redis, model_dir, queue_name
from plasm.cli.status import when


def main(args) -> int:
    redis_url = args.redis_url or settings.env("REDIS_URL")
    note = None
    if redis_url:
        try:
            connect_redis(redis_url)
        except CLIError as exc:
            if args.redis_url:
                raise
            note, redis_url = str(exc), None
    records = runs.list_jobs(redis_url=redis_url, queue=queue_name(args), model_dir=model_dir(args),
                             limit=args.limit)
    if args.json:
        print(json.dumps(records, default=str))
        return 0
    if note:
        print(f"note: {note}; showing local run directories only", file=sys.stderr)
    if not records:
        print("no PLASM jobs")
        return 0
    print(f"{'job':<36} {'state':<9} {'stage':<13} {'progress':>8}  queued/started")
    for r in records:
        print(f"{r.get('run_id', '?'):<36} {str(r.get('state')):<9} {str(r.get('stage') or '-'):<13} "
              f"{100 * float(r.get('progress') or 0):7.0f}%  {when(r.get('queued_at') or r.get('started_at'))}")
    return 0
