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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1
DEFAULT_TEACHER = "minilm-l6"


class CLIError(Exception):
    """A one-line, user-facing error (exit code 2)."""


# ================================================================================================ helpers
def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _model_dir(args) -> Path:
    return Path(args.model_dir or _env("MODEL_DIR", "./data/models")).expanduser().resolve()


def _redis(url: str):
    """A connected Redis client, or CLIError naming the URL (without any password)."""
    if not url:
        raise CLIError("no Redis URL: set REDIS_URL or pass --redis-url (or use --sync to run in this process)")
    from redis import Redis
    from redis.exceptions import RedisError

    safe = _safe_url(url)
    try:
        conn = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
        conn.ping()
    except (RedisError, ValueError, OSError) as exc:
        raise CLIError(f"cannot reach Redis at {safe}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                       .rstrip(": ")) from None
    return conn


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return url


def resolve_teacher(name: str | None) -> str:
    """``auto``/empty: the teacher named in ACQUISITION_MODEL's albackend.json (a distilled student), else minilm-l6."""
    if name and name != "auto":
        return name
    acq = _env("ACQUISITION_MODEL")
    if acq:
        try:
            from albackend.models.registry import resolve_model

            meta = json.loads((Path(resolve_model(acq)) / "albackend.json").read_text())
            if isinstance(meta.get("teacher"), str) and meta["teacher"]:
                return meta["teacher"]
        except Exception:  # noqa: BLE001 - no metadata: the default teacher
            pass
    return DEFAULT_TEACHER


# ================================================================================================ run
def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run PLASM (enqueue on RQ, or --sync here)",
                       description="Teacher -> pseudo-labels -> filters -> successor, on a project or an export.")
    src = p.add_argument_group("data source (one of)")
    src.add_argument("--project", help="Label Studio project id")
    src.add_argument("--ls-url", help="Label Studio URL (default: LABEL_STUDIO_URL)")
    src.add_argument("--ls-token", help="Label Studio legacy API token (default: LABEL_STUDIO_API_KEY; never logged)")
    src.add_argument("--export", help="Label Studio JSON export file")
    src.add_argument("--label-config", help="label config XML file for --export (default: <export>.xml or "
                                            "label_config.xml next to it)")
    src.add_argument("--max-chars", type=int, default=int(_env("MAX_TEXT_CHARS", "100000") or 100000))
    m = p.add_argument_group("models and filters")
    m.add_argument("--teacher", default="auto", help="teacher model: packaged name (minilm-l6, splade-tiny, mpnet), "
                                                     "local HF dir or hub id; auto = ACQUISITION_MODEL's teacher "
                                                     f"or {DEFAULT_TEACHER}")
    m.add_argument("--successor", default="same-as-teacher",
                   help="hf:<model> | cnn | bilstm | classical | same-as-teacher (default)")
    m.add_argument("--filter", default="uncertainty", choices=("uncertainty", "tracin", "both", "none"))
    m.add_argument("--uncertainty-share", type=float, default=None, help="'both': share of 1-q dropped by uncertainty")
    m.add_argument("--dev-fraction", type=float, default=None, help="gold share held out as dev (default 0.1)")
    m.add_argument("--seed", type=int, default=None)
    m.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="default: DEVICE or auto")
    m.add_argument("--max-length", type=int, default=None)
    m.add_argument("--epochs", type=int, default=None, help="training epochs (teacher, HF successor, TracIn model)")
    m.add_argument("--min-steps", type=int, default=None, help="minimum training steps (default 60)")
    m.add_argument("--max-steps", type=int, default=None, help="maximum training steps (0 = none)")
    m.add_argument("--lr", type=float, default=None, help="learning rate of the HF models")
    m.add_argument("--batch-size", type=int, default=None, help="training batch size of the HF models")
    m.add_argument("--tracin-model", default=None, help="auto (successor's encoder if HF, else the teacher's) or a model")
    m.add_argument("--tracin-checkpoints", type=int, default=None)
    m.add_argument("--tracin-params", default=None, choices=("head", "head+last", "all"))
    m.add_argument("--config", help="JSON file of PlasmConfig options (flags win), e.g. {\"classical\": {\"epochs\": 5}}")
    o = p.add_argument_group("execution")
    o.add_argument("--sync", action="store_true", help="run in this process with progress bars")
    o.add_argument("--out", help="run directory (default: MODEL_DIR/plasm/<run id>); must not hold a complete run")
    o.add_argument("--model-dir", help="default: MODEL_DIR or ./data/models")
    o.add_argument("--redis-url", help="default: REDIS_URL")
    o.add_argument("--queue", help="RQ queue (default: RQ_QUEUE or albackend)")
    o.add_argument("--timeout", type=int, default=6 * 3600, help="RQ job timeout in seconds (default 6 h)")
    o.add_argument("--push", action="store_true", help="push the successor's predictions to the LS project as a "
                                                      "new model version (the run id)")
    o.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_run)


