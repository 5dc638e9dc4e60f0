"""``python -m plasm run``: its options, the config and data source they name, and the run's parameters.

Everything a user can get wrong (source, credentials, project id, model names, options) is checked here, before
the run is handed to :mod:`plasm.cli_submit` (enqueued on RQ, or executed in this process with ``--sync``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from plasm.cli_common import DEFAULT_TEACHER, CLIError, connect_redis, env, model_dir, resolve_teacher
from plasm.cli_submit import enqueue, run_sync

__all__ = ["add_run_parser", "cmd_run"]


# ================================================================================================ options
def add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run PLASM (enqueue on RQ, or --sync here)",
                       description="Teacher -> pseudo-labels -> filters -> successor, on a project or an export.")
    src = p.add_argument_group("data source (one of)")
    src.add_argument("--project", help="Label Studio project id")
    src.add_argument("--ls-url", help="Label Studio URL (default: LABEL_STUDIO_URL)")
    src.add_argument("--ls-token", help="Label Studio legacy API token (default: LABEL_STUDIO_API_KEY; never logged)")
    src.add_argument("--export", help="Label Studio JSON export file")
    src.add_argument("--label-config", help="label config XML file for --export (default: <export>.xml or "
                                            "label_config.xml next to it)")
    src.add_argument("--max-chars", type=int, default=int(env("MAX_TEXT_CHARS", "100000") or 100000))
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
    from plasm.config import PlasmConfig, PlasmError, validate_config

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
    base["device"] = args.device or base.get("device") or env("DEVICE", "auto") or "auto"
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


# ================================================================================================ source
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
    url = args.ls_url or env("LABEL_STUDIO_URL")
    token = args.ls_token or env("LABEL_STUDIO_API_KEY")
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


# ================================================================================================ command
def cmd_run(args) -> int:
    from plasm import job as plasm_job

    _check_source_args(args)
    redis_url = args.redis_url or env("REDIS_URL")
    conn = None
    if not args.sync:
        conn = connect_redis(redis_url)  # fail fast, before any slow step
    data = _load(args)
    _check_data(data)
    cfg = _config_from_args(args, data.spec)
    run_id = plasm_job.new_run_id()
    run_dir = Path(args.out).expanduser().resolve() if args.out else plasm_job.runs_root(model_dir(args)) / run_id
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
        return run_sync(params, args)
    return enqueue(params, cfg, data, conn, redis_url, args)
