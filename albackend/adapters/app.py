"""The protocol layer Label Studio talks to: /health /setup /predict /webhook /versions, and for operators
/metrics (Prometheus), /status (JSON) and /projects/<id>/status.

label-studio-ml 1.0.9's own Flask app drops START_TRAINING, answers 405 on /versions and 500 on a webhook
without `action` (checked against LS 1.23.2), so the routes are owned here; the model class stays a
LabelStudioMLBase subclass (model.py). Every error is a JSON 4xx with a message, or a logged 500
without a stack trace in the response.
"""
from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from albackend.adapters import prommetrics
from albackend.adapters.dashboard import dashboard
from albackend.adapters.projectmetrics import ProjectFigures
from albackend.services.jobs import QueueUnavailable, make_queue
from albackend.domain.labelconfig import ConfigError, parse_label_config
from albackend.services.quality import record_annotation
from albackend.services.retrain import TRAIN_ACTIONS, on_train_action
from albackend.services.coldstart import cold_start_status, request_cold_start
from albackend.settings import Settings
from albackend.services.store import ModelStore, project_key
from albackend.services.training import training_job

log = logging.getLogger(__name__)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Timings:
    """Recent reply times per endpoint in this worker, for /status (p50/p99 over the last 1000 requests)."""

    def __init__(self) -> None:
        self._data: dict[str, deque] = defaultdict(lambda: deque(maxlen=1000))
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, endpoint: str, seconds: float, status: int) -> None:
        with self._lock:
            self._data[endpoint].append(seconds)
            self._counts[f"{endpoint} {status}"] += 1

    def summary(self) -> dict:
        with self._lock:
            out = {}
            for ep, values in self._data.items():
                arr = np.array(values) * 1000
                out[ep] = {"n": len(arr), "p50_ms": round(float(np.percentile(arr, 50)), 3),
                           "p99_ms": round(float(np.percentile(arr, 99)), 3)}
            return {"latency": out, "responses": dict(self._counts)}


def _project_from(payload: dict) -> str:
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if project is None and isinstance(payload.get("task"), dict):
        project = payload["task"].get("project")
    if project is None or isinstance(project, (list, dict, bool)):
        raise BadRequest("payload names no project")
    try:
        return project_key(project)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _json_body() -> dict:
    try:
        data = request.get_json(silent=True, force=True)
    except RecursionError:  # deeply nested JSON: json.loads raises this, not a ValueError
        data = None
    except OSError:  # the socket read timed out (BODY_READ_TIMEOUT_S) or the client went away mid-body
        raise BadRequest("request body not received in time", 408) from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def basic_auth_ok(header: str, user: str, password: str) -> bool:
    """Constant-time check of a Basic header; credentials may arrive as UTF-8 or as Latin-1.

    RFC 7617 leaves the charset open: browsers send UTF-8, while requests and Label Studio's
    http://user:pass@host URLs send Latin-1, so a non-ASCII password must match either way.
    """
    if not header.startswith("Basic "):
        return False
    try:
        raw = base64.b64decode(header[6:], validate=True)
    except ValueError:
        return False
    got_user, _, got_pwd = raw.partition(b":")
    ok = False
    for charset in ("utf-8", "latin-1"):
        try:
            want_user, want_pwd = user.encode(charset), password.encode(charset)
        except UnicodeEncodeError:
            continue  # a password with characters outside Latin-1 can only arrive as UTF-8
        ok |= hmac.compare_digest(got_user, want_user) & hmac.compare_digest(got_pwd, want_pwd)
    return ok


@dataclass
class AppContext:
    """What every route of one app shares. Route modules reach it as ``current_app.extensions["albackend"]``."""

    settings: Settings
    store: ModelStore
    models: Any  # model_class.registry(settings, store): one model instance per project
    model_class: type
    timings: Timings = field(default_factory=Timings)
    started: float = field(default_factory=time.time)
    _queue: Any = None
    _queue_lock: threading.Lock = field(default_factory=threading.Lock)

    def job_queue(self):
        with self._queue_lock:  # created lazily: a fork after import must not share an RQ connection or thread
            if self._queue is None:
                self._queue = make_queue(self.settings, self.store, partial(training_job, settings=self.settings))
            return self._queue


