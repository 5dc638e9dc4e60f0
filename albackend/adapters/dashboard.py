"""`GET /projects/<id>`: one HTML page per project that answers "how good is the model now, and can we stop
labeling?" — the prequential curve, the stopping advice and its figures, labels per class, the pool's
uncertainty, UPS rounds and the job timeline with live progress.

Self-contained: inline CSS and server-rendered SVG (`albackend.adapters.dashplots`), no script, no external
asset. While a job is queued or running the page reloads itself every few seconds (a meta refresh), which is the
live progress. The route lives in a blueprint that reads the app's shared `AppContext`
(``current_app.extensions["albackend"]``); the app's basic auth and error handlers apply to it as to every route.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from html import escape

from flask import Blueprint, Response, current_app, jsonify

from albackend.adapters import dashplots
from albackend.algorithms.stopping import CONSIDER, STOP
from albackend.services.insights import STAGES, project_figures, summary_line
from albackend.services.store import project_key
from albackend.settings import Settings

REFRESH_S = 5
_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.4em;margin-bottom:.2em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}.advice{padding:.6em 1em;border-radius:6px;
margin:.8em 0}.continue{background:#e8f1fb}.consider{background:#fff4d6}.stop{background:#e3f6e3}
.muted{color:#777}.plot svg{max-width:100%;height:auto}.summary{font-family:monospace;font-size:1.05em}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:0 2em}"""


dashboard = Blueprint("dashboard", __name__)


@dashboard.route("/projects/<project>", methods=["GET"])
def page(project: str):
    ctx = current_app.extensions["albackend"]
    try:
        key = project_key(project)
    except ValueError as exc:
        return jsonify({"error": str(exc)}), 400
    if not ctx.store.project_dir(key).is_dir():
        return jsonify({"error": f"unknown project {key}: no model, job or webhook for it yet"}), 404
    figures = project_figures(ctx.settings, ctx.store, key, ctx.job_queue().reconcile)
    plots = dashplots.Plots(ctx.store.project_dir(key) / "dashboard")
    return Response(render_page(ctx.settings, figures, plots), mimetype="text/html")


def _f(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def _table(header: list[str], rows: list[list[object]]) -> str:
    """Numbers right-aligned, text left-aligned (by the type of the first row's cells)."""
    text = [isinstance(c, str) for c in rows[0]] if rows else [True] * len(header)
    head = "".join(f"<th{' class=l' if t else ''}>{escape(h)}</th>" for h, t in zip(header, text))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if isinstance(c, str) else ''}>{_f(c)}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "–"


def render_page(settings: Settings, fig: dict, plots: dashplots.Plots) -> str:
    live = any(j["state"] in ("queued", "running") for j in fig["jobs"])
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if live else ""
    sections = [_advice(settings, fig, plots), _prequential(fig["quality"], plots),
                f"<div class=pair><div>{_labels(fig, plots)}</div><div>{_pool(fig['pool'], plots)}</div></div>",
                _ups(fig["ups"], plots), _jobs(fig["jobs"], plots)]
    title = f"al-backend · project {escape(fig['project'])}"
    return (f"<!doctype html><html><head><meta charset=utf-8>{refresh}<title>{title}</title>"
            f"<style>{_CSS}</style></head><body><h1>{title}</h1>"
            f"<p>model <code>{_f(fig['model_version'])}</code> · iteration {_f(fig['iteration'])} · "
            f"rendered {_when(time.time())}{' · live: reloads every %d s' % REFRESH_S if live else ''}</p>"
            + "".join(sections) + "</body></html>")


def _advice(settings: Settings, fig: dict, plots: dashplots.Plots) -> str:
    rec = fig["stopping"]["recommendation"]
    css = {STOP: "stop", CONSIDER: "consider"}.get(rec["decision"], "continue")
    rows = [[c["name"], "yes" if c["fired"] else "no", c["value"], c["threshold"], c["detail"]]
            for c in [*rec["criteria"], {**rec["kappa_average"], "name": rec["kappa_average"]["name"] + " †"}]]
    history = fig["stopping"]["history"]
    plot = plots.svg("stopping", {"history": history, "kappa_threshold": settings.stop_kappa,
                                  "uncertainty_threshold": settings.stop_uncertainty}, dashplots.stopping) \
        if history else "<p class=muted>no stop-set scoring yet (it runs after each retrain)</p>"
    return (f"<h2>Can we stop labeling?</h2><div class='advice {css}'><b id=decision>{escape(rec['decision'])}</b>"
            f" — {rec['met']} of {rec['of']} criteria met. {escape(rec['reason'])}</div>"
            f"<p class=summary>{escape(summary_line(fig))}</p>"
            + _table(["criterion", "met", "value", "threshold", "figures"], rows)
            + "<p class=muted>† shown for comparison, not counted: small-text's KappaAverage stops when κ stops "
              "changing, whatever its level.</p>" + f"<div class=plot>{plot}</div>")


