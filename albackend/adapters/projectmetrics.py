"""The projects' dashboard figures as Prometheus gauges for /metrics, read from the model store at scrape time
(`albackend.services.insights`, the dashboard's source): no process counts them, so every gunicorn worker serves
the same values. `albackend.adapters.prommetrics.render` appends them to the counted metrics.
"""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from albackend.algorithms.stopping import CONSIDER, STOP
from albackend.services.insights import project_figures
from albackend.services.store import ModelStore
from albackend.settings import Settings

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