def _config_from_args(args, spec):
    from plasm.pipeline import PlasmConfig, PlasmError, validate_config

    base: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise CLIError(f"config file not found: {path}")
        try:
            base = json.loads(path.read_text())
        except ValueError as exc:
            raise CLIError(f"config file {path} is not valid JSON: {exc}") from None
        if not isinstance(base, dict):
            raise CLIError(f"config file {path} must hold a JSON object")
    flags = {"successor": args.successor, "filter": args.filter, "uncertainty_share": args.uncertainty_share,
             "dev_fraction": args.dev_fraction, "seed": args.seed, "max_length": args.max_length,
             "tracin_model": args.tracin_model, "tracin_checkpoints": args.tracin_checkpoints,
             "tracin_params": args.tracin_params}
    base.update({k: v for k, v in flags.items() if v is not None})
    base["teacher"] = resolve_teacher(args.teacher if args.teacher != "auto" else base.get("teacher", "auto"))
    base["device"] = args.device or base.get("device") or _env("DEVICE", "auto") or "auto"
    train = {"epochs": args.epochs, "min_steps": args.min_steps, "max_steps": args.max_steps, "lr": args.lr,
             "batch_size": args.batch_size}
    train = {k: v for k, v in train.items() if v is not None}
    if train:
        from plasm.successors.hf import default_train_config
        import dataclasses

        for key in ("teacher_train", "successor_train", "tracin_train"):
            current = base.get(key)
            if current is None:
                current = dataclasses.asdict(default_train_config(spec.kind))
            base[key] = {**current, **train}
    try:
        cfg = PlasmConfig.from_dict(base)
        validate_config(cfg, spec)
    except (PlasmError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    return cfg


def _check_source_args(args) -> None:
    if bool(args.project) == bool(args.export):
        raise CLIError("give exactly one data source: --project ID or --export FILE")
    if args.export:
        if not Path(args.export).is_file():
            raise CLIError(f"export file not found: {args.export}")
        if args.label_config and not Path(args.label_config).is_file():
            raise CLIError(f"label config file not found: {args.label_config}")
    if args.push and not args.project:
        raise CLIError("--push needs a live project (--project)")


def _ls_credentials(args) -> tuple[str, str]:
    url = args.ls_url or _env("LABEL_STUDIO_URL")
    token = args.ls_token or _env("LABEL_STUDIO_API_KEY")
    if not url:
        raise CLIError("no Label Studio URL: pass --ls-url or set LABEL_STUDIO_URL")
    if not token:
        raise CLIError("no Label Studio token: pass --ls-token or set LABEL_STUDIO_API_KEY")
    return url, token


def _load(args):
    """Read the source now (in the CLI), so a bad project id / token / file fails here with a clear message."""
    from plasm import sources

    if args.export:
        return sources.from_export(args.export, args.label_config, max_chars=args.max_chars)
    from albackend.lsclient import LabelStudioClient, LabelStudioError

    url, token = _ls_credentials(args)
    try:
        client = LabelStudioClient(url, token)
    except LabelStudioError as exc:
        raise CLIError(str(exc)) from None
    return sources.from_project(client, args.project, max_chars=args.max_chars)


def _check_data(data) -> None:
    if len(data.gold) < 2:
        reasons = "; ".join(sorted({s.reason for s in data.skipped})[:3])
        raise CLIError(f"PLASM needs at least 2 usable annotated tasks, found {len(data.gold)}"
                       + (f" ({len(data.skipped)} skipped: {reasons})" if data.skipped else ""))


def cmd_run(args) -> int:
    from plasm import job as plasm_job

    _check_source_args(args)
    redis_url = args.redis_url or _env("REDIS_URL")
    conn = None
    if not args.sync:
        conn = _redis(redis_url)  # fail fast, before any slow step
    data = _load(args)
    _check_data(data)
    cfg = _config_from_args(args, data.spec)
    run_id = plasm_job.new_run_id()
    run_dir = Path(args.out).expanduser().resolve() if args.out else plasm_job.runs_root(_model_dir(args)) / run_id
    from plasm.pipeline import is_complete

    if is_complete(run_dir):
        raise CLIError(f"{run_dir} already holds a complete PLASM run; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    source: dict
    if args.export:
        inputs = run_dir / "input"
        inputs.mkdir(exist_ok=True)
        export_copy = inputs / "export.json"
        shutil.copyfile(args.export, export_copy)
        config_copy = inputs / "label_config.xml"
        config_copy.write_text(data.label_config, encoding="utf-8")
        source = {"kind": "export", "export": str(export_copy), "label_config": str(config_copy),
                  "original_export": str(Path(args.export).resolve())}
    else:
        url, token = _ls_credentials(args)
        source = {"kind": "project", "project": str(args.project), "url": url}
        plasm_job.write_connection(run_dir, url, token)
    params = {"run_id": run_id, "run_dir": str(run_dir), "config": cfg.to_dict(), "push": bool(args.push),
              "max_chars": args.max_chars, "source": source}
    if args.sync:
        return _run_sync(params, data, args)
    from rq import Queue

    queue = args.queue or _env("RQ_QUEUE", "albackend") or "albackend"
    enqueued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta = {"kind": "plasm", "run_id": run_id, "run_dir": str(run_dir), "state": "queued", "stage": None,
            "progress": 0.0, "timings": {}, "errors": [], "enqueued_at": enqueued_at}
    try:
        Queue(queue, connection=conn).enqueue_call(
            plasm_job.JOB_FUNC, args=(params,), job_id=run_id, timeout=args.timeout, result_ttl=7 * 86400,
            failure_ttl=30 * 86400, meta=meta, description=f"PLASM {cfg.teacher} -> {cfg.successor} ({cfg.filter})")
    except Exception as exc:  # noqa: BLE001
        (run_dir / plasm_job.CONNECTION_FILE).unlink(missing_ok=True)
        raise CLIError(f"cannot enqueue on Redis at {_safe_url(redis_url)}: {type(exc).__name__}: {exc}") from None
    from albackend.store import atomic_write_text

    atomic_write_text(run_dir / plasm_job.STATUS_FILE, json.dumps({**meta, "queue": queue}, indent=1))
    if args.json:
        print(json.dumps({"job_id": run_id, "run_dir": str(run_dir), "queue": queue, "data": data.summary()}))
    else:
        print(run_id)
        print(f"queued on {queue!r}: gold {len(data.gold)}, pool {len(data.pool_texts)}; run dir {run_dir}\n"
              f"follow it with: python -m plasm status {run_id}", file=sys.stderr)
    return 0


def _run_sync(params: dict, data, args) -> int:
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

    redis_url = args.redis_url or _env("REDIS_URL")
    record = None
    redis_error = None
    if redis_url:
        try:
            _redis(redis_url)
            record = plasm_job.job_status(args.job, redis_url=redis_url)
        except CLIError as exc:
            redis_error = str(exc)
    if record is None:
        record = plasm_job.job_status(args.job, model_dir=_model_dir(args))
    if record is None:
        where = [f"Redis at {_safe_url(redis_url)}" if redis_url and not redis_error else None,
                 f"{plasm_job.runs_root(_model_dir(args))}"]
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

    redis_url = args.redis_url or _env("REDIS_URL")
    note = None
    if redis_url:
        try:
            _redis(redis_url)
        except CLIError as exc:
            if args.redis_url:
                raise
            note, redis_url = str(exc), None
    queue = args.queue or _env("RQ_QUEUE", "albackend") or "albackend"
    records = plasm_job.list_jobs(redis_url=redis_url, queue=queue, model_dir=_model_dir(args), limit=args.limit)
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
    _add_run(sub)
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
    for module, name in (("plasm.pipeline", "PlasmError"), ("plasm.sources", "SourceError"),
                         ("albackend.models.registry", "ModelNotFound"), ("albackend.lsclient", "LabelStudioError"),
                         ("albackend.labelconfig", "ConfigError")):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            types.append(getattr(mod, name))
    return tuple(types)
