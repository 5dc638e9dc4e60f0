"""TracIn self-influence: the batched torch.func computation equals a brute-force per-example backward loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from albackend.domain.examples import Example
from albackend.models.acquisition import AcquisitionModel
from albackend.models.train import TrainConfig
from plasm.tracin import (per_example_grad_sq_norms, select_params, self_influence, tracin_self_influence,
                          train_with_checkpoints)
from tests.plasm.plasm_data import CLS_SPEC, NER_SPEC, cls_examples, make_tiny_mpnet, ner_examples
from tests.support.tiny import make_tiny_bert


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: more threads only add contention for tiny models
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return str(make_tiny_bert(tmp_path_factory.mktemp("tracin") / "bert"))


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    return str(make_tiny_mpnet(tmp_path_factory.mktemp("tracin") / "mpnet", layers=2))


def _data(kind: str) -> list[Example]:
    if kind == "classification":
        ex = cls_examples(9, seed=3)
        ex.append(Example(None, "a much longer text about the stock market and the team " * 2, label_ids=[1]))
        return ex
    ex = ner_examples(9, seed=3)
    ex.append(Example(None, "", spans=[]))  # no labelled position: loss 0, influence 0
    ex.append(Example(None, "nothing to see here at all", spans=[]))
    return ex


def _model(base: str, kind: str) -> AcquisitionModel:
    spec = CLS_SPEC if kind == "classification" else NER_SPEC
    model = AcquisitionModel.create(base, spec, device="cpu", max_length=48, seed=0)
    with torch.no_grad():  # move away from the symmetric random init so gradients differ per example
        g = torch.Generator().manual_seed(1)
        for p in model.model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def brute_force(model: torch.nn.Module, features: list[dict], names: list[str]) -> np.ndarray:
    """One unpadded forward + backward per example with the HF head's own loss; sum of squared grads."""
    wanted = set(names)
    model.eval()
    out = []
    for f in features:
        labels = torch.as_tensor(f["labels"])
        if labels.dim() == 1 and not (labels != -100).any():
            out.append(0.0)  # HF's mean over zero positions is NaN; the definition says 0
            continue
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=torch.as_tensor(f["input_ids"])[None], labels=labels[None]).loss
        loss.backward()
        out.append(sum(float(p.grad.double().pow(2).sum()) for n, p in model.named_parameters()
                       if n in wanted and p.grad is not None))
    model.zero_grad(set_to_none=True)
    return np.array(out)


@pytest.mark.parametrize("kind", ["classification", "tagging"])
@pytest.mark.parametrize("params", ["head", "head+last", "all"])
def test_batched_matches_brute_force_bert(tiny_bert, kind, params):
    model = _model(tiny_bert, kind)
    feats = model.features(_data(kind))
    names = select_params(model.model, params)
    fast = per_example_grad_sq_norms(model.model, feats, param_names=names, batch_size=4)
    ref = brute_force(model.model, feats, names)
    assert fast.shape == (len(feats),) and np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-9)
    assert len(set(np.round(ref, 6))) > 3  # the check is not vacuous
    if kind == "tagging":
        assert fast[-2] == 0.0  # the empty text


@pytest.mark.parametrize("kind", ["classification", "tagging"])
def test_batched_matches_brute_force_other_architecture(tiny_mpnet, kind):
    model = _model(tiny_mpnet, kind)
    assert model.model.config.model_type == "mpnet"
    feats = model.features(_data(kind))
    names = select_params(model.model, "head+last")
    fast = per_example_grad_sq_norms(model.model, feats, param_names=names, batch_size=3)
    np.testing.assert_allclose(fast, brute_force(model.model, feats, names), rtol=1e-4, atol=1e-9)