def _prequential(q: dict, plots: dashplots.Plots) -> str:
    if not q["curve"]:
        return ("<h2>Prequential agreement</h2><p class=muted id=prequential>no annotation of a task that carried "
                "a prediction of this backend yet</p>")
    metrics = ["accuracy", "macro_f1"] if q["kind"] == "classification" else ["f1", "precision", "recall"]
    data = {"curve": [{k: c[k] for k in ("iteration", "n", *metrics)} for c in q["curve"]], "metrics": metrics,
            "rolling": q["rolling"][1], "window": q["window"]["size"]}
    rows = [[c["model_version"], c["iteration"], c["n"], *[c[m] for m in metrics]] for c in reversed(q["curve"])]
    w = q["window"]
    return ("<h2>Prequential agreement</h2><p id=prequential>How often the prediction an annotator was shown agreed "
            f"with the annotation: <b>{_f(q['agreement'], 2)}</b> over the last {w.get('n')} annotations "
            f"({q['n']} judged in all).</p>" + f"<div class=plot>{plots.svg('prequential', data, dashplots.prequential)}"
            "</div>" + _table(["version", "iteration", "annotations", *[m.replace('_', '-') for m in metrics]], rows))


def _labels(fig: dict, plots: dashplots.Plots) -> str:
    if not fig["labels"]:
        return "<h2>Labels per class</h2><p class=muted>no finished retrain yet</p>"
    size = (4.6, 0.9 + 0.28 * len(fig["labels"]))
    return (f"<h2>Labels per class</h2><p>{_f(fig['gold'])} annotated tasks used by the last retrain.</p>"
            f"<div class=plot>{plots.svg('labels', fig['labels'], dashplots.labels, size)}</div>")


def _pool(p: dict, plots: dashplots.Plots) -> str:
    if not p["scored"]:
        return "<h2>Pool uncertainty</h2><p class=muted>the pool has not been scored yet</p>"
    return (f"<h2>Pool uncertainty</h2><p>{p['pool']} unlabeled tasks at the last retrain, {p['scored']} scored, "
            f"{p['by_current']} by the current version; mean score {_f(p['mean_score'])} ({escape(p['strategy'])}).</p>"
            f"<div class=plot>{plots.svg('pool', p, dashplots.pool, (4.6, 2.6))}</div>")


def _ups(rows: list[dict], plots: dashplots.Plots) -> str:
    if not rows:
        return "<h2>Rescoring (UPS)</h2><p class=muted>no finished retrain yet</p>"
    table = _table(["iteration", "round", "pool", "scored", "new", "skipped", "scoring s"],
                   [[r["iteration"], "full pool" if r["full_pool"] else "UPS", r["pool"], r["scored"], r["new"],
                     r["skipped"], r["score_s"]] for r in reversed(rows)])
    return (f"<h2>Rescoring (UPS)</h2><div class=pair><div class=plot>{plots.svg('ups', rows, dashplots.ups)}"
            f"</div><div>{table}</div></div>")


def _progress(p: dict | None) -> str:
    if not p:
        return ""
    done, total = p.get("scored"), p.get("to_score")
    bar = f" <progress value='{done}' max='{total}'></progress> {done}/{total} scored" if total else ""
    return f"{escape(str(p.get('phase', '')))}{bar}" + (f", {p['pushed']} pushed" if p.get("pushed") else "")


def _jobs(jobs: list[dict], plots: dashplots.Plots) -> str:
    if not jobs:
        return "<h2>Jobs</h2><p class=muted>no job yet</p>"
    rows = [[j["id"], j["state"], j["trigger"], j["iteration"], _when(j["started_at"]), j["duration_s"],
             " · ".join(f"{k} {v:.1f}s" for k, v in j["stages"].items()), j["reason"] or ""] for j in jobs]
    live = "".join(f"<p id=progress>running {escape(j['id'])}: {_progress(j['progress'])}</p>"
                   for j in jobs if j["progress"])
    shown = [{"label": f"it {j['iteration']}" if j["iteration"] is not None else j["id"][-8:],
              "stages": j["stages"]} for j in jobs[:12] if j["stages"]]
    plot = plots.svg("timeline", {"rows": shown, "stages": list(STAGES)}, dashplots.timeline,
                     size=(6.4, 0.6 + 0.3 * len(shown))) if shown else ""
    return (f"<h2>Jobs</h2>{live}<div class=plot>{plot}</div>"
            + _table(["job", "state", "trigger", "iteration", "started", "seconds", "stages", "reason"], rows))
