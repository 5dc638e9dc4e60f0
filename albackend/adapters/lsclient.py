"""Label Studio REST client: the few calls the backend makes back to LS.

Errors become `LabelStudioError` with a message safe to log: the token (and any access token derived from it) is
redacted from everything LS (or a proxy in front of it) sends back, and credentials in the URL are never shown.

Both token kinds of LS 1.23 work: a legacy token (``Authorization: Token <key>``) and a personal access token
(a JWT refresh token, exchanged at ``POST /api/token/refresh/`` for a short-lived access token sent as
``Authorization: Bearer``, refreshed on a 401). Every response body read is counted in ``bytes_received`` so a
job can report how much it fetched.

We keep this small client instead of label-studio-sdk (the README, "Why not label-studio-sdk", gives the
measured reasons: 30 more packages, a numpy downgrade, and no call for deleting a model version's predictions).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import requests

log = logging.getLogger(__name__)
RETRY_PAUSES_S = (0.5, 1.0, 2.0, 4.0)


class LabelStudioError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (at least 4 characters; shorter ones would blank ordinary words) replaced."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def display_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, timeout: float = 60.0):
        if not url:
            raise LabelStudioError("no Label Studio URL: set LABEL_STUDIO_URL (or connect the backend from LS)")
        if not api_key:
            raise LabelStudioError("no Label Studio API key: set LABEL_STUDIO_API_KEY (a personal access token or legacy token)")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self._api_key = api_key
        self._pat = is_personal_access_token(api_key)
        self._auth_lock = threading.Lock()
        if not self._pat:
            self.session.headers["Authorization"] = f"Token {api_key}"
        self.timeout = timeout
        self.bytes_received = 0
        self._secrets = [api_key, urlsplit(self.url).password or ""]

    def __repr__(self) -> str:
        return f"LabelStudioClient({display_url(self.url)!r})"

    def _error(self, message: str, status: int | None = None) -> LabelStudioError:
        """An error whose message names no secret, however LS or a proxy echoed the request."""
        shown = display_url(self.url)
        return LabelStudioError(redact(message.replace(self.url, shown), self._secrets), status)

    def _refresh_access_token(self) -> None:
        """Exchange the personal access token for a fresh access token (LS gives ~5 minutes)."""
        with self._auth_lock:
            resp = self._send("POST", "/api/token/refresh/", json={"refresh": self._api_key})
            access = None
            if resp.status_code == 200:
                try:
                    access = resp.json().get("access")
                except ValueError:
                    access = None
            if not access:
                raise self._error(f"Label Studio refused the personal access token ({resp.status_code} on "
                                  "/api/token/refresh/)", resp.status_code)
            self._secrets.append(str(access))
            self.session.headers["Authorization"] = f"Bearer {access}"

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        """One request, retried with back-off on a 5xx (Label Studio on SQLite answers 500 "database is locked"
        while another request holds its write lock; the failed request's transaction was rolled back)."""
        for pause in (*RETRY_PAUSES_S, None):
            try:
                resp = self.session.request(method, self.url + path, **{"timeout": self.timeout, **kwargs})
            except requests.RequestException as exc:
                raise self._error(f"Label Studio at {self.url} is unreachable: {type(exc).__name__}") from None
            self.bytes_received += len(resp.content or b"")
            if resp.status_code < 500 or pause is None:
                return resp
            log.info("Label Studio answered %d to %s %s; retrying in %.1fs", resp.status_code, method, path, pause)
            time.sleep(pause)
        return resp

    def _call(self, method: str, path: str, **kwargs) -> object:
        if self._pat and "Authorization" not in self.session.headers:
            self._refresh_access_token()
        resp = self._send(method, path, **kwargs)
        if resp.status_code == 401 and self._pat:  # the access token expired: refresh once and retry
            self._refresh_access_token()
            resp = self._send(method, path, **kwargs)
        if resp.status_code in (401, 403):
            raise self._error(f"Label Studio refused the API key ({resp.status_code} on {path}); use a "
                              "personal access token, or a legacy token with --enable-legacy-api-token",
                              resp.status_code)
        if resp.status_code == 404:
            raise self._error(f"not found in Label Studio: {method} {path}", 404)
        if resp.status_code >= 400:  # redact the whole body before cutting it: a cut key would leak its prefix
            body = redact(resp.text, self._secrets)[:300]
            raise self._error(f"Label Studio answered {resp.status_code} to {method} {path}: {body}",
                              resp.status_code)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise self._error(f"Label Studio sent non-JSON to {method} {path}") from None

    def download(self, path: str, max_bytes: int, timeout: float) -> Fetched:
        """GET a file Label Studio serves (``path``: relative to the LS URL, query included) with the token: its
        content (at most ``max_bytes``), or the target of LS's redirect (its storage resolver answers with a
        presigned cloud URL), not followed: the caller decides whether that host may be asked."""
        if self._pat and "Authorization" not in self.session.headers:
            self._refresh_access_token()
        got = self._fetch(path, max_bytes, timeout)
        if got.status == 401 and self._pat:  # the access token expired
            self._refresh_access_token()
            got = self._fetch(path, max_bytes, timeout)
        if got.status >= 400:
            raise self._error(f"Label Studio answered {got.status} to GET {path.split('?')[0]}", got.status)
        self.bytes_received += len(got.content)
        return got

    def _fetch(self, path: str, max_bytes: int, timeout: float) -> Fetched:
        try:
            return fetch(self.url + path, max_bytes, timeout, self.session)
        except LabelStudioError as exc:
            raise self._error(f"Label Studio at {self.url} is unreachable: {str(exc).rpartition(': ')[2]}") from None

    def get_project(self, project: int | str) -> dict:
        return self._call("GET", f"/api/projects/{project}")  # type: ignore[return-value]

    def patch_project(self, project: int | str, data: dict) -> dict:
        return self._call("PATCH", f"/api/projects/{project}", json=data)  # type: ignore[return-value]

    def iter_tasks(self, project: int | str, *, fields: str = "all", query: dict | None = None,
                   page_size: int = 500) -> Iterator[dict]:
        """Tasks of a project page by page; ``fields="task_only"`` leaves out annotations and predictions,
        ``query`` is a Data Manager query (filters / selectedItems / ordering)."""
        params: dict = {"project": project, "page_size": page_size, "fields": fields}
        if query is not None:
            params["query"] = json.dumps(query)
        page = 1
        while True:
            try:
                data = self._call("GET", "/api/tasks", params={**params, "page": page})
            except LabelStudioError as exc:
                if exc.status == 404 and page > 1:  # LS answers 404 past the last page
                    return
                raise
            tasks = data.get("tasks", []) if isinstance(data, dict) else (data or [])
            yield from tasks
            total = data.get("total") if isinstance(data, dict) else None
            if len(tasks) < page_size or (total is not None and page * page_size >= total):
                return
            page += 1

    def tasks_after(self, project: int | str, max_id: int, page_size: int = 1000) -> Iterator[dict]:
        """Tasks with an id above ``max_id`` (LS ids only grow: these are the tasks imported since), no
        annotations or predictions."""
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": int(max_id)}]},
            "ordering": ["tasks:id"]}
        return self.iter_tasks(project, fields="task_only", query=query, page_size=page_size)

    def tasks_by_ids(self, project: int | str, task_ids: Iterable[int], chunk: int = 200) -> Iterator[dict]:
        """The given tasks with their annotations (and predictions: LS has no way to leave them out)."""
        ids = sorted({int(t) for t in task_ids})
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            query = {"selectedItems": {"all": False, "included": part}}
            yield from self.iter_tasks(project, fields="all", query=query, page_size=len(part))

    def import_predictions(self, project: int | str, predictions: list[dict], chunk: int = 500,
                           concurrency: int = 1) -> int:
        """Bulk-create predictions ({task, result, score, model_version}); returns how many were sent.

        ``concurrency`` > 1 sends chunks in parallel (LS's sqlite serialises writes, Postgres does not)."""
        parts = [predictions[i:i + chunk] for i in range(0, len(predictions), chunk)]

        def send(part: list[dict]) -> int:
            self._call("POST", f"/api/projects/{project}/import/predictions", json=part)
            return len(part)

        if concurrency <= 1 or len(parts) <= 1:
            return sum(send(p) for p in parts)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return sum(pool.map(send, parts))

    def model_versions(self, project: int | str) -> dict[str, int]:
        """Model versions of the project's stored predictions, with their prediction counts."""
        data = self._call("GET", f"/api/projects/{project}/model-versions/")
        if not isinstance(data, dict):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, (int, float))}

    def ml_backends(self, project: int | str) -> list[dict]:
        """The project's ML backend records (LS checks each one's /health and /setup while answering)."""
        data = self._call("GET", "/api/ml", params={"project": project})
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    def ml_backend(self, ml_id: int | str) -> dict:
        """One ML backend record (LS checks the backend's /health and /setup first)."""
        return self._call("GET", f"/api/ml/{ml_id}")  # type: ignore[return-value]

    def update_ml_backend(self, ml_id: int | str, data: dict, record: dict | None = None) -> dict:
        """PATCH an ML backend record (``description``, ``title``, ...); returns the updated record.

        LS 1.23 re-validates the connection on every update and answers 500 unless ``url`` and ``project`` are sent
        too; with basic auth it also needs the method and user (the stored password is kept when sent empty). These
        are taken from ``record`` (read first when not given). ``state`` and ``error_message`` cannot be set: LS
        recomputes them from the backend's /health and /setup on every read and update."""
        if record is None:
            record = self.ml_backend(ml_id)
        body = {"url": record.get("url"), "project": record.get("project")}
        if record.get("auth_method") == "BASIC_AUTH":
            body.update(auth_method="BASIC_AUTH", basic_auth_user=record.get("basic_auth_user") or "",
                        basic_auth_pass="")
        return self._call("PATCH", f"/api/ml/{ml_id}", json={**body, **data})  # type: ignore[return-value]

    def delete_model_version(self, project: int | str, model_version: str, timeout: float = 900.0) -> int:
        """Delete every prediction of one model version in the project; returns how many LS deleted.

        LS updates each touched task's counters, so a full-pool version of 17k predictions takes minutes on a
        busy SQLite install: hence its own, longer timeout."""
        data = self._call("DELETE", f"/api/projects/{project}/model-versions/", json={"model_version": model_version},
                          timeout=timeout)
        if isinstance(data, dict):  # LS 1.23 answers {"deleted_predictions": n}
            data = data.get("deleted_predictions")
        return int(data) if isinstance(data, (int, float)) and not isinstance(data, bool) else 0


