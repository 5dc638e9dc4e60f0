"""Stopping criteria in the emulation: the backend's signals, computed on the emulation's own pool and predictions
through the same functions (`albackend.algorithms.stopping`, `albackend.algorithms.prequential`), and the
iteration at which each criterion fires against where the test-set curve plateaus.

Per iteration ``it`` (model ``it`` just trained on the labeled set):

- ``stop_kappa``: Cohen's kappa between models ``it - 1`` and ``it`` on a fixed seeded sample of the pool drawn
  from the items unlabeled at the start (the stop set), ``stop_uncertainty``: model ``it``'s mean normalized
  entropy there;
- ``prequential``: model ``it``'s agreement with the gold labels of the query it selects (what the annotators
  label next; accuracy or strict span F1). In the live backend these annotations arrive before the next retrain,
  so the plateau criterion at iteration ``it`` sees the prequential values of models ``0 .. it - 1``.
"""
from __future__ import annotations

import math
import time

import numpy as np

from albackend.algorithms.prequential import headline, label_scores, span_scores
from albackend.algorithms.stopping import (CONSIDER, STOP, curve_plateau, item_labels, kappa_average,
                                           normalized_entropy, overall_uncertainty, paired_kappa, plateau_index,
                                           recommend, stabilizing_predictions, stop_sample)
from bench.emulation.data import Dataset
from bench.emulation.learners import Learner

CRITERIA = ("stabilizing predictions", "kappa average (small-text)", "overall uncertainty", "prequential plateau",
            "advice: consider stopping", "advice: stop")


class StopSignals:
    """The stop set of one AL run and the signals of each iteration's model."""

    def __init__(self, ds: Dataset, labeled: np.ndarray, size: int, seed: int):
        self.ds = ds
        pool = np.setdiff1d(np.arange(len(ds.pool)), labeled)
        self.sample = stop_sample(pool, size, seed).tolist()
        self.previous: dict[int, np.ndarray] | None = None

    def observe(self, acq: Learner) -> dict:
        """Kappa with the previous model and the mean normalized entropy on the stop set."""
        t0 = time.perf_counter()
        spec = self.ds.spec
        preds = acq.predict([self.ds.pool.examples[i].text for i in self.sample])
        labels = dict(zip(self.sample, item_labels(preds.probs, spec.kind, spec.multi_label)))
        kappa = paired_kappa(self.previous, labels) if self.previous is not None else None
        self.previous = labels
        entropy = normalized_entropy(preds.probs, spec.kind, spec.multi_label)
        return {"stop_kappa": kappa, "stop_uncertainty": float(entropy.mean()) if len(entropy) else None,
                "stop_s": time.perf_counter() - t0}

    def prequential(self, acq: Learner, query: np.ndarray) -> dict:
        """The model's agreement with the gold labels of the query it selected."""
        examples = [self.ds.pool.examples[i] for i in query]
        pred = acq.predict_targets([e.text for e in examples])
        if self.ds.kind == "classification":
            figures = label_scores([[int(p)] for p in pred], [list(e.label_ids[:1]) for e in examples])
        else:
            figures = span_scores([[tuple(s[:3]) for s in p] for p in pred], [[tuple(s) for s in e.spans]
                                                                               for e in examples])
        return {"prequential": headline(self.ds.kind, figures), "prequential_n": len(examples)}


def fired_at(rows: list[dict], st: dict) -> dict[str, int | None]:
    """First iteration at which each criterion (and the combined advice) fires in one run's records."""
    window, kappa_t = st.get("stop_window", 3), st.get("stop_kappa", 0.99)
    out: dict[str, int | None] = dict.fromkeys(CRITERIA)
    for i, r in enumerate(rows):
        kappas = [x["stop_kappa"] for x in rows[: i + 1] if x.get("stop_kappa") is not None]
        known = [x["prequential"] for x in rows[:i] if x.get("prequential") is not None]
        main = [stabilizing_predictions(kappas, window, kappa_t),
                overall_uncertainty(r.get("stop_uncertainty"), st.get("stop_uncertainty", 0.05)),
                curve_plateau(known, window, st.get("stop_min_gain", 0.01))]
        decision = recommend(main)["decision"]
        now = {c.name: c.fired for c in main}
        now["kappa average (small-text)"] = kappa_average(kappas, window, kappa_t).fired
        now["advice: consider stopping"] = decision in (CONSIDER, STOP)
        now["advice: stop"] = decision == STOP
        for name, fired in now.items():
            if fired and out[name] is None:
                out[name] = r["iteration"]
    return out


