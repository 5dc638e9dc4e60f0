"""The deployment files: the compose worker's own healthcheck, run against a real Redis and RQ worker."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import services

REPO = Path(__file__).resolve().parents[1]


def _healthcheck(service: str) -> list[str]:
    """The service's own healthcheck command (its ``test:`` line is a JSON list) from docker-compose.yml."""
    compose = (REPO / "docker-compose.yml").read_text()
    block = re.search(rf"^  {service}:\n((?:    .*\n|\s*\n)+)", compose, re.M)
    assert block, f"no service {service!r} in docker-compose.yml"
    line = re.search(r"^      test: (\[.*\])$", block.group(1), re.M)
    assert line, f"service {service!r} has no healthcheck of its own"
    test = json.loads(line.group(1))
    assert test[0] == "CMD" and test[1] == "python", test
    return [sys.executable, *test[2:]]  # the image's python is this interpreter here


@pytest.mark.redis
def test_compose_worker_healthcheck_reports_this_hosts_rq_worker(redis_server, tmp_path):
    check = _healthcheck("worker")
    env = services.backend_env({"REDIS_URL": redis_server.url})
    assert subprocess.run(check, env=env, timeout=60).returncode == 1, "no worker yet: unhealthy"
    worker = services.start_rq_worker(redis_server.url, {}, queue="health-check-test", log_dir=tmp_path)
    try:
        assert subprocess.run(check, env=env, timeout=60).returncode == 0
    finally:
        worker.stop(timeout=5)
    assert subprocess.run(check, env=env, timeout=60).returncode == 1, "worker gone: unhealthy"
    dead = services.backend_env({"REDIS_URL": f"redis://127.0.0.1:{services.free_port()}/0"})
    assert subprocess.run(check, env=dead, timeout=60, capture_output=True).returncode != 0, "no Redis: unhealthy"
