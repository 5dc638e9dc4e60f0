"""What the CLI checks before it imports a command's module (and torch with it): the options of ``run`` (flags
over ``--config``) and the model names of ``run`` and ``distil``, so a mistyped name fails in about a second."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from albackend import settings
from plasm.cli.common import CLIError, resolve_teacher
from plasm.errors import PlasmConfigError
from plasm.names import check_model_names, resolve_names

RUN_FLAGS = ("successor", "filter", "uncertainty_share", "dev_fraction", "seed", "max_length", "tracin_model",
             "tracin_checkpoints", "tracin_params")


def config_file(args: argparse.Namespace) -> dict:
    """The ``--config`` JSON object ({} without one)."""
    if not args.config:
        return {}
    path = Path(args.config)
    if not path.is_file():
        raise CLIError(f"config file not found: {path}")
    try:
        base = json.loads(path.read_text())
    except ValueError as exc:
        raise CLIError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(base, dict):
        raise CLIError(f"config file {path} must hold a JSON object")
    return base


def run_options(args: argparse.Namespace) -> dict:
    """PlasmConfig fields of ``run`` from --config and the flags (flags win), the training configs aside."""
    base = config_file(args)
    base.update({k: getattr(args, k) for k in RUN_FLAGS if getattr(args, k) is not None})
    base["teacher"] = resolve_teacher(args.teacher if args.teacher != "auto" else base.get("teacher", "auto"))
    base["device"] = args.device or base.get("device") or settings.env("DEVICE")
    return base


def precheck(args: argparse.Namespace) -> None:
    """Model names of ``run`` / ``distil`` (and ``run``'s --config file), before any import of torch."""
    if args.command == "run":
        options = run_options(args)
        for key in ("teacher", "successor", "tracin_model"):
            if key in options and not isinstance(options[key], str):
                raise PlasmConfigError(f"{key} must be a model name, got {options[key]!r}")
        check_model_names(options["teacher"], options.get("successor", "same-as-teacher"), options.get("tracin_model"))
    elif args.command == "distil":
        resolve_names({"teacher": args.teacher})
