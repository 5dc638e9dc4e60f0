"""The one place Redis clients are made: every call bounded by a short timeout, at most one quick retry.

redis-py's defaults (5 s socket timeout, three retries with exponential back-off) turn a frozen Redis into
15 s per call; the web must answer 503 within its budget instead, and a job must notice in seconds.
"""
from __future__ import annotations

import os
import threading

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

DEFAULT_TIMEOUT = 2.0
_clients: dict[tuple[int, str, float], Redis] = {}
_lock = threading.Lock()

__all__ = ["RedisError", "connect", "DEFAULT_TIMEOUT"]


def connect(url: str, timeout: float = DEFAULT_TIMEOUT) -> Redis:
    """A shared client per process, URL and timeout (a fork gets its own: pools are not fork-safe)."""
    key = (os.getpid(), url, float(timeout))
    with _lock:
        client = _clients.get(key)
        if client is None:
            # one immediate retry on a broken pooled connection (Redis restarted), none on a timeout
            client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                                    health_check_interval=30)
            _clients[key] = client
        return client
