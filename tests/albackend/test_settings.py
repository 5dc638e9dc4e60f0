"""Tests for albackend.settings: parsing, validation, and the README table matching ENV_VARS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from albackend.settings import ENV_VARS, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults(clean_env):
    s = Settings.from_env()
    assert s.warm_start is False
    assert s.warm_start_steps_fraction == float(ENV_VARS["WARM_START_STEPS_FRACTION"][0])
    assert s.scratch_every == int(ENV_VARS["SCRATCH_EVERY"][0])


def test_warm_start_variables(clean_env):
    clean_env.setenv("WARM_START", "true")
    clean_env.setenv("WARM_START_STEPS_FRACTION", "0.25")
    clean_env.setenv("SCRATCH_EVERY", "0")
    s = Settings.from_env()
    assert (s.warm_start, s.warm_start_steps_fraction, s.scratch_every) == (True, 0.25, 0)


@pytest.mark.parametrize("name,value,match", [
    ("WARM_START_STEPS_FRACTION", "0", r"\(0, 1\]"), ("WARM_START_STEPS_FRACTION", "1.5", r"\(0, 1\]"),
    ("WARM_START_STEPS_FRACTION", "half", "not a valid float"), ("SCRATCH_EVERY", "-2", ">= 0"),
    ("SCRATCH_EVERY", "2.5", "not a valid int")])
def test_bad_values_name_the_variable(clean_env, name, value, match):
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=match) as exc:
        Settings.from_env()
    assert name in str(exc.value)


def test_readme_table_matches_env_vars():
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \| (.+) \|$", README.read_text(encoding="utf-8"), re.M)
    assert [(n, d, m) for n, d, m in rows] == [(n, d, m) for n, (d, m) in ENV_VARS.items()]


def test_train_config_uses_the_recipe_defaults_and_env_overrides(clean_env):
    from albackend.domain.labelconfig import TaskSpec
    from albackend.models.train import default_head_lr, default_lr
    from albackend.services.training import train_config

    ner = TaskSpec("tagging", "label", "text", "text", ("PER",))
    cls = TaskSpec("classification", "label", "text", "text", ("a", "b"))
    cfg = train_config(Settings.from_env(), ner)
    assert (cfg.lr, cfg.head_lr) == (default_lr("tagging"), default_head_lr("tagging")) and cfg.head_lr > cfg.lr
    assert train_config(Settings.from_env(), cls).head_lr == default_head_lr("classification")
    clean_env.setenv("TRAIN_LR", "3e-5")
    clean_env.setenv("TRAIN_HEAD_LR", "1e-3")
    clean_env.setenv("TRAIN_MIN_STEPS", "7")
    cfg = train_config(Settings.from_env(), ner)
    assert (cfg.lr, cfg.head_lr, cfg.min_steps, cfg.seed) == (3e-5, 1e-3, 7, 42)
