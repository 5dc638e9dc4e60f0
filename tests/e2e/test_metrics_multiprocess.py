"""/metrics under gunicorn with two workers: Prometheus counters are summed over the workers, so every scrape
sees all the traffic, whichever worker answers it (the JSON /status view is per worker)."""
from __future__ import annotations

import re

import requests

from tests.support import services


def _count(text: str) -> float:
    m = re.search(r'^albackend_http_requests_total\{endpoint="/health",status="200"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_aggregate_over_gunicorn_workers(tmp_path):
    env = {"MODEL_DIR": str(tmp_path / "m"), "ACQUISITION_MODEL": "splade-tiny",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    web = services.start_gunicorn(env, workers=2, threads=4, log_dir=tmp_path / "logs")
    try:
        base = _count(requests.get(web.url + "/metrics", timeout=10).text)
        for _ in range(60):  # new connections: the kernel spreads them over both workers
            requests.get(web.url + "/health", timeout=10, headers={"Connection": "close"})
        counts = [_count(requests.get(web.url + "/metrics", timeout=10, headers={"Connection": "close"}).text)
                  for _ in range(6)]
        assert all(c >= base + 60 for c in counts), (base, counts)
        assert len(list((tmp_path / "prom").glob("*.db"))) >= 2  # both workers wrote their values
    finally:
        web.stop()
