"""Warm start in the emulation: the HF learner's warm/scratch schedule, and configurations that carry it."""
from __future__ import annotations

import pytest

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from bench.emulation.config import ConfigSpec, Settings, group_settings, presets
from bench.emulation.learners import HFLearner, TrainOpts

SPEC = TaskSpec("classification", "label", "text", "text", ("sport", "money"))
TEXTS = ["the match ended in a draw", "stock prices fell today", "a late goal won it", "the bank raised rates"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gold(n: int) -> list[Example]:
    return [Example(i, TEXTS[i % 4], label_ids=[i % 2]) for i in range(n)]


def test_hf_learner_warm_start_schedule(tiny):
    opts = TrainOpts(epochs=1, min_steps=8, batch_size=4, lr=1e-3, max_length=32, warm_start=True,
                     scratch_every=2, warm_steps_fraction=0.25)
    learner = HFLearner(tiny, SPEC, opts, device="cpu")
    stats = [learner.fit(_gold(8 + 4 * i), seed=i) for i in range(4)]
    assert [s["mode"] for s in stats] == ["scratch", "warm", "scratch", "warm"]
    assert [s["steps"] for s in stats] == [8, 2, 8, 2]  # a quarter of the from-scratch plan
    assert learner.model.meta["warm_start"]["from"] == learner._previous.name
    assert len(learner.predict_targets(TEXTS)) == 4
    learner.release()
    assert learner.fits == 0 and learner._previous is None
    assert learner.fit(_gold(8), seed=0)["mode"] == "scratch"


def test_hf_learner_without_warm_start_keeps_nothing(tiny):
    learner = HFLearner(tiny, SPEC, TrainOpts(epochs=1, min_steps=2, batch_size=4, max_length=32), device="cpu")
    assert [learner.fit(_gold(4), seed=0)["mode"] for _ in range(2)] == ["scratch", "scratch"]
    assert learner._previous is None


def test_warm_configurations_acquire_separately():
    st = Settings(acquisition="splade-tiny")
    table = presets(st)
    warm, standard = table["warm"], table["standard"]
    assert warm.warm_start and warm.scratch_every == st.scratch_every
    assert warm.acquisition_key() != standard.acquisition_key()
    assert group_settings(st, warm).acquisition_train.warm_start
    assert not group_settings(st, standard).acquisition_train.warm_start
    assert "warm start" in ConfigSpec("w", warm_start=True, scratch_every=3).describe()
    with pytest.raises(ValueError, match="fraction"):
        ConfigSpec("w", warm_start=True, warm_steps_fraction=0)
    with pytest.raises(ValueError, match="scratch_every"):
        ConfigSpec("w", warm_start=True, scratch_every=-1)
