"""Start and stop real processes (redis, rq worker, gunicorn, Label Studio) for tests.

Everything binds to 127.0.0.1 only. Every process is started in its own session (process group) and is stopped
by its group id (SIGTERM, then SIGKILL after a timeout) - never by name. Each service writes its stdout/stderr
to a log file in a directory the caller owns (a pytest tmp dir); when a start fails, the exception carries the
log tail.

Executables:
- the backend (gunicorn, rq worker) runs with the test interpreter, ``sys.executable -m ...`` (override with
  env ``BACKEND_PYTHON``), from the repository root with ``PYTHONPATH=<repo>``;
- Label Studio runs from its own venv, env ``LS_VENV`` (default ``<repo>/.venv-ls``): ``$LS_VENV/bin/label-studio``;
- redis from env ``REDIS_SERVER`` or ``redis-server`` on PATH.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import requests

from tests.support import lsapi

REPO_ROOT = Path(__file__).resolve().parents[2]

# Label Studio credentials used by start_label_studio() unless overridden.
LS_USERNAME = "admin@example.com"
LS_PASSWORD = "albackend-test-pass"
LS_TOKEN = "albackend-test-token-0123456789"

_LIVE: "list[Service]" = []
_LIVE_LOCK = threading.Lock()


class ServiceError(RuntimeError):
    """A service failed to start (or died); the message carries the tail of its log."""


# --------------------------------------------------------------------------------------------- paths / lookup
def ls_venv() -> Path:
    """The Label Studio venv: env ``LS_VENV`` or ``<repo>/.venv-ls``."""
    return Path(os.environ.get("LS_VENV") or (REPO_ROOT / ".venv-ls")).expanduser()


def label_studio_bin() -> Path:
    return ls_venv() / "bin" / "label-studio"


def have_label_studio() -> bool:
    exe = label_studio_bin()
    return exe.is_file() and os.access(exe, os.X_OK)


def redis_server_bin() -> str | None:
    """Path of redis-server (env ``REDIS_SERVER`` or PATH), or None."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("redis-server")