def test_loop_method_and_batch_size_agree(tiny_bert):
    model = _model(tiny_bert, "tagging")
    attention = model.model.config._attn_implementation
    feats = model.features(_data("tagging"))
    names = select_params(model.model, "head+last")
    a = per_example_grad_sq_norms(model.model, feats, param_names=names, batch_size=1)
    b = per_example_grad_sq_norms(model.model, feats, param_names=names, batch_size=16)
    c = per_example_grad_sq_norms(model.model, feats, param_names=names, method="loop")
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(a, c, rtol=1e-5)
    # a tiny memory budget shrinks the batch instead of failing
    d = per_example_grad_sq_norms(model.model, feats, param_names=names, batch_size=16, max_grad_bytes=1)
    np.testing.assert_allclose(a, d, rtol=1e-5)
    assert model.model.config._attn_implementation == attention  # eager attention only while computing


def test_select_params(tiny_bert):
    model = _model(tiny_bert, "classification").model
    names = [n for n, _ in model.named_parameters()]
    head = select_params(model, "head")
    last = select_params(model, "head+last")
    assert set(head) == {n for n in names if n.startswith("classifier.") or ".pooler." in n}
    assert set(head) < set(last)
    assert {n for n in set(last) - set(head)} == {n for n in names if ".layer.1." in n}
    assert select_params(model, "all") == names
    assert select_params(model, ["classifier.bias"]) == ["classifier.bias"]
    with pytest.raises(ValueError):
        select_params(model, "everything")
    with pytest.raises(ValueError):
        select_params(model, ["nope"])


def test_self_influence_is_the_checkpoint_mean_and_restores_weights(tiny_bert):
    model = _model(tiny_bert, "classification")
    feats = model.features(_data("classification"))
    names = select_params(model.model, "head+last")
    s1 = {k: v.clone() for k, v in model.model.state_dict().items()}
    s2 = {k: (v + 0.05 * torch.randn_like(v)) if v.is_floating_point() else v.clone() for k, v in s1.items()}
    mean, per = self_influence(model.model, [s1, s2], feats, param_names=names, batch_size=4)
    model.model.load_state_dict(s2)
    only2 = per_example_grad_sq_norms(model.model, feats, param_names=names)
    model.model.load_state_dict(s1)
    only1 = per_example_grad_sq_norms(model.model, feats, param_names=names)
    np.testing.assert_allclose(per, np.stack([only1, only2]), rtol=1e-6)
    np.testing.assert_allclose(mean, (only1 + only2) / 2, rtol=1e-6)
    for k, v in model.model.state_dict().items():  # the model's own weights are back
        assert torch.equal(v, s1[k])


def test_train_with_checkpoints_keeps_the_last_epochs(tiny_bert):
    model = AcquisitionModel.create(tiny_bert, CLS_SPEC, device="cpu", max_length=32, seed=0)
    ex = cls_examples(20, seed=0)  # 2 steps per epoch at batch 16
    stats, states, steps = train_with_checkpoints(model, ex, TrainConfig(epochs=2, min_steps=8, lr=1e-3,
                                                                         batch_size=16), keep_last=3)
    assert stats["steps"] == 8 and steps == [4, 6, 8]
    assert len(states) == 3 and all(v.device.type == "cpu" for v in states[0].values())
    final = model.model.state_dict()
    assert all(torch.equal(final[k].cpu(), states[-1][k]) for k in final)
    assert not all(torch.equal(states[0][k], states[-1][k]) for k in final)


def test_tracin_self_influence_end_to_end(tiny_bert):
    gold = cls_examples(16, seed=0)
    pseudo = cls_examples(8, seed=5)
    pseudo[0] = Example(None, pseudo[0].text, label_ids=[1 - pseudo[0].label_ids[0]])  # a flipped label
    seen = []
    res = tracin_self_influence(tiny_bert, CLS_SPEC, gold + pseudo, pseudo,
                                train=TrainConfig(epochs=3, min_steps=6, lr=2e-3), checkpoints=2,
                                device="cpu", max_length=32, seed=0, batch_size=4,
                                progress=lambda f, info: seen.append(f))
    assert res.self_influence.shape == (8,) and res.per_checkpoint.shape == (2, 8)
    assert np.all(res.self_influence > 0) and len(res.checkpoint_steps) == 2
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    s = res.summary()
    assert s["checkpoints"] == 2 and s["n_params"] > 0
