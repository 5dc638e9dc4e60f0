"""Task texts given as links: fetched, with the project's token only from Label Studio, from nowhere else unless
the operator allowed the host, size-capped, cached; a link that cannot be read is a skip with its reason.

A task's text field (``$text``) holding a single link instead of text is read the way Label Studio's own editor
reads it (``<Text valueType="url">``, files imported from storage):

* ``http(s)://...`` on Label Studio's host (LABEL_STUDIO_URL) or an LS-served path (``/data/upload/...``,
  ``/data/local-files/?d=...``, ``/tasks/<id>/resolve/?fileuri=...``, ...): fetched from LS with the token;
* a cloud-storage URI (``s3://``, ``gs://``, ``azure-blob://``, ``azure-spi://``): through LS's resolver,
  ``GET /tasks/<task id>/resolve/?fileuri=<base64>``, which serves the file or redirects to a presigned URL;
* ``http(s)://`` on any other host (a presigned URL included): fetched without the token, and only when the host
  is listed in TEXT_URL_HOSTS (a task's data must not make the backend call arbitrary hosts).

Every body is capped at TEXT_URL_MAX_KB and must decode as text. Texts are cached per project
(``texts.sqlite``: link -> text), so a retrain fetches only links it has not read; a failed link is remembered
for a few minutes so a dead host is not asked again on every /predict, and after three connection failures in a
row a host is not asked again by the same job. Nothing here raises for a bad link: the task is a `Skip`.
"""
from __future__ import annotations

import base64
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin, urlsplit

from albackend.domain.examples import Skip
from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError, TooLarge, fetch
from albackend.services import sqlitedb
from albackend.settings import Settings

log = logging.getLogger(__name__)
CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://", "azure-spi://")
# paths Label Studio 1.23 serves files under (uploads, local files, storage resolvers)
LS_PATH = re.compile(r"/(data/upload/|data/local-files/|storage-data/|(tasks|projects)/\d+/(resolve|presign)/)")
FAILURE_TTL_S = 300.0
MAX_REDIRECTS = 3
DEAD_AFTER = 3
WORKERS = 8


class LinkError(ValueError):
    """A link that cannot be read; the message is the reason, safe to log (no token, no credentials)."""


@dataclass(frozen=True)
class LinkPolicy:
    """Which hosts links may be fetched from, and how much of them."""

    hosts: frozenset[str]  # other hosts allowed (lower-case "host" or "host:port"), fetched without the token
    max_bytes: int
    timeout: float

    @classmethod
    def parse(cls, hosts: str, max_kb: float, timeout: float) -> "LinkPolicy":
        names = frozenset(h.strip().lower() for h in hosts.split(",") if h.strip())
        return cls(names, max(1, int(max_kb * 1024)), max(0.1, float(timeout)))

    @classmethod
    def of(cls, settings: Settings) -> "LinkPolicy":
        return cls.parse(settings.text_url_hosts, settings.text_url_max_kb, settings.text_url_timeout_s)

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        return parts.scheme in ("http", "https") and bool(host) and (
            host in self.hosts or f"{host}:{parts.port}" in self.hosts)


