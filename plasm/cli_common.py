"""Shared by the ``python -m plasm`` commands: the user-error type and exit codes, environment defaults, Redis."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["CLIError", "DEFAULT_TEACHER", "EXIT_RUN_FAILED", "EXIT_USER_ERROR", "connect_redis", "env",
           "model_dir", "resolve_teacher", "safe_url"]

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1
DEFAULT_TEACHER = "minilm-l6"


class CLIError(Exception):
    """A one-line, user-facing error (exit code 2)."""


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def model_dir(args) -> Path:
    return Path(args.model_dir or env("MODEL_DIR", "./data/models")).expanduser().resolve()


def connect_redis(url: str):
    """A connected Redis client, or CLIError naming the URL (without any password)."""
    if not url:
        raise CLIError("no Redis URL: set REDIS_URL or pass --redis-url (or use --sync to run in this process)")
    from redis.exceptions import RedisError

    from albackend.redisconn import connect

    safe = safe_url(url)
    try:
        conn = connect(url, 5.0)
        conn.ping()
    except (RedisError, ValueError, OSError) as exc:
        raise CLIError(f"cannot reach Redis at {safe}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                       .rstrip(": ")) from None
    return conn


def safe_url(url: str) -> str:
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
    acq = env("ACQUISITION_MODEL")
    if acq:
        try:
            from albackend.models.registry import resolve_model

            meta = json.loads((Path(resolve_model(acq)) / "albackend.json").read_text())
            if isinstance(meta.get("teacher"), str) and meta["teacher"]:
                return meta["teacher"]
        except Exception:  # noqa: BLE001 - no metadata: the default teacher
            pass
    return DEFAULT_TEACHER
