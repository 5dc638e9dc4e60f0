"""The dashboard's plots: matplotlib figures rendered server-side to inline SVG (text as paths, no external fonts,
scripts or stylesheets), so the page works offline and behind any proxy.

Figures are built with `matplotlib.figure.Figure` directly, not pyplot: no global figure registry and no
process-wide backend switch (the SVG canvas renders headless, as Agg does). Rendering costs 0.1-0.6 s a plot, so
each SVG is cached by a hash of the data it shows, in memory and as a file in the project's directory
(``dashboard/``) that every worker process shares: an unchanged project is served from the cache, and one new
annotation re-renders only the plots that show it. One lock serialises rendering (matplotlib's text layout is not
thread-safe).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from albackend.services.store import atomic_write_text

_CACHE: OrderedDict[str, str] = OrderedDict()
_CACHE_SIZE = 128  # ~6 plots per project, 20-100 KB each
_LOCK = threading.Lock()
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)  # RDF boilerplate, nothing a browser shows
COLORS = {"accuracy": "#1f77b4", "macro_f1": "#ff7f0e", "precision": "#2ca02c", "recall": "#d62728",
          "f1": "#1f77b4", "kappa": "#9467bd", "uncertainty": "#8c564b"}


class Plots:
    """The plots of one project's page, cached in memory and in ``directory`` (shared by every gunicorn worker
    and kept across restarts: a plot is rendered once per change of its data, not once per process)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def svg(self, name: str, data: object, draw: Callable[[Figure, object], None],
            size: tuple[float, float] = (6.4, 2.8)) -> str:
        """The plot ``draw(fig, data)`` as an ``<svg>`` element, rendered only if ``data`` was never drawn."""
        digest = hashlib.sha1(json.dumps([data, size], sort_keys=True, default=str).encode()).hexdigest()[:20]
        path = self.directory / f"{name}-{digest}.svg"
        key = str(path)
        with _LOCK:
            if key not in _CACHE:
                try:
                    _CACHE[key] = path.read_text(encoding="utf-8")
                except OSError:
                    _CACHE[key] = _render(data, draw, size)
                    self._save(name, path, _CACHE[key])
            _CACHE.move_to_end(key)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
            return _CACHE[key]

    def _save(self, name: str, path: Path, text: str) -> None:
        """Keep one file per plot: the new one replaces the plot's earlier renderings."""
        try:
            atomic_write_text(path, text)
            for old in self.directory.glob(f"{name}-*.svg"):
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError:  # a read-only store still serves the page, from memory
            pass


def _render(data: object, draw: Callable[[Figure, object], None], size: tuple[float, float]) -> str:
    fig = Figure(figsize=size, dpi=96, layout="constrained")
    draw(fig, data)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue().decode("utf-8")
    return _METADATA.sub("", text[text.index("<svg"):])  # inline: no XML declaration or doctype


def _style(ax, title: str, ylabel: str = "", integer_x: bool = False) -> None:
    ax.set_title(title, fontsize=10, loc="left")
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def prequential(fig: Figure, data: dict) -> None:
    """Agreement per model version (left) and over the sliding window, annotation by annotation (right)."""
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    its = [c["iteration"] for c in data["curve"]]
    for metric in data["metrics"]:
        left.plot(its, [c[metric] for c in data["curve"]], marker="o", label=metric.replace("_", "-"),
                  color=COLORS.get(metric))
    for c in data["curve"]:
        left.annotate(f"n={c['n']}", (c["iteration"], c[data["metrics"][0]]), textcoords="offset points",
                      xytext=(0, 6), ha="center", fontsize=7)
    left.set_xlabel("model version (iteration)", fontsize=8)
    left.set_xlim(min(its) - 0.5, max(its) + 0.5)
    left.set_ylim(-0.02, 1.1)
    left.legend(fontsize=7, loc="lower right")
    _style(left, "agreement per version", "agreement", integer_x=True)
    values = data["rolling"]
    right.plot(range(1, len(values) + 1), values, color=COLORS["f1"])
    right.set_ylim(-0.02, 1.05)
    right.set_xlabel("annotation", fontsize=8)
    _style(right, f"over the last {data['window']} annotations", integer_x=True)