class TooLarge(ValueError):
    """A response body over the caller's size cap (nothing past the cap was read)."""


@dataclass(frozen=True)
class Fetched:
    """One GET's answer: the status, the body of a 2xx, or the target of a redirect (not followed)."""

    status: int
    content: bytes = b""
    location: str | None = None


def fetch(url: str, max_bytes: int, timeout: float, session: requests.Session | None = None) -> Fetched:
    """One GET of a file (a task's text given as a link, on Label Studio or the host its storage resolver points
    at): no redirect followed, so the caller applies its host rule to every hop; a 2xx body read up to
    ``max_bytes`` (TooLarge beyond); an unreachable host is a LabelStudioError without a status."""
    try:
        with (session or requests).get(url, stream=True, allow_redirects=False, timeout=timeout) as resp:
            if resp.is_redirect:
                return Fetched(resp.status_code, location=resp.headers.get("Location") or "")
            if resp.status_code >= 300:
                return Fetched(resp.status_code)
            return Fetched(resp.status_code, read_capped(resp, max_bytes))
    except requests.RequestException as exc:
        raise LabelStudioError(f"{urlsplit(url).hostname} is unreachable: {type(exc).__name__}") from None


def read_capped(resp: requests.Response, max_bytes: int) -> bytes:
    """The body of a ``stream=True`` response, refusing (TooLarge) one over ``max_bytes`` before reading past it."""
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{int(declared)} bytes, over the {max_bytes}-byte limit")
    chunks, size = [], 0
    for chunk in resp.iter_content(65536):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"over the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def is_personal_access_token(key: str) -> bool:
    """LS 1.23 personal access tokens are JWTs (three base64url parts, header starting with ``eyJ``)."""
    return key.startswith("eyJ") and key.count(".") == 2
