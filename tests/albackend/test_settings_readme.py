"""The README's configuration table and albackend.settings.ENV_VARS are one list: same names, order, defaults and
meanings, so a new variable cannot ship undocumented."""

from __future__ import annotations

import re
from pathlib import Path

from albackend.settings import ENV_VARS

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \| (.*) \|$")


def readme_rows() -> list[tuple[str, str, str]]:
    return [m.groups() for line in README.read_text(encoding="utf-8").splitlines() if (m := ROW.match(line))]


def test_readme_table_matches_env_vars():
    assert readme_rows() == [(name, default, meaning) for name, (default, meaning) in ENV_VARS.items()]
