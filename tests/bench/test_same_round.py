"""The emulation runs the product's AL round: with the same model, seed and pool, the backend's rescoring
(`albackend.services.rescoring.rescore_pool`) and the emulation's query (`bench.emulation.loop.Scorer`) rescore
exactly the same tasks on a full-pool iteration and on a UPS iteration."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from albackend.domain.examples import Example
from albackend.domain.labelconfig import parse_label_config
from albackend.models.acquisition import AcquisitionModel
from albackend.services.rescoring import Pool, rescore_pool
from albackend.settings import Settings
from bench.emulation.config import ConfigSpec
from bench.emulation.data import Dataset, Split
from bench.emulation.learners import HFLearner, TrainOpts
from bench.emulation.loop import Scorer
from albackend.algorithms.ups.cache import ScoreCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
          '<Choice value="a"/><Choice value="b"/></Choices></View>')
WORDS = "match goal stock market chip data team bank phone price coach trade".split()


def rescored(cache: ScoreCache, iteration: int) -> set[int]:
    return {int(t) for t in cache.task_ids[cache.iteration == iteration]}


def test_backend_and_emulation_rescore_the_same_tasks(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SCORING_PRECISION", "fp32")  # int8 activation scales depend on the batch composition
    spec = parse_label_config(CONFIG)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 6)) + f" {i}" for i in range(300)]
    model = AcquisitionModel.create(tiny, spec, device="cpu", max_length=32, seed=0)
    learner = HFLearner(tiny, spec, TrainOpts(max_length=32))
    learner.model = model
    ds = Dataset("toy", spec, Split([Example(i, t, [i % 2]) for i, t in enumerate(texts)]), Split([]))
    seed = 11
    scorer = Scorer(ConfigSpec("ups", acquisition=tiny, ups=True, full_iterations="0"), ds, seed)
    settings = dataclasses.replace(Settings.from_env(), model_dir=tmp_path, seed=seed, ups_enabled=True,
                                   ups_gamma=0.1, ups_t=0.01, ups_full_iterations="0", ups_full_every=0,
                                   infer_batch_size=64, device="cpu")
    labeled = np.array([], dtype=np.int64)
    for it in (0, 1, 2):
        query, _, _ = scorer.query(learner, labeled, budget=10, it=it, measure=False)
        unlabeled = np.setdiff1d(np.arange(len(texts)), labeled)
        rescore_pool(model, Pool(unlabeled, [texts[i] for i in unlabeled], 0), project_dir=tmp_path,
                     version=f"v{it}", iteration=it, strategy="least_confident", settings=settings)
        product = ScoreCache.load(tmp_path / "scores.npz")
        assert rescored(product, it) == rescored(scorer.cache, it), f"iteration {it}"
        assert np.allclose(*(c.lookup(unlabeled)[0] for c in (product, scorer.cache)), atol=1e-5)
        if it:
            assert 0 < len(rescored(product, it)) < len(unlabeled)  # a real UPS subsample
        labeled = np.union1d(labeled, query)
