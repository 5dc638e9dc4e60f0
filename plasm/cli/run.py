"""``python -m plasm run``: check the source, the options and the model names, then enqueue the run on RQ or
execute it here with a progress bar (``--sync``).

Everything a user can get wrong (model names, source, credentials, project id, options) is checked before the
run is handed over; model names first, by :func:`plasm.cli.options.precheck` before torch is imported.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from rq import Queue
from tqdm.auto import tqdm

from albackend import settings
from albackend.domain.labelconfig import TaskSpec
from albackend.adapters.lsclient import LabelStudioClient
from albackend.models.runtime import configure_runtime
from albackend.services.store import ModelStore
from albackend.services.training import save_connection
from plasm import job as plasm_job
from plasm import runs, sources
from plasm.cli.common import EXIT_RUN_FAILED, CLIError, connect_redis, model_dir, queue_name, safe_url
from plasm.cli.options import run_options
from plasm.config import PlasmConfig, validate_config
from plasm.pipeline import is_complete
from plasm.sources import PlasmData
from plasm.successors.hf import default_train_config

TRAIN_FLAGS = ("epochs", "min_steps", "max_steps", "lr", "batch_size")
TRAIN_CONFIGS = ("teacher_train", "successor_train", "tracin_train")


# ================================================================================================ options
def _config(args, spec: TaskSpec) -> PlasmConfig:
    """The run's config for the task; fully validated (model names included)."""
    base = run_options(args)
    train = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if train:
        for key in TRAIN_CONFIGS:
            current = base.get(key) or dataclasses.asdict(default_train_config(spec.kind))
            base[key] = {**current, **train}
    cfg = PlasmConfig.from_dict(base)
    validate_config(cfg, spec)
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
    url = args.ls_url or settings.env("LABEL_STUDIO_URL")
    token = args.ls_token or settings.env("LABEL_STUDIO_API_KEY")
    if not url:
        raise CLIError("no Label Studio URL: pass --ls-url or set LABEL_STUDIO_URL")
    if not token:
        raise CLIError("no Label Studio token: pass --ls-token or set LABEL_STUDIO_API_KEY")
    return url, token


def _load(args) -> PlasmData:
    """Read the source now (in the CLI), so a bad project id / token / file fails here with a clear message."""
    if args.export:
        data = sources.from_export(args.export, args.label_config, max_chars=args.max_chars)
    else:
        data = sources.from_project(LabelStudioClient(*_ls_credentials(args)), args.project, max_chars=args.max_chars)
    if len(data.gold) < 2:
        reasons = "; ".join(sorted({s.reason for s in data.skipped})[:3])
        raise CLIError(f"PLASM needs at least 2 usable annotated tasks, found {len(data.gold)}"
                       + (f" ({len(data.skipped)} skipped: {reasons})" if data.skipped else ""))
    return data


def _source(args, data: PlasmData, run_dir: Path) -> dict:
    """params["source"]: an export is copied into the run dir; a project's token goes to its connection file."""
    if args.export:
        inputs = run_dir / "input"
        inputs.mkdir(exist_ok=True)
        export_copy, config_copy = inputs / "export.json", inputs / "label_config.xml"
        shutil.copyfile(args.export, export_copy)
        config_copy.write_text(data.label_config, encoding="utf-8")
        return {"kind": "export", "export": str(export_copy), "label_config": str(config_copy),
                "original_export": str(Path(args.export).resolve())}
    url, token = _ls_credentials(args)
    save_connection(ModelStore(model_dir(args)), str(args.project), url, token)
    return {"kind": "project", "project": str(args.project), "url": url}


