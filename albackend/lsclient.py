"""Label Studio REST client: the few calls the backend makes back to LS.

Errors become `LabelStudioError` with a message safe to log: the token is redacted from everything LS (or a
proxy in front of it) sends back, and credentials in the URL are never shown.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import requests

log = logging.getLogger(__name__)


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
            raise LabelStudioError("no Label Studio API key: set LABEL_STUDIO_API_KEY (legacy token)")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {api_key}"
        self.timeout = timeout
        self._secrets = (api_key, urlsplit(self.url).password or "")

    def __repr__(self) -> str:
        return f"LabelStudioClient({display_url(self.url)!r})"

    def _error(self, message: str, status: int | None = None) -> LabelStudioError:
        """An error whose message names no secret, however LS or a proxy echoed the request."""
        shown = display_url(self.url)
        return LabelStudioError(redact(message.replace(self.url, shown), self._secrets), status)

    def _call(self, method: str, path: str, **kwargs) -> object:
        try:
            resp = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise self._error(f"Label Studio at {self.url} is unreachable: {type(exc).__name__}") from None
        if resp.status_code in (401, 403):
            raise self._error(f"Label Studio refused the API key ({resp.status_code} on {path}); "
                              "LS 1.23 needs a legacy token and --enable-legacy-api-token", resp.status_code)
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

    def get_project(self, project: int | str) -> dict:
        return self._call("GET", f"/api/projects/{project}")  # type: ignore[return-value]

    def patch_project(self, project: int | str, data: dict) -> dict:
        return self._call("PATCH", f"/api/projects/{project}", json=data)  # type: ignore[return-value]

    def iter_tasks(self, project: int | str, page_size: int = 500) -> Iterator[dict]:
        """All tasks of a project with their annotations, page by page."""
        page = 1
        while True:
            try:
                data = self._call("GET", "/api/tasks", params={
                    "project": project, "page": page, "page_size": page_size, "fields": "all"})
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

    def import_predictions(self, project: int | str, predictions: list[dict], chunk: int = 1000) -> int:
        """Bulk-create predictions ({task, result, score, model_version}); returns how many were sent."""
        sent = 0
        for i in range(0, len(predictions), chunk):
            part = predictions[i:i + chunk]
            self._call("POST", f"/api/projects/{project}/import/predictions", json=part)
            sent += len(part)
        return sent