def backend_python() -> str:
    return os.environ.get("BACKEND_PYTHON") or sys.executable


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# --------------------------------------------------------------------------------------------- primitives
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path | str, n_chars: int = 6000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n_chars))
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:  # pragma: no cover - diagnostic only
        return f"<no log: {exc}>"


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.5,
               desc: str = "condition", on_timeout: Callable[[], str] | None = None):
    """Call ``predicate`` until it returns something truthy; return that value. TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = on_timeout() if on_timeout else ""
            why = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {desc}{why}\n{extra}")
        time.sleep(interval)


def wait_http(url: str, timeout: float = 60.0, *, ok: Callable[[requests.Response], bool] | None = None,
              service: "Service | None" = None, interval: float = 0.3) -> requests.Response:
    """Poll ``url`` with GET until ``ok(response)`` (default: any status < 500). Returns the response.

    If ``service`` is given and its process exits while waiting, raise ServiceError with its log tail at once.
    """
    ok = ok or (lambda r: r.status_code < 500)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if service is not None and service.proc.poll() is not None:
            raise ServiceError(f"{service.name} exited with code {service.proc.returncode} before {url} answered"
                               f"\n--- {service.log_path} ---\n{service.log_tail()}")
        try:
            r = requests.get(url, timeout=5)
            if ok(r):
                return r
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except requests.RequestException as exc:
            last = repr(exc)
        if time.monotonic() >= deadline:
            log = f"\n--- {service.log_path} ---\n{service.log_tail()}" if service is not None else ""
            raise ServiceError(f"{url} did not answer within {timeout:.0f}s (last: {last}){log}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------- Service
@dataclass
class Service:
    """A started process: ``proc`` (Popen, own process group), ``port``, ``url``, ``log_path``."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    port: int | None = None
    url: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n_chars: int = 6000) -> str:
        return tail(self.log_path, n_chars)

    def check_alive(self) -> None:
        if not self.alive():
            raise ServiceError(f"{self.name} (pid {self.pid}) exited with code {self.proc.returncode}"
                               f"\n--- {self.log_path} ---\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s. Idempotent. Returns the exit code."""
        if self.meta.get("_stopped"):
            return self.proc.returncode
        self.meta["_stopped"] = True
        pgid = self.proc.pid  # start_new_session=True: the leader's pid is the group id
        if self.proc.poll() is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive the leader: gunicorn workers and LS's runserver child share its group, but an
        # RQ work horse calls setpgrp() (own group, same session). SIGKILL the group and every process of the
        # session the leader created. Linux never hands out a pid still in use as a group or session id, so
        # this only reaches our own leftovers.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in _session_members(pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait(timeout=5)
        fh = self.meta.pop("_log_fh", None)
        if fh is not None:
            fh.close()
        with _LIVE_LOCK:
            if self in _LIVE:
                _LIVE.remove(self)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


def _session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (Linux /proc; empty elsewhere)."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode("utf-8", "replace")
            fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
            if int(fields[3]) == sid and int(name) != os.getpid():
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for svc in reversed(live):
        try:
            svc.stop(timeout=5)
        except Exception:  # pragma: no cover
            pass


atexit.register(_stop_all_at_exit)


def _spawn(name: str, argv: list[str], log_path: Path, *, env: Mapping[str, str] | None = None,
           cwd: Path | str | None = None, port: int | None = None, url: str | None = None) -> Service:
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "ab", buffering=0)
    fh.write(f"$ {' '.join(argv)}\n".encode())
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict(env) if env is not None else None, cwd=str(cwd) if cwd else None,
                            start_new_session=True)
    svc = Service(name=name, proc=proc, log_path=log_path, port=port, url=url, meta={"_log_fh": fh})
    with _LIVE_LOCK:
        _LIVE.append(svc)
    return svc


def _log_dir(log_dir: Path | str | None, prefix: str) -> Path:
    return Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix=f"{prefix}-"))


def backend_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ + ``env`` + PYTHONPATH=<repo> + offline HF defaults: the environment backend processes get."""
    out = dict(os.environ)
    out.setdefault("HF_HUB_OFFLINE", "1")
    out.setdefault("TOKENIZERS_PARALLELISM", "false")
    out["PYTHONUNBUFFERED"] = "1"
    if env:
        out.update({k: str(v) for k, v in env.items()})
    pp = out.get("PYTHONPATH", "")
    if str(REPO_ROOT) not in pp.split(os.pathsep):
        out["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), pp) if p)
    return out


# --------------------------------------------------------------------------------------------- redis
def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmpdir: Path | str, port: int | None = None, timeout: float = 20.0) -> Service:
    """redis-server on 127.0.0.1 without persistence; ``url`` is ``redis://127.0.0.1:PORT/0``."""
    exe = redis_server_bin()
    if exe is None:
        raise ServiceError("redis-server not found (install it, or set REDIS_SERVER)")
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmpdir), "--protected-mode", "yes"]
    svc = _spawn("redis", argv, tmpdir / f"redis-{port}.log", port=port, url=f"redis://127.0.0.1:{port}/0")
    try:
        wait_until(lambda: (svc.check_alive(), _redis_ping(port))[1], timeout, 0.1, f"redis on port {port}",
                   on_timeout=svc.log_tail)
    except BaseException:
        svc.stop()
        raise
    return svc


# --------------------------------------------------------------------------------------------- rq worker
PRELOADED_WORKER = "albackend.adapters.rqworker.PreloadedWorker"