def create_app(settings: Settings | None = None, *, model_class: type) -> Flask:
    """The app for ``model_class`` (the LabelStudioMLBase subclass in model.py, handed in by _wsgi.py so the
    protocol layer never imports upward)."""
    settings = settings or Settings.from_env()
    if bool(settings.basic_auth_user) != bool(settings.basic_auth_pass):
        raise ValueError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS (or neither): an empty one would let anyone in")
    store = ModelStore(settings.model_dir)
    app = Flask("al-backend")
    app.config["JSON_SORT_KEYS"] = False  # Flask < 2.3
    if hasattr(app, "json"):
        app.json.sort_keys = False  # Flask >= 2.3
    # Werkzeug answers 413 for a larger declared body before reading it, and stops a chunked one at the cap.
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_request_mb * 1024 * 1024)
    ctx = AppContext(settings, store, model_class.registry(settings, store), model_class)
    app.extensions["albackend"] = ctx
    install_guards(app, ctx)
    install_error_handlers(app)
    register_protocol_routes(app, ctx)
    register_training_routes(app, ctx)
    register_operator_routes(app, ctx)
    app.register_blueprint(dashboard)  # GET /projects/<id>: the HTML page
    if settings.body_read_timeout_s > 0:
        app.wsgi_app = _bounded_reads(app.wsgi_app, settings.body_read_timeout_s)
    return app


def install_guards(app: Flask, ctx: AppContext) -> None:
    """Every request: the body size cap, Basic auth when configured, and its reply time (for /status, /metrics)."""
    settings = ctx.settings
    auth_on = bool(settings.basic_auth_user)

    @app.before_request
    def _auth_and_clock():
        request.environ["al.t0"] = time.perf_counter()
        if (request.content_length or 0) > app.config["MAX_CONTENT_LENGTH"]:
            raise BadRequest(f"request body over MAX_REQUEST_MB={settings.max_request_mb:g} MB", 413)
        if auth_on:
            if not basic_auth_ok(request.headers.get("Authorization", ""), settings.basic_auth_user,
                                 settings.basic_auth_pass):
                resp = jsonify({"error": "authentication required"})
                resp.status_code = 401
                resp.headers["WWW-Authenticate"] = 'Basic realm="al-backend"'
                return resp
        return None

    @app.after_request
    def _time(resp):
        t0 = request.environ.get("al.t0")
        if t0 is not None:
            endpoint, seconds = request.url_rule.rule if request.url_rule else "unmatched", time.perf_counter() - t0
            ctx.timings.add(endpoint, seconds, resp.status_code)
            prommetrics.observe(endpoint, seconds, resp.status_code)
        return resp