def _runs(records: list[dict], config: str) -> dict[int, list[dict]]:
    runs: dict[int, list[dict]] = {}
    for r in sorted((r for r in records if r["config"] == config), key=lambda r: (r["seed"], r["iteration"])):
        runs.setdefault(r["seed"], []).append(r)
    return runs


def near_best_iteration(rows: list[dict], gain: float) -> int:
    """The first iteration whose test metric is within ``gain`` of the run's best: where stopping lost < gain."""
    best = max(r["metric"] for r in rows)
    return next(r["iteration"] for r in rows if r["metric"] >= best - gain)


def _cell(its: list[int | None]) -> str:
    return " / ".join("–" if i is None else str(i) for i in its)


def _mean(values: list[float]) -> str:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return f"{np.mean(v):.3f}" if v else "–"


def stopping_markdown(records: list[dict], names: list[str], st: dict) -> list[str]:
    """The report section: per configuration, where each criterion fires vs where the test curve plateaus."""
    names = [n for n in names if any(r.get("stop_uncertainty") is not None for r in records if r["config"] == n)]
    if not names:
        return []
    gain = st.get("stop_min_gain", 0.01)
    lines = ["", "## Stopping criteria vs the test curve", "",
             f"Iteration at which each criterion first fires, per seed (– = not within the run), the mean test metric "
             f"there, against the test curve's plateau (first iteration gaining < {gain:g} over the previous one) and "
             f"the first iteration within {gain:g} of the run's best test metric (labels after it bought less). "
             f"Settings: window {st.get('stop_window', 3)}, κ ≥ {st.get('stop_kappa', 0.99):g}, normalized entropy "
             f"< {st.get('stop_uncertainty', 0.05):g}, prequential gain < {gain:g}, stop set "
             f"{st.get('stop_sample', 1000)} pool items. Advice: consider = one of the three criteria "
             "(stabilizing predictions, overall uncertainty, prequential plateau), stop = two.", "",
             "| configuration | criterion | fires at (per seed) | test metric there | test plateau at | "
             f"test metric at plateau | best test metric | within {gain:g} of the best at |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        runs = _runs(records, name)
        plateau = {s: plateau_index([r["metric"] for r in rows], 1, gain) for s, rows in runs.items()}
        at_plateau = _mean([rows[plateau[s]]["metric"] for s, rows in runs.items() if plateau[s] is not None])
        best = _mean([max(r["metric"] for r in rows) for rows in runs.values()])
        near_best = [near_best_iteration(rows, gain) for rows in runs.values()]
        fired = {s: fired_at(rows, st) for s, rows in runs.items()}
        for criterion in CRITERIA:
            its = [fired[s][criterion] for s in runs]
            there = _mean([next(r["metric"] for r in runs[s] if r["iteration"] == fired[s][criterion])
                           for s in runs if fired[s][criterion] is not None])
            lines.append(f"| {name} | {criterion} | {_cell(its)} | {there} | {_cell(list(plateau.values()))} | "
                         f"{at_plateau} | {best} | {_cell(near_best)} |")
    lines += ["", "Per iteration (mean over seeds): κ with the previous model, stop-set entropy, prequential "
              "agreement of the model on its own query.", "",
              "| configuration | iteration | κ | entropy | prequential | test metric |", "|---|---|---|---|---|---|"]
    for name in names:
        for it in sorted({r["iteration"] for r in records if r["config"] == name}):
            rs = [r for r in records if r["config"] == name and r["iteration"] == it]
            lines.append(f"| {name} | {it} | {_mean([r.get('stop_kappa') for r in rs])} | "
                         f"{_mean([r.get('stop_uncertainty') for r in rs])} | "
                         f"{_mean([r.get('prequential') for r in rs])} | {_mean([r['metric'] for r in rs])} |")
    return lines