def link_kind(value: object) -> str | None:
    """"url", "ls" (an LS-served path), "cloud" (a storage URI), or None when the value is text, not a link."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if not v or len(v) > 8192 or any(c.isspace() for c in v):
        return None
    if v.lower().startswith(("http://", "https://")):
        return "url"
    if LS_PATH.match(v):
        return "ls"
    if v.lower().startswith(CLOUD_SCHEMES):
        return "cloud"
    return None


def same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    default = {"http": 80, "https": 443}
    return ((a.hostname or "").lower() == (b.hostname or "").lower() and a.scheme == b.scheme
            and (a.port or default.get(a.scheme)) == (b.port or default.get(b.scheme)))


def decode_text(content: bytes) -> str:
    """UTF-8 (a BOM dropped, as browsers do); binary content is refused."""
    if b"\x00" in content[:8192]:
        raise LinkError("the linked file is not text (binary content)")
    return content.decode("utf-8", errors="replace").removeprefix("\ufeff")


_CACHE_SCHEMA = ("CREATE TABLE IF NOT EXISTS links (link TEXT PRIMARY KEY, text TEXT, error TEXT, at REAL)",)


class TextCache:
    """link -> fetched text (or a recent failure) in ``texts.sqlite`` of the project."""

    def __init__(self, path: Path):
        self.path = path

    def get(self, links: list[str], now: float) -> dict[str, tuple[str | None, str | None]]:
        """(text, error) of each cached link; failures older than FAILURE_TTL_S count as not cached."""
        out: dict[str, tuple[str | None, str | None]] = {}
        with closing(sqlitedb.connect(self.path, _CACHE_SCHEMA)) as con:
            for i in range(0, len(links), 900):
                part = links[i:i + 900]
                rows = con.execute(f"SELECT link, text, error, at FROM links WHERE link IN ({','.join('?' * len(part))})",
                                   part)
                out.update((link, (text, error)) for link, text, error, at in rows
                           if error is None or now - at < FAILURE_TTL_S)
        return out

    def put(self, rows: list[tuple[str, str | None, str | None]], now: float) -> None:
        with closing(sqlitedb.connect(self.path, _CACHE_SCHEMA)) as con, con:
            con.executemany("INSERT OR REPLACE INTO links VALUES (?, ?, ?, ?)", [(*r, now) for r in rows])


class TextLinks:
    """Resolves the link-valued texts of a project's tasks (see the module docstring)."""

    def __init__(self, value_key: str, policy: LinkPolicy, client: Callable[[], LabelStudioClient],
                 cache_path: Path | None = None, max_chars: int = 0):
        self.value_key, self.policy, self.cache_path, self.max_chars = value_key, policy, cache_path, max_chars
        self._make_client = client
        self._client: LabelStudioClient | None = None
        self._client_error: str | None = None
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self.figures = {"links": 0, "fetched": 0, "cached": 0, "skipped": 0, "bytes": 0}

    def resolve(self, tasks: list[dict]) -> list[dict | Skip]:
        """Each task as it is, or (its text a link) a copy holding the fetched text, or a Skip with the reason."""
        wanted: dict[int, str] = {}
        for i, task in enumerate(tasks):
            data = task.get("data") if isinstance(task, dict) else None
            if isinstance(data, dict) and link_kind(data.get(self.value_key)):
                wanted[i] = data[self.value_key].strip()
        if not wanted:
            return list(tasks)
        texts = self._texts({(link, _task_id(tasks[i])) for i, link in wanted.items()})
        out: list[dict | Skip] = list(tasks)
        for i, link in wanted.items():
            text, error = texts[(link, _task_id(tasks[i]))]
            if error is not None:
                out[i] = Skip(_task_id(tasks[i]), f"text link {_shown(link)}: {error}")
                self.figures["skipped"] += 1
                log.info("task %s: %s", _task_id(tasks[i]), out[i].reason)  # type: ignore[union-attr]
            else:  # cut here already: a pool of long linked files must not sit in memory whole
                text = text[:self.max_chars] if self.max_chars > 0 else text
                out[i] = {**tasks[i], "data": {**tasks[i]["data"], self.value_key: text}}
        self.figures["links"] += len(wanted)
        return out

    def _texts(self, keys: set[tuple[str, int | None]]) -> dict[tuple[str, int | None], tuple[str | None, str | None]]:
        now = time.time()
        cache = TextCache(self.cache_path) if self.cache_path else None  # opened only when a task holds a link
        cached = cache.get(sorted({link for link, _ in keys}), now) if cache else {}
        todo = [k for k in keys if k[0] not in cached]
        self.figures["cached"] += len(keys) - len(todo)
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            fetched = dict(zip(todo, pool.map(self._fetch_one, todo)))
        if cache and fetched:
            cache.put([(link, text, error) for (link, _), (text, error) in fetched.items()], now)
        return {k: fetched[k] if k in fetched else cached[k[0]] for k in keys}

    def _fetch_one(self, key: tuple[str, int | None]) -> tuple[str | None, str | None]:
        link, task_id = key
        try:
            content = self._fetch(link, task_id)
            text = decode_text(content)
        except LinkError as exc:
            return None, str(exc)
        with self._lock:
            self.figures["fetched"] += 1
            self.figures["bytes"] += len(content)
        return text, None

    def _ls(self) -> LabelStudioClient:
        with self._lock:
            if self._client is None and self._client_error is None:
                try:
                    self._client = self._make_client()
                except LabelStudioError as exc:
                    self._client_error = str(exc)
            if self._client is None:
                raise LinkError(f"no Label Studio connection to read it from ({self._client_error})")
            return self._client

    def _fetch(self, link: str, task_id: int | None) -> bytes:
        kind = link_kind(link)
        if kind == "cloud":
            if task_id is None:
                raise LinkError("a storage URI needs the task id for Label Studio's resolver")
            fileuri = base64.urlsafe_b64encode(link.encode()).decode()
            return self._follow(f"/tasks/{task_id}/resolve/?fileuri={fileuri}")
        return self._follow(link)

    def _follow(self, target: str) -> bytes:
        """Fetch ``target`` (an LS path or a URL), following up to MAX_REDIRECTS redirects under the host rule."""
        for _ in range(MAX_REDIRECTS + 1):
            if target.lower().startswith(("http://", "https://")):
                ls = self._ls_at(target)
                if ls is None and not self.policy.allows(target):
                    raise LinkError(f"host {urlsplit(target).hostname!r} is neither Label Studio's "
                                    "(LABEL_STUDIO_URL) nor listed in TEXT_URL_HOSTS")
            else:
                ls = self._ls()
            got = self._get_ls(ls, target) if ls is not None else self._get_other(target)
            if isinstance(got, bytes):
                return got
            target = got
        raise LinkError(f"more than {MAX_REDIRECTS} redirects")

    def _ls_at(self, url: str) -> LabelStudioClient | None:
        """The LS client when ``url`` is on Label Studio's origin (the only one that gets the token)."""
        try:
            client = self._ls()
        except LinkError:
            return None
        return client if same_origin(url, client.url) else None

    def _get_ls(self, client: LabelStudioClient, target: str) -> bytes | str:
        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            got = client.download(path, self.policy.max_bytes, self.policy.timeout)
        except TooLarge as exc:
            raise LinkError(f"too large: {exc} (TEXT_URL_MAX_KB)") from None
        except LabelStudioError as exc:
            raise LinkError(str(exc)) from None
        return got.content if got.location is None else urljoin(client.url + path, got.location)

    def _get_other(self, url: str) -> bytes | str:
        host = (urlsplit(url).hostname or "").lower()
        if self._failures.get(host, 0) >= DEAD_AFTER:
            raise LinkError(f"host {host!r} unreachable ({DEAD_AFTER} failures in a row), not asked again")
        try:
            got = fetch(url, self.policy.max_bytes, self.policy.timeout)
        except TooLarge as exc:
            raise LinkError(f"too large: {exc} (TEXT_URL_MAX_KB)") from None
        except LabelStudioError as exc:  # unreachable
            with self._lock:
                self._failures[host] = self._failures.get(host, 0) + 1
            raise LinkError(str(exc)) from None
        self._failures[host] = 0
        if got.location is not None:
            return urljoin(url, got.location)
        if got.status >= 300:
            raise LinkError(f"{host} answered {got.status}")
        return got.content


def _task_id(task: object) -> int | None:
    tid = task.get("id") if isinstance(task, dict) else None
    return tid if isinstance(tid, int) and not isinstance(tid, bool) else None


def _shown(link: str) -> str:
    """The link for messages: a URL without its query string (presigned URLs carry credentials there) or
    user:pass@; LS paths and storage URIs as they are."""
    parts = urlsplit(link)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"[:200]
    return link[:200]


def project_links(settings: Settings, project_dir: Path, value_key: str,
                  client: Callable[[], LabelStudioClient]) -> TextLinks:
    """The resolver for one project, with its settings and its cache under ``project_dir``."""
    return TextLinks(value_key, LinkPolicy.of(settings), client, project_dir / "texts.sqlite", settings.max_text_chars)


def drop_skips(resolved: list[dict | Skip]) -> list[dict]:
    """The tasks whose text could be read (the skips were logged by `TextLinks.resolve`)."""
    return [t for t in resolved if not isinstance(t, Skip)]