def install_error_handlers(app: Flask) -> None:
    """Every error is a JSON reply: 4xx with its message, 503 + Retry-After without a queue, a logged 500."""

    @app.errorhandler(BadRequest)
    def _bad(exc: BadRequest):
        return jsonify({"error": str(exc)}), exc.status

    @app.errorhandler(QueueUnavailable)
    def _unavailable(exc: QueueUnavailable):
        log.warning("%s %s: 503: %s", request.method, request.path, exc)
        resp = jsonify({"error": f"training queue unavailable: {exc}"})
        resp.status_code = 503
        resp.headers["Retry-After"] = "30"
        return resp

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return jsonify({"error": exc.description}), exc.code

    @app.errorhandler(Exception)
    def _crash(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify({"error": f"internal error: {type(exc).__name__}"}), 500


def register_protocol_routes(app: Flask, ctx: AppContext) -> None:
    """What Label Studio calls on a model backend: /health, /setup, /predict."""

    @app.route("/", methods=["GET"])
    @app.route("/health", methods=["GET"])
    def health():
        return jsonify({"status": "UP", "model_class": ctx.model_class.__name__,
                        "queue": "rq" if ctx.settings.redis_url else "in-process"})

    @app.route("/setup", methods=["POST"])
    def setup():
        data = _json_body()
        project = _project_from(data)
        try:
            spec = parse_label_config(data.get("schema") or data.get("label_config") or "")
        except ConfigError as exc:
            raise BadRequest(f"unsupported label config: {exc}", 422) from None
        model = ctx.models.get(project)
        model.setup(spec, hostname=str(data.get("hostname") or ""), access_token=str(data.get("access_token") or ""))
        log.debug("project %s: cold start %s", project, request_cold_start(ctx.settings, ctx.store, project))
        return jsonify({"model_version": model.model_version})

    @app.route("/predict", methods=["POST"])
    def predict():
        data = _json_body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' must be a list")
        if not tasks:
            return jsonify({"results": []})
        project = _project_from(data) if data.get("project") is not None else _project_from(
            {"task": tasks[0] if isinstance(tasks[0], dict) else {}})
        results = ctx.models.get(project).predict(tasks)
        return jsonify({"results": results})


def register_training_routes(app: Flask, ctx: AppContext) -> None:
    """Retraining: LS's webhooks (/webhook), the legacy /train, and the model versions LS lists (/versions)."""

    @app.route("/webhook", methods=["POST"])
    def webhook():
        data = _json_body()
        action = data.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("webhook payload has no 'action'")
        if action == "TASKS_CREATED":  # before the first model, the new tasks get their cold-start scores
            try:
                request_cold_start(ctx.settings, ctx.store, _project_from(data), new_tasks=True)
            except BadRequest:
                pass  # acknowledged and ignored, as before
        if action not in TRAIN_ACTIONS:
            return jsonify({"status": "ignored", "action": action}), 200
        project = _project_from(data)
        record_annotation(ctx.store, project, data, ctx.settings.max_text_chars)  # the prequential curve
        decision = on_train_action(ctx.store, ctx.settings, project, data)
        if not decision.queue:
            return jsonify({"status": "recorded", "waiting": decision.waiting,
                            "retrain_after": decision.threshold}), 200
        job_id, queued = ctx.job_queue().submit(project, action)
        prommetrics.JOBS.labels("queued" if queued else "coalesced").inc()
        return jsonify({"status": "queued" if queued else "already queued", "job_id": job_id}), 201

    @app.route("/train", methods=["POST"])
    def train():  # label-studio-ml's legacy route: same semantics as START_TRAINING
        data = _json_body()
        job_id, queued = ctx.job_queue().submit(_project_from(data), "train")
        return jsonify({"status": "queued" if queued else "already queued", "job_id": job_id}), 201

    @app.route("/versions", methods=["GET"])
    def versions():
        project = request.args.get("project")
        try:
            projects = [project_key(project)] if project else ctx.store.all_projects()
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return jsonify({"versions": [v for p in projects for v in ctx.store.versions(p)]})


def register_operator_routes(app: Flask, ctx: AppContext) -> None:
    """For operators: /projects/<id>/status, /status (JSON) and /metrics (Prometheus)."""

    @app.route("/projects/<project>/status", methods=["GET"])
    def status(project: str):
        try:
            project = project_key(project)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return jsonify(project_status(ctx.store, project, ctx.job_queue()))

    @app.route("/metrics", methods=["GET"])
    def metrics():  # Prometheus text format, summed over all gunicorn workers
        body, content_type = prommetrics.render(ProjectFigures(ctx.settings, ctx.store))
        return app.response_class(body, mimetype=None, content_type=content_type)

    @app.route("/status", methods=["GET"])
    def status_all():  # the JSON view: this worker's latency percentiles and responses, every project's jobs
        q = ctx.job_queue()
        return jsonify({
            "uptime_s": round(time.time() - ctx.started, 1), **ctx.timings.summary(),
            "projects": {p: project_status(ctx.store, p, q, jobs_limit=3) for p in ctx.store.all_projects()},
        })


def _bounded_reads(wsgi_app, seconds: float):
    """Give gunicorn's client socket a read timeout: a client that goes silent mid-body frees its thread."""
    def bounded(environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(seconds)
        return wsgi_app(environ, start_response)
    return bounded


def project_status(store: ModelStore, project: str, queue, jobs_limit: int = 10) -> dict:
    current = store.current(project) or {}
    jobs = [queue.reconcile(j) for j in store.jobs(project, limit=jobs_limit)]
    last = next((j for j in jobs if j.get("state") == "finished"), None)
    last_training = None
    if last:
        s = last.get("stats") or {}
        last_training = {"model_version": s.get("model_version"), "iteration": s.get("iteration"),
                         **(s.get("rescore") or {}), "predictions_pushed": s.get("predictions_pushed", 0),
                         "train_seconds": (s.get("seconds") or {}).get("train"), "gold": s.get("gold"),
                         "job_seconds": s.get("seconds"), "sync": s.get("sync"),
                         "current_after_s": s.get("current_after_s"), "pruned_versions": s.get("pruned_versions"),
                         "prune_error": s.get("prune_error"),
                         "bytes_fetched": s.get("bytes_fetched")}
    running = next((j for j in jobs if j.get("state") == "running"), None)
    return {"project": project, "model_version": current.get("model_version"),
            "iteration": current.get("iteration"), "jobs": jobs, "last_training": last_training,
            "progress": running.get("progress") if running else None, "cold_start": cold_start_status(store, project)}
