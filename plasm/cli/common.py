"""Shared by the ``python -m plasm`` commands: the user-error type and exit codes, defaults, Redis."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import RedisError

from albackend import settings
from albackend.adapters.redisconn import connect
from albackend.models.registry import META_FILE, ModelNotFound, resolve_model
from plasm.errors import PlasmError

__all__ = ["CLIError", "DEFAULT_TEACHER", "EXIT_RUN_FAILED", "EXIT_USER_ERROR", "connect_redis", "model_dir",
           "queue_name", "resolve_teacher", "safe_url"]

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1
DEFAULT_TEACHER = "minilm-l6"


class CLIError(PlasmError):
    """A one-line, user-facing error (exit code 2)."""


def model_dir(args) -> Path:
    return Path(args.model_dir or settings.env("MODEL_DIR")).expanduser().resolve()


def queue_name(args) -> str:
    return args.queue or settings.env("RQ_QUEUE") or "albackend"


def connect_redis(url: str) -> Redis:
    """A connected Redis client, or CLIError naming the URL (without any password)."""
    if not url:
        raise CLIError("no Redis URL: set REDIS_URL or pass --redis-url (or use --sync to run in this process)")
    try:
        conn = connect(url, 5.0)
        conn.ping()
    except (RedisError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CLIError(f"cannot reach Redis at {safe_url(url)}: {type(exc).__name__}: {first}".rstrip(": ")) from None
    return conn


def safe_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
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
    acquisition = settings.env("ACQUISITION_MODEL")
    try:
        meta = json.loads((Path(resolve_model(acquisition)) / META_FILE).read_text())
    except (ModelNotFound, OSError, ValueError):  # no metadata: the default teacher
        return DEFAULT_TEACHER
    teacher = meta.get("teacher") if isinstance(meta, dict) else None
    return teacher if isinstance(teacher, str) and teacher else DEFAULT_TEACHER
