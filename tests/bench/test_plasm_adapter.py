"""The emulation's PLASM learner builds the product's PlasmConfig from the emulation settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from albackend.domain.labelconfig import TaskSpec
from bench.emulation.config import ConfigSpec, Settings
from bench.emulation.learners import TrainOpts
from bench.emulation.plasm_adapter import PlasmLearner

SPEC = TaskSpec("tagging", "label", "text", "text", ("PER", "LOC"))


def _learner(plasm: dict) -> PlasmLearner:
    st = Settings(successor_train=TrainOpts(min_steps=100, max_steps=120), plasm=plasm)
    cfg = ConfigSpec("plasm", "student", plasm=True, teacher="minilm-l6", successor="mpnet")
    return PlasmLearner(cfg, SimpleNamespace(spec=SPEC), st)


def test_plasm_successor_steps_override_only_plasm_successor():
    cfg = _learner({"successor_train": {"min_steps": 300, "max_steps": 360}, "dev_fraction": 0.2})._config(3)
    assert (cfg.successor_train.min_steps, cfg.successor_train.max_steps) == (300, 360)
    assert cfg.dev_fraction == 0.2 and cfg.seed == 3
    plain = _learner({})._config(3)
    assert (plain.successor_train.min_steps, plain.successor_train.max_steps) == (100, 120)
    # everything else of the successor's recipe is the gold-only successors' one
    assert cfg.successor_train.lr == plain.successor_train.lr
    assert cfg.successor_train.batch_size == plain.successor_train.batch_size


def test_unknown_successor_option_is_refused():
    with pytest.raises(ValueError, match="unknown training option"):
        _learner({"successor_train": {"max_stepz": 360}})._config(0)
