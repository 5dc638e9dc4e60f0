"""Every environment variable is read in settings and documented in the README's table, with its default."""
from __future__ import annotations

import re
from pathlib import Path

from albackend.settings import ENV_VARS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_lists_exactly_the_settings():
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", README.read_text(), flags=re.M)
    documented = dict(rows)
    assert set(documented) >= set(ENV_VARS), sorted(set(ENV_VARS) - set(documented))
    assert {k: documented[k] for k in ENV_VARS} == {k: v[0] for k, v in ENV_VARS.items()}