def labels(fig: Figure, data: dict) -> None:
    ax = fig.subplots()
    names = list(data)
    ax.barh(names[::-1], [data[n] for n in names][::-1], color="#1f77b4", height=0.6)
    for i, n in enumerate(names[::-1]):
        ax.annotate(str(data[n]), (data[n], i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    _style(ax, "gold labels per class")


def pool(fig: Figure, data: dict) -> None:
    ax = fig.subplots()
    edges = data["edges"]
    mids = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    width = edges[1] - edges[0]
    ax.bar(mids, data["current"], width=width * 0.9, label="scored by the current version", color="#1f77b4")
    ax.bar(mids, data["older"], width=width * 0.9, bottom=data["current"], label="older score (UPS skipped)",
           color="#c7c7c7")
    ax.set_xlabel("score (lower = more uncertain, served first)", fontsize=8)
    ax.legend(fontsize=7)
    _style(ax, "pool uncertainty", "tasks")


def ups(fig: Figure, rows: list) -> None:
    ax = fig.subplots()
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["pool"] for r in rows], width=0.4, label="pool", color="#c7c7c7")
    ax.bar([i + 0.2 for i in x], [r["scored"] for r in rows], width=0.4, label="scored", color="#1f77b4")
    ax.bar([i + 0.2 for i in x], [r["new"] for r in rows], width=0.4, label="of them new tasks", color="#ff7f0e")
    ax.set_xticks(list(x), [f"{r['iteration']}{' full' if r['full_pool'] else ''}" for r in rows])
    ax.set_xlim(-0.8, len(rows) - 0.2)
    ax.set_xlabel("iteration", fontsize=8)
    ax.legend(fontsize=7)
    _style(ax, "rescoring per iteration (UPS)", "tasks")


def stopping(fig: Figure, data: dict) -> None:
    """Kappa between consecutive versions and the stop set's mean normalized entropy, with their thresholds."""
    left, right = fig.subplots(1, 2)
    rows = data["history"]
    kappa = [(r["iteration"], r["kappa"]) for r in rows if r.get("kappa") is not None]
    left.plot([i for i, _ in kappa], [k for _, k in kappa], marker="o", color=COLORS["kappa"])
    left.axhline(data["kappa_threshold"], ls="--", color="grey", lw=1)
    left.set_ylim(min([0.0] + [k for _, k in kappa]) - 0.05, 1.05)
    _style(left, "κ with the previous version", "Cohen's κ")
    unc = [(r["iteration"], r["uncertainty"]) for r in rows if r.get("uncertainty") is not None]
    right.plot([i for i, _ in unc], [u for _, u in unc], marker="o", color=COLORS["uncertainty"])
    right.axhline(data["uncertainty_threshold"], ls="--", color="grey", lw=1)
    right.set_ylim(0.0, 1.05)
    _style(right, "stop-set uncertainty", "normalized entropy")
    its = [r["iteration"] for r in rows]
    for ax in (left, right):
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_xlim(min(its) - 0.5, max(its) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def timeline(fig: Figure, data: dict) -> None:
    """Seconds per stage of the recent jobs, newest on top."""
    ax = fig.subplots()
    rows = data["rows"]
    stages = [s for s in data["stages"] if any(s in r["stages"] for r in rows)]
    left = [0.0] * len(rows)
    for stage in stages:
        widths = [r["stages"].get(stage, 0.0) for r in rows]
        ax.barh([r["label"] for r in rows], widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds", fontsize=8)
    fig.legend(fontsize=7, loc="outside right upper")
    _style(ax, "job stages")
