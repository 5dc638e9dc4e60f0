"""Prometheus metrics aggregated over every gunicorn worker (prometheus_client multiprocess mode).

Each worker process counts its own requests; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it
before forking the workers) every worker writes its values to files there and /metrics sums them, so a
scrape sees all traffic whichever worker answers it. Without it (Flask's test client, `python _wsgi.py`) the
process's own registry is served.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

from albackend.settings import prometheus_multiproc_dir

REQUESTS = Counter("albackend_http_requests_total", "HTTP responses by endpoint and status", ["endpoint", "status"])
LATENCY = Histogram("albackend_http_request_seconds", "HTTP reply time by endpoint", ["endpoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
JOBS = Counter("albackend_training_jobs_submitted_total", "Training job submissions by outcome", ["outcome"])


def observe(endpoint: str, seconds: float, status: int) -> None:
    REQUESTS.labels(endpoint, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def render() -> tuple[bytes, str]:
    """(body, content type) of the text exposition format, summed over worker processes when multiprocess."""
    if prometheus_multiproc_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
