"""Every environment variable the code reads is in ENV_VARS, and the README table lists exactly those."""
from __future__ import annotations

import re

from albackend.settings import ENV_VARS, Settings
from tests.support.services import REPO_ROOT


def test_readme_table_matches_env_vars():
    readme = (REPO_ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \| (.+?) \|$", readme, re.M)
    assert [name for name, _, _ in rows] == list(ENV_VARS)
    for name, default, meaning in rows:
        assert (default, meaning) == ENV_VARS[name], name


def test_new_limits_parse(monkeypatch):
    monkeypatch.setenv("MAX_REQUEST_MB", "0.5")
    monkeypatch.setenv("REDIS_TIMEOUT", "1.5")
    s = Settings.from_env()
    assert s.max_request_mb == 0.5 and s.redis_timeout == 1.5 and s.job_history == 50 and s.body_read_timeout_s == 10