def start_rq_worker(redis_url: str, env: Mapping[str, str] | None = None, queue: str = "albackend", *,
                    workdir: Path | str = REPO_ROOT, worker_class: str | None = PRELOADED_WORKER,
                    log_dir: Path | str | None = None, name: str | None = None,
                    timeout: float = 120.0) -> Service:
    """``python -m rq.cli worker -u URL QUEUE`` from ``workdir`` with ``backend_env(env)``.

    The worker class defaults to the product's (`albackend.adapters.rqworker`: forks per job, job functions preloaded);
    ``worker_class="rq.worker.SimpleWorker"`` runs jobs in the worker process itself (no fork per job).
    Returns once the worker logs that it listens on the queue.
    """
    log_dir = _log_dir(log_dir, "rq")
    name = name or f"rqw-{os.getpid()}-{free_port()}"
    argv = [backend_python(), "-m", "rq.cli", "worker", "-u", redis_url, "--path", str(workdir), "-n", name]
    if worker_class:
        argv += ["--worker-class", worker_class]
    argv.append(queue)
    svc = _spawn("rq-worker", argv, log_dir / f"{name}.log", env=backend_env(env), cwd=workdir, url=redis_url)
    svc.meta.update(queue=queue, worker_name=name)

    def listening():
        svc.check_alive()
        text = tail(svc.log_path, 20000)
        return "Listening on" in text or "*** Listening" in text

    try:
        wait_until(listening, timeout, 0.2, f"rq worker {name} to listen on {queue!r}", on_timeout=svc.log_tail)
    except BaseException:
        svc.stop(timeout=3)
        raise
    return svc


# --------------------------------------------------------------------------------------------- gunicorn
def start_gunicorn(env: Mapping[str, str] | None = None, port: int | None = None, workers: int | None = 1,
                   threads: int | None = 4, *, workdir: Path | str = REPO_ROOT, app: str = "_wsgi:app",
                   log_dir: Path | str | None = None, timeout: float = 120.0, config: str | None = None) -> Service:
    """gunicorn -b 127.0.0.1:PORT --workers N --threads T --timeout 300 _wsgi:app, from the repo root.

    gunicorn also reads ``gunicorn.conf.py`` from the repo root (the shipped settings); ``config`` names another
    file (``/dev/null``: gunicorn's own defaults), and ``workers``/``threads`` None leave the file's values.
    Waits until ``GET /health`` answers with any status < 500 (401 counts: basic auth may guard it).
    """
    port = port or free_port()
    log_dir = _log_dir(log_dir, "gunicorn")
    argv = [backend_python(), "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "--timeout", "300",
            "--graceful-timeout", "5", "--access-logfile", "-", "--error-logfile", "-"]
    argv += ["--workers", str(workers)] if workers is not None else []
    argv += ["--threads", str(threads)] if threads is not None else []
    argv += ["-c", config] if config else []
    argv.append(app)
    url = f"http://127.0.0.1:{port}"
    svc = _spawn("gunicorn", argv, log_dir / f"gunicorn-{port}.log", env=backend_env(env), cwd=workdir,
                 port=port, url=url)
    try:
        wait_http(url + "/health", timeout, service=svc)
    except BaseException:
        svc.stop(timeout=5)
        raise
    return svc


# --------------------------------------------------------------------------------------------- Label Studio
def label_studio_env(data_dir: Path, *, username: str = LS_USERNAME, password: str = LS_PASSWORD,
                     token: str = LS_TOKEN, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``label-studio start`` (see the module docstring); the backend's PYTHONPATH/venv are removed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "DJANGO_SETTINGS_MODULE")}
    venv_bin = str(ls_venv() / "bin")
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "/usr/bin:/bin")])
    env.update({
        "LABEL_STUDIO_USERNAME": username,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "PYTHONUNBUFFERED": "1",
    })
    if extra_env:
        env.update({k: str(v) for k, v in extra_env.items()})
    return env