# ================================================================================================ hand-off
def enqueue(params: dict, cfg: PlasmConfig, data: PlasmData, conn, args) -> int:
    """Enqueue ``plasm.job.plasm_job`` (job id = run id), write the queued status.json, print the job id."""
    run_id, run_dir, queue = params["run_id"], Path(params["run_dir"]), queue_name(args)
    project = params["source"].get("project")
    meta = {**runs.new_record(run_id, run_dir, project), "queue": queue}
    try:
        Queue(queue, connection=conn).enqueue_call(
            runs.JOB_FUNC, args=(params,), job_id=run_id, timeout=args.timeout, result_ttl=7 * 86400,
            failure_ttl=30 * 86400, meta=meta, description=f"PLASM {cfg.teacher} -> {cfg.successor} ({cfg.filter})")
    except Exception as exc:  # noqa: BLE001 - any Redis/RQ failure is one line for the user
        raise CLIError(f"cannot enqueue on Redis at {safe_url(args.redis_url or settings.env('REDIS_URL'))}: "
                       f"{type(exc).__name__}: {exc}") from None
    runs.write_status(run_dir, meta)
    if args.json:
        print(json.dumps({"job_id": run_id, "run_dir": str(run_dir), "queue": queue, "data": data.summary()}))
    else:
        print(run_id)
        print(f"queued on {queue!r}: gold {len(data.gold)}, pool {len(data.pool_texts)}; run dir {run_dir}\n"
              f"follow it with: python -m plasm status {run_id}", file=sys.stderr)
    return 0


class _Bar:
    """The --sync progress bar: one line per stage, throttled to 5 updates a second."""

    def __init__(self) -> None:
        self.bar = tqdm(total=100, desc="load", unit="%", file=sys.stderr,
                        bar_format="{desc:<14} {percentage:3.0f}%|{bar}| {elapsed} {postfix}")
        self.stage, self.t = None, 0.0

    def __call__(self, stage: str, fraction: float, info: dict) -> None:
        now, changed = time.monotonic(), stage != self.stage
        if not changed and now - self.t < 0.2 and fraction < 1.0:
            return
        self.stage, self.t = stage, now
        if changed:
            self.bar.set_description_str(stage, refresh=False)
            self.bar.set_postfix_str("", refresh=False)
        target = int(round(100 * fraction))
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)
        post = {k: info[k] for k in ("step", "steps", "loss", "q", "kept") if k in info}
        if post:
            self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()


def run_sync(params: dict, args) -> int:
    """Execute the job here (progress bar on stderr); 0, or EXIT_RUN_FAILED with one ``error:`` line."""
    bar = _Bar()
    reporter = plasm_job.Reporter(params["run_id"], Path(params["run_dir"]), job=None, echo=bar,
                                  project=params["source"].get("project"))
    try:
        summary = plasm_job.execute(params, reporter)
    except KeyboardInterrupt:
        bar.bar.close()
        print(f"error: interrupted; run {params['run_id']} marked failed in {params['run_dir']}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the job recorded (and logged) it; show it on one line
        bar.bar.close()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: PLASM run failed in stage {reporter.state.get('failed_stage')}: {type(exc).__name__}: {first}",
              file=sys.stderr)
        return EXIT_RUN_FAILED
    bar.bar.close()
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
    for note in summary.get("warnings") or []:
        print(f"  warning: {note}")


# ================================================================================================ command
def _run_dir(args, run_id: str) -> Path:
    run_dir = Path(args.out).expanduser().resolve() if args.out else runs.runs_root(model_dir(args)) / run_id
    if is_complete(run_dir):
        raise CLIError(f"{run_dir} already holds a complete PLASM run; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def main(args) -> int:
    configure_runtime()
    _check_source_args(args)  # the model names were checked before this module was imported (cli.options)
    conn = None if args.sync else connect_redis(args.redis_url or settings.env("REDIS_URL"))
    data = _load(args)
    cfg = _config(args, data.spec)
    run_id = runs.new_run_id()
    run_dir = _run_dir(args, run_id)
    params = {"run_id": run_id, "run_dir": str(run_dir), "model_dir": str(model_dir(args)), "config": cfg.to_dict(),
              "push": bool(args.push), "max_chars": args.max_chars, "source": _source(args, data, run_dir)}
    if args.sync:
        return run_sync(params, args)
    return enqueue(params, cfg, data, conn, args)
