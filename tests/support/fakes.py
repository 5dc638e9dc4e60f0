"""In-process stand-ins (stdlib http.server on 127.0.0.1, daemon threads) for harness checks.

- ``FakeMLBackend``: the ML-backend protocol at its simplest, recording every request; lets the harness test
  check what a real Label Studio sends and expects, independently of the backend under development.
- ``SlowHTTPServer``: answers every request after ``delay`` seconds (a Label Studio that hangs), so training
  jobs stay "running" long enough to observe queue coalescing.
- ``FileServer``: serves fixed files (status, body, headers), optionally only with ``Authorization: Token <t>``:
  Label Studio's file serving and storage resolver, or another host, for the text-link tests.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server:
    handler_factory = None

    def __init__(self):
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def reply(self, obj, code=200):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                raw = self._body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                rec = {"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers),
                       "t": time.time()}
                with outer._lock:
                    outer.requests.append(rec)
                outer.handle(self, rec)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def handle(self, h, rec):  # pragma: no cover - overridden
        h.reply({}, 404)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def seen(self, method: str | None = None, path_prefix: str = "") -> list[dict]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r["method"] == method) and r["path"].startswith(path_prefix)]


class FakeMLBackend(_Server):
    """/health, /setup (model_version ``version``), /predict (choices ``label``, score 0.1*(i+1)), /webhook."""

    def __init__(self, version: str = "fake-v1", label: str = "World", from_name="label", to_name="text"):
        super().__init__()
        self.version, self.label, self.from_name, self.to_name = version, label, from_name, to_name

    def handle(self, h, rec):
        path = rec["path"].split("?")[0]
        if rec["method"] == "GET" and path == "/health":
            return h.reply({"status": "UP", "model_class": "FakeMLBackend"})
        if rec["method"] == "GET" and path == "/versions":
            return h.reply({"versions": [self.version]})
        if rec["method"] == "POST" and path == "/setup":
            return h.reply({"model_version": self.version})
        if rec["method"] == "POST" and path == "/predict":
            tasks = (rec["body"] or {}).get("tasks", [])
            results = [{"result": [{"from_name": self.from_name, "to_name": self.to_name, "type": "choices",
                                    "value": {"choices": [self.label]}}],
                        "score": round(0.1 * (i + 1), 3), "model_version": self.version}
                       for i, _ in enumerate(tasks)]
            return h.reply({"results": results})
        if rec["method"] == "POST" and path == "/webhook":
            return h.reply({"status": "ok"}, 200)
        return h.reply({"error": "not found"}, 404)


class SlowHTTPServer(_Server):
    """Answers every request with ``status`` and ``body`` after ``delay`` seconds."""

    def __init__(self, delay: float = 10.0, status: int = 503, body=None):
        super().__init__()
        self.delay, self.status, self.body = delay, status, body if body is not None else {"detail": "slow fake"}

    def handle(self, h, rec):
        time.sleep(self.delay)
        try:
            h.reply(self.body, self.status)
        except OSError:
            pass


class FileServer(_Server):
    """Serves ``files`` (path with query -> (status, body bytes, headers)), 404 otherwise; with ``token``, 401 unless
    the request carries ``Authorization: Token <token>``. Started on creation."""

    def __init__(self, files: dict, token: str | None = None):
        super().__init__()
        self.files, self.token = files, token
        self.start()

    def handle(self, h, rec):
        if self.token and rec["headers"].get("Authorization") != f"Token {self.token}":
            return h.reply({"detail": "Authentication credentials were not provided."}, 401)
        status, body, headers = self.files.get(rec["path"], (404, b"not found", {}))
        h.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
