"""Per-project model store with atomic publish.

Layout under MODEL_DIR/projects/<project>/:
  versions/<model_version>/   complete model directories (written under tmp/ first, then renamed)
  CURRENT                     JSON {"model_version", "iteration", "published_at"}: replaced with os.replace
  scores.npz                  the UPS score cache
  predictions.sqlite          last prediction per task (see predstore.py)
  jobs/<job_id>.json          job records, readable by every web and worker process
A crashed job leaves only a tmp/ directory behind, which is never read and is swept on the next publish;
the model in CURRENT stays the working one until a complete new directory replaces it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
# What Label Studio sends: the bare integer id, or "<id>.<created timestamp>" in /setup. 18 digits keep
# every key a signed 64-bit integer and far below any file-name limit.
_PROJECT = re.compile(r"([0-9]{1,18})(?:\.[0-9]{1,20})*")
KEEP_VERSIONS = 3


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_default(o: object) -> object:
    """``json.dumps`` fallback: numpy scalars and arrays become Python numbers and lists, anything else its str."""
    return o.tolist() if hasattr(o, "tolist") else str(o)


def project_key(project: object) -> str:
    """LS sends "<id>.<created_ts>" in /setup and the bare id elsewhere: the id alone names the project.

    Only those two forms are accepted: anything else ("1.abc", 1e400, "-rf", 300 digits) would alias another
    project, name a strange directory or exceed the file-name limit.
    """
    if isinstance(project, int) and not isinstance(project, bool) and 0 <= project < 10**18:
        return str(project)
    match = _PROJECT.fullmatch(project) if isinstance(project, str) else None
    if match is None:
        raise ValueError(f"invalid project id {_shorten(project)}: expected <int> or <int>.<timestamp>")
    return str(int(match.group(1)))


def _shorten(value: object, limit: int = 40) -> str:
    """repr() cut to a readable length: error messages must not echo a megabyte of input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _mtime(path: Path) -> float:
    """mtime, or 0 for a file another process removed meanwhile (job records are pruned concurrently)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class ModelStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def project_dir(self, project: object) -> Path:
        return self.root / "projects" / project_key(project)

    def current(self, project: object) -> dict | None:
        """{"model_version", "iteration", "path", ...} of the published model, or None."""
        path = self.project_dir(project) / "CURRENT"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        version = info.get("model_version") if isinstance(info, dict) else None
        if not isinstance(version, str) or not version or _SAFE.search(version) or version in (".", ".."):
            return None  # a damaged CURRENT must not resolve to versions/ itself or outside it
        model_path = self.project_dir(project) / "versions" / version
        if not model_path.is_dir():
            return None
        info["path"] = str(model_path)
        return info

    def current_version(self, project: object) -> str | None:
        info = self.current(project)
        return info["model_version"] if info else None

    def versions(self, project: object) -> list[str]:
        vdir = self.project_dir(project) / "versions"
        if not vdir.is_dir():
            return []
        return sorted((p.name for p in vdir.iterdir() if p.is_dir()), key=lambda n: (vdir / n).stat().st_mtime)

    def all_projects(self) -> list[str]:
        pdir = self.root / "projects"
        if not pdir.is_dir():
            return []
        return sorted(p.name for p in pdir.iterdir() if p.is_dir() and _PROJECT.fullmatch(p.name))

    def next_version_name(self, project: object, iteration: int, prefix: str = "al") -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        return f"{prefix}-{project_key(project)}-it{iteration}-{stamp}-{uuid.uuid4().hex[:6]}"

    @contextmanager
    def staging(self, project: object) -> Iterator[Path]:
        """A scratch directory for a model being built; removed unless published."""
        tmp_root = self.project_dir(project) / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=tmp_root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, project: object, staged: Path, model_version: str, iteration: int, **extra) -> dict:
        """Move a complete staged directory into versions/ and point CURRENT at it."""
        vdir = self.project_dir(project) / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        target = vdir / model_version
        os.replace(staged, target)
        info = {"model_version": model_version, "iteration": iteration,
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        atomic_write_text(self.project_dir(project) / "CURRENT", json.dumps(info))
        self._prune(project, keep={model_version})
        info["path"] = str(target)
        return info

    def _prune(self, project: object, keep: set[str]) -> None:
        names = self.versions(project)
        for name in names[:-KEEP_VERSIONS]:
            if name not in keep:
                shutil.rmtree(self.project_dir(project) / "versions" / name, ignore_errors=True)
        tmp_root = self.project_dir(project) / "tmp"
        if tmp_root.is_dir():  # leftovers of crashed jobs older than a day
            for p in tmp_root.iterdir():
                if time.time() - p.stat().st_mtime > 86400:
                    shutil.rmtree(p, ignore_errors=True)

    # ---- job records ----------------------------------------------------------------------------------
    def write_job(self, project: object, record: dict) -> None:
        atomic_write_text(self.project_dir(project) / "jobs" / f"{record['id']}.json", json.dumps(record, default=str))

    def prune_jobs(self, project: object, keep: int) -> int:
        """Delete all but the newest `keep` job records (and stray heartbeats); returns how many went."""
        jdir = self.project_dir(project) / "jobs"
        if keep <= 0 or not jdir.is_dir():
            return 0
        files = sorted(jdir.glob("*.json"), key=_mtime, reverse=True)[keep:]
        for f in files:
            for path in (f, f.with_suffix(".beat")):
                try:
                    path.unlink()
                except OSError:
                    pass
        return len(files)

    def read_job(self, project: object, job_id: str) -> dict | None:
        try:
            return json.loads((self.project_dir(project) / "jobs" / f"{_SAFE.sub('_', job_id)}.json").read_text())
        except (OSError, ValueError):
            return None

    def jobs(self, project: object, limit: int = 20) -> list[dict]:
        jdir = self.project_dir(project) / "jobs"
        if not jdir.is_dir():
            return []
        files = sorted(jdir.glob("*.json"), key=_mtime, reverse=True)[:limit]
        out = []
        for f in files:
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
        return out
