"""``python -m plasm``: run | status | list | distil.

    python -m plasm run --export tasks.json --label-config config.xml --successor cnn            # enqueue on RQ
    python -m plasm run --project 3 --ls-url http://ls:8080 --ls-token TOKEN --successor hf:mpnet --sync
    python -m plasm status plasm-20250101-120000-abcd1234 [--json] [--wait]
    python -m plasm list [--json]
    python -m plasm distil --teacher mpnet --out students/mpnet-6l --export tasks.json

Environment (flags win): MODEL_DIR (runs go to MODEL_DIR/plasm/<run id>), REDIS_URL, RQ_QUEUE (default
"albackend"), LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, ACQUISITION_MODEL (``--teacher auto`` uses the teacher
named in its albackend.json, as written by ``plasm distil``), DEVICE.

Errors a user can fix (bad project id or token, unreachable Redis or Label Studio, unknown model name, missing
export or label config, bad options) print one ``error: ...`` line and exit with code 2; a run that fails in
``--sync`` mode exits with code 1 (its reason is in the run's status.json too).

This module holds the parser, ``main`` and the small commands (status, list, distil); ``run`` lives in
:mod:`plasm.cli_run` (options, source, config) and :mod:`plasm.cli_submit` (enqueue or ``--sync``), shared bits in
:mod:`plasm.cli_common`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from plasm.cli_common import (DEFAULT_TEACHER, EXIT_RUN_FAILED, EXIT_USER_ERROR,  # noqa: F401 - re-exported
                              CLIError, connect_redis, env, model_dir, resolve_teacher, safe_url)
from plasm.cli_run import add_run_parser, cmd_run  # noqa: F401 - cmd_run re-exported


# ================================================================================================ status
def _add_status(sub) -> None:
    p = sub.add_parser("status", help="stage, progress, timings and errors of a job")
    p.add_argument("job", help="job id (= run id) printed by 'run'")
    p.add_argument("--redis-url", help="default: REDIS_URL")
    p.add_argument("--model-dir", help="default: MODEL_DIR (run dirs are read when Redis does not know the job)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--wait", action="store_true", help="poll until the job finishes or fails")
    p.add_argument("--interval", type=float, default=2.0)
    p.set_defaults(func=cmd_status)


def _status_once(args) -> dict:
    from plasm import job as plasm_job

    redis_url = args.redis_url or env("REDIS_URL")
    record = None
    redis_error = None
    if redis_url:
        try:
            connect_redis(redis_url)
            record = plasm_job.job_status(args.job, redis_url=redis_url)
        except CLIError as exc:
            redis_error = str(exc)
    if record is None:
        record = plasm_job.job_status(args.job, model_dir=model_dir(args))
    if record is None:
        where = [f"Redis at {safe_url(redis_url)}" if redis_url and not redis_error else None,
                 f"{plasm_job.runs_root(model_dir(args))}"]
        raise CLIError(redis_error or f"no PLASM job {args.job!r} (looked in {' and '.join(w for w in where if w)})")
    return record


def cmd_status(args) -> int:
    while True:
        record = _status_once(args)
        if not args.wait or record.get("state") in ("finished", "failed"):
            break
        time.sleep(args.interval)
    if args.json:
        print(json.dumps(record, default=str))
        return 0
    pct = 100 * float(record.get("progress") or 0)
    line = f"{record.get('run_id', args.job)}: {record.get('state')}"
    if record.get("stage"):
        line += f", stage {record['stage']} ({100 * float(record.get('stage_progress') or 0):.0f}%)"
    print(line + f", overall {pct:.0f}%")
    info = record.get("info") or {}
    if info:
        print("  " + ", ".join(f"{k} {v}" for k, v in info.items() if not isinstance(v, (dict, list))))
    timings = record.get("timings") or {}
    if timings:
        print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if isinstance(v, (int, float))))
    if record.get("error"):
        print(f"  error (stage {record.get('failed_stage')}): {record['error']}")
    for e in record.get("errors") or []:
        if e != record.get("error"):
            print(f"  note: {e}")
    if record.get("run_dir"):
        print(f"  run dir: {record['run_dir']}")
    return 0


# ================================================================================================ list
def _add_list(sub) -> None:
    p = sub.add_parser("list", help="recent PLASM jobs with their state")
    p.add_argument("--redis-url", help="default: REDIS_URL")
    p.add_argument("--queue", help="default: RQ_QUEUE or albackend")
    p.add_argument("--model-dir", help="default: MODEL_DIR")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    from plasm import job as plasm_job

    redis_url = args.redis_url or env("REDIS_URL")
    note = None
    if redis_url:
        try:
            connect_redis(redis_url)
        except CLIError as exc:
            if args.redis_url:
                raise
            note, redis_url = str(exc), None
    queue = args.queue or env("RQ_QUEUE", "albackend") or "albackend"
    records = plasm_job.list_jobs(redis_url=redis_url, queue=queue, model_dir=model_dir(args), limit=args.limit)
    if args.json:
        print(json.dumps(records, default=str))
        return 0
    if note:
        print(f"note: {note}; showing local run directories only", file=sys.stderr)
    if not records:
        print("no PLASM jobs")
        return 0
    print(f"{'job':<36} {'state':<9} {'stage':<13} {'progress':>8}  enqueued/started")
    for r in records:
        print(f"{r.get('run_id', '?'):<36} {str(r.get('state')):<9} {str(r.get('stage') or '-'):<13} "
              f"{100 * float(r.get('progress') or 0):7.0f}%  {r.get('enqueued_at') or r.get('started_at') or ''}")
    return 0


# ================================================================================================ distil
def _add_distil(sub) -> None:
    p = sub.add_parser("distil", help="distil a student acquisition model from a teacher (plasm.distil)")
    try:
        from plasm import distil
    except Exception as exc:  # noqa: BLE001 - missing module or a broken import: say so when it is used
        msg = f"plasm.distil is not available ({type(exc).__name__}: {exc})"
        p.set_defaults(func=lambda args: _unavailable(msg), accept_any=True)  # its options are unknown here
        return
    distil.add_arguments(p)
    p.set_defaults(func=distil.main)


def _unavailable(msg: str) -> int:
    raise CLIError(msg)


# ================================================================================================ main
def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m plasm", description="PLASM: pseudo-labeling for "
                                     "acquisition-successor mismatch (teacher -> pseudo-labels -> successor)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    _add_status(sub)
    _add_list(sub)
    command = next((a for a in (argv or []) if not a.startswith("-")), None)
    if command in (None, "distil") or command not in ("run", "status", "list"):
        _add_distil(sub)  # imports torch: only when it may be the command (or for --help)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accept_any", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - user errors: one line, exit 2; anything else propagates
        if not isinstance(exc, _user_error_types()):
            raise
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_USER_ERROR


def _user_error_types() -> tuple[type, ...]:
    """Error classes of the modules loaded so far (importing them only to catch would slow 'status' down)."""
    types: list[type] = [CLIError]
    for module, name in (("plasm.config", "PlasmError"), ("plasm.sources", "SourceError"),
                         ("albackend.models.registry", "ModelNotFound"), ("albackend.lsclient", "LabelStudioError"),
                         ("albackend.labelconfig", "ConfigError")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            types.append(getattr(mod, name))
    return tuple(types)
