"""Prometheus metrics aggregated over every gunicorn worker (prometheus_client multiprocess mode).

Each worker process counts its own requests; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it
before forking the workers) every worker writes its values to files there and /metrics sums them, so a
scrape sees all traffic whichever worker answers it. Without it (Flask's test client, `python _wsgi.py`) the
process's own registry is served.

Figures that no process counts (the projects' dashboard figures) come in as an ``extra`` collector that reads
them at scrape time (`albackend.adapters.dashboard.ProjectFigures`), so every worker serves the same values.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess
from prometheus_client.registry import Collector

from albackend.settings import prometheus_multiproc_dir

REQUESTS = Counter("albackend_http_requests_total", "HTTP responses by endpoint and status", ["endpoint", "status"])
LATENCY = Histogram("albackend_http_request_seconds", "HTTP reply time by endpoint", ["endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
JOBS = Counter("albackend_training_jobs_submitted_total", "Training job submissions by outcome", ["outcome"])


def observe(endpoint: str, seconds: float, status: int) -> None:
    REQUESTS.labels(endpoint, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def render(extra: Collector | None = None) -> tuple[bytes, str]:
    """(body, content type) of the text exposition format, summed over worker processes when multiprocess, with
    the metrics of ``extra`` (read at scrape time) appended."""
    if prometheus_multiproc_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if extra is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(extra)
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST
