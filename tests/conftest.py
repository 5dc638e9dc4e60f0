"""Shared fixtures: real redis and Label Studio processes, offline HF settings, per-test model dirs.

- ``redis_server`` (session): a redis-server on 127.0.0.1 (``.url`` = ``redis://127.0.0.1:PORT/0``). Skipped
  when redis-server is missing, a failure when env CI is set.
- ``label_studio`` (session): a real Label Studio from ``$LS_VENV`` (default ``<repo>/.venv-ls``);
  ``.url``, ``.meta["token"]``, ``.meta["boot_seconds"]``. Skipped when the venv is missing, a failure under CI.
- ``ls_client`` (session): ``tests.support.lsapi.LSClient`` for ``label_studio``.
- ``tmp_model_dir`` (function): an empty directory for a model store.
- ``chromium`` (session): the path of a headless Chromium (tests.support.browser). Skipped when
  /usr/bin/chromium is missing, a failure under CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the backend is not pip-installed; tests import it from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from albackend.models.runtime import configure_runtime  # noqa: E402
from tests.support import services  # noqa: E402


def pytest_configure(config) -> None:
    """The test session is an entry point: quiet transformers, no tokenizers thread pool (as _wsgi.py does)."""
    configure_runtime()


def _missing(reason: str) -> None:
    """Skip, or fail when running under CI (where every prerequisite must be present)."""
    if services.in_ci():
        pytest.fail(f"{reason} (env CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _offline_hf(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tmp_model_dir(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if services.redis_server_bin() is None:
        _missing("redis-server not found (apt-get install redis-server, or set REDIS_SERVER)")
    svc = services.start_redis(tmp_path_factory.mktemp("redis"))
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    if not services.have_label_studio():
        _missing(f"Label Studio venv not found: {services.label_studio_bin()} (set LS_VENV or build .venv-ls)")
    svc = services.start_label_studio(tmp_path_factory.mktemp("labelstudio"))
    print(f"\n[label_studio] {svc.url} ready in {svc.meta['boot_seconds']} s (log {svc.log_path})")
    yield svc
    svc.stop(timeout=15)


@pytest.fixture(scope="session")
def ls_client(label_studio):
    from tests.support.lsapi import LSClient

    return LSClient.for_service(label_studio)


@pytest.fixture(scope="session")
def chromium():
    from tests.support import browser

    if not browser.have_chromium():
        _missing(f"no Chromium at {browser.CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    return browser.CHROMIUM


@pytest.fixture(scope="session")
def shared_data():
    from tests.support import datasets

    if not datasets.have_shared_data():
        _missing(f"shared datasets not found under {datasets.shared_data_dir()} (set SHARED_DATA)")
    return datasets.shared_data_dir()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on shared cores oversubscription costs 10x."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """A random 2-layer BERT directory (real tokenizer vocab) shared by the unit tests."""
    from tests.support.tiny import make_tiny_bert

    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert"))
