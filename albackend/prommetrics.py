"""Prometheus metrics aggregated over every gunicorn worker (prometheus_client multiprocess mode).

Each worker process counts its own requests; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it
before forking the workers) every worker writes its values to files there and /metrics sums them, so a
scrape sees all traffic whichever worker answers it. Without it (Flask's test client, `python _wsgi.py`) the
process's own registry is served.

The projects' figures (prequential agreement, stopping criteria, pool, UPS, gold labels) are not counted by any
process: `ProjectFigures` reads them from the model store at scrape time (`albackend.insights`, the dashboard's
source), so every worker serves the same values.
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from albackend.algorithms.stopping import CONSIDER, STOP
from albackend.insights import project_figures
from albackend.settings import Settings, prometheus_multiproc_dir
from albackend.store import ModelStore

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


_DECISION = {STOP: 2, CONSIDER: 1}


class ProjectFigures(Collector):
    """Gauges of every project's dashboard figures, labelled by project."""

    def __init__(self, settings: Settings, store: ModelStore):
        self.settings, self.store = settings, store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = {name: GaugeMetricFamily(f"albackend_{name}", doc, labels=["project", *extra]) for name, doc, extra in (
            ("iteration", "Iteration of the project's current model version", ()),
            ("prequential_agreement", "Agreement of shown predictions with the annotations that followed, over the "
                                      "last QUALITY_WINDOW annotations (accuracy/macro_f1, or span precision/recall/f1)",
             ("metric",)),
            ("prequential_version_agreement", "Headline agreement (accuracy, or span F1) of each model version",
             ("iteration",)),
            ("prequential_annotations", "Annotations judged against a prediction of this backend", ()),
            ("stopping_decision", "Stopping advice: 0 continue, 1 consider stopping, 2 stop", ()),
            ("stopping_criterion_met", "Whether a stopping criterion is met (1) or not (0)", ("criterion",)),
            ("stopping_kappa", "Cohen's kappa between the last two versions on the stop set", ()),
            ("stopping_uncertainty", "Mean normalized entropy of the current version on the stop set", ()),
            ("pool_tasks", "Pool tasks in the score cache, by whether the current version scored them", ("scored_by",)),
            ("ups_last_round", "The last retrain's rescoring: pool, scored, new and skipped tasks", ("figure",)),
            ("gold_labels", "Gold labels per class used by the last retrain", ("label",)))}
        for project in self.store.all_projects():
            _project_gauges(g, project, project_figures(self.settings, self.store, project))
        yield from g.values()


def _project_gauges(g: dict[str, GaugeMetricFamily], p: str, fig: dict) -> None:
    q, stop = fig["quality"], fig["stopping"]
    if fig["iteration"] is not None:
        g["iteration"].add_metric([p], fig["iteration"])
    for metric in ("accuracy", "macro_f1", "precision", "recall", "f1", "exact"):
        if q["window"].get(metric) is not None:
            g["prequential_agreement"].add_metric([p, metric], q["window"][metric])
    for c in q["curve"][-10:]:
        g["prequential_version_agreement"].add_metric([p, str(c["iteration"])], c.get("accuracy", c.get("f1")))
    g["prequential_annotations"].add_metric([p], q["n"])
    rec = stop["recommendation"]
    g["stopping_decision"].add_metric([p], _DECISION.get(rec["decision"], 0))
    for c in rec["criteria"]:
        g["stopping_criterion_met"].add_metric([p, c["name"]], float(c["fired"]))
    last = stop["history"][-1] if stop["history"] else {}
    for name in ("kappa", "uncertainty"):
        if last.get(name) is not None:
            g[f"stopping_{name}"].add_metric([p], last[name])
    pool = fig["pool"]
    g["pool_tasks"].add_metric([p, "current"], pool["by_current"])
    g["pool_tasks"].add_metric([p, "older"], pool["scored"] - pool["by_current"])
    g["pool_tasks"].add_metric([p, "none"], pool["pool"] - pool["scored"])
    for figure in ("pool", "scored", "new", "skipped") if fig["ups"] else ():
        g["ups_last_round"].add_metric([p, figure], fig["ups"][-1][figure])
    for label, n in fig["labels"].items():
        g["gold_labels"].add_metric([p, label], n)