def start_label_studio(tmpdir: Path | str, port: int | None = None, *, username: str = LS_USERNAME,
                       password: str = LS_PASSWORD, token: str = LS_TOKEN, legacy_token: bool = True,
                       extra_env: Mapping[str, str] | None = None, timeout: float = 240.0) -> Service:
    """A real Label Studio on 127.0.0.1:PORT with data in ``tmpdir/ls-data``.

    ``meta`` holds ``token``, ``token_kind``, ``username``, ``password``, ``data_dir`` and ``boot_seconds``.
    With ``legacy_token`` (the default) LS runs with ``--enable-legacy-api-token`` and ``token`` is the legacy key;
    without it LS runs as a new 1.23 install does and ``token`` is a personal access token the user created over
    LS's own API (:func:`tests.support.lsapi.create_personal_access_token`). Ready means: ``/health`` is 200 and the
    token authenticates ``/api/current-user/whoami`` (the user is created during boot, after /health can already
    answer). First boot (migrations) took ~22 s here, a restart on the same data dir a few seconds.
    """
    exe = label_studio_bin()
    if not have_label_studio():
        raise ServiceError(f"Label Studio not found at {exe} (set LS_VENV or run `make` to build .venv-ls)")
    tmpdir = Path(tmpdir)
    data_dir = tmpdir / "ls-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir)] + (["--enable-legacy-api-token"] if legacy_token else [])
    env = label_studio_env(data_dir, username=username, password=password, token=token, extra_env=extra_env)
    t0 = time.monotonic()
    svc = _spawn("label-studio", argv, tmpdir / f"label-studio-{port}.log", env=env, cwd=tmpdir, port=port,
                 url=url)
    svc.meta.update(token=token, token_kind="legacy" if legacy_token else "personal access token",
                    username=username, password=password, data_dir=data_dir)

    def authed():
        svc.check_alive()
        if not legacy_token and not lsapi.is_personal_access_token(svc.meta["token"]):
            # the user exists once LS's login form accepts the password
            svc.meta["token"] = lsapi.create_personal_access_token(url, username, password)
        return lsapi.LSClient(url, svc.meta["token"], timeout=5).whoami()

    try:
        wait_http(url + "/health", timeout, ok=lambda r: r.status_code == 200, service=svc, interval=0.5)
        wait_until(authed, max(10.0, timeout - (time.monotonic() - t0)), 0.5, "Label Studio token auth",
                   on_timeout=svc.log_tail)
    except BaseException:
        svc.stop()
        raise
    svc.meta["boot_seconds"] = round(time.monotonic() - t0, 1)
    return svc


# --------------------------------------------------------------------------------------------- backend stack
@dataclass
class BackendStack:
    """gunicorn (+ optional rq worker) sharing one environment. ``url`` is the backend's base URL."""

    web: Service
    worker: Service | None
    env: dict

    @property
    def url(self) -> str:
        return self.web.url

    def services(self) -> Iterable[Service]:
        return [s for s in (self.web, self.worker) if s is not None]

    def check_alive(self) -> None:
        for s in self.services():
            s.check_alive()

    def logs(self, n_chars: int = 4000) -> str:
        return "\n".join(f"--- {s.name} {s.log_path} ---\n{s.log_tail(n_chars)}" for s in self.services())

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=5)
        self.web.stop(timeout=10)


def start_backend(env: Mapping[str, str], log_dir: Path | str, *, with_worker: bool = True, workers: int = 1,
                  threads: int = 4, worker_class: str | None = PRELOADED_WORKER,
                  port: int | None = None) -> BackendStack:
    """Start the rq worker (when ``with_worker`` and env has REDIS_URL) and gunicorn with the same env."""
    env = {k: str(v) for k, v in env.items()}
    worker = None
    if with_worker and env.get("REDIS_URL"):
        worker = start_rq_worker(env["REDIS_URL"], env, log_dir=log_dir, worker_class=worker_class)
    try:
        web = start_gunicorn(env, port=port, workers=workers, threads=threads, log_dir=log_dir)
    except BaseException:
        if worker is not None:
            worker.stop(timeout=3)
        raise
    return BackendStack(web=web, worker=worker, env=env)
