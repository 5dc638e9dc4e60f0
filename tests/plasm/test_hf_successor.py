"""The HF-encoder successor: Successor protocol, save/load (also plain HF dirs), transformers.pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from albackend.models.train import TrainConfig
from plasm.successors import HF_MODEL_TYPES, Successor, load_successor
from plasm.successors import base as successor_base
from plasm.successors.hf import HFSuccessor, is_hf_directory
from tests.plasm.plasm_data import classification_texts, make_tiny_mpnet, ner_texts
from tests.support.tiny import make_tiny_bert

FAST = TrainConfig(epochs=2, min_steps=8, lr=2e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-succ")
    return {"bert": str(make_tiny_bert(root / "bert")), "mpnet": str(make_tiny_mpnet(root / "mpnet"))}


def test_classification_successor_round_trip(bases, tmp_path):
    from transformers import pipeline

    texts, labels = classification_texts(24, seed=0)
    dev_x, dev_y = classification_texts(6, seed=1)
    model = HFSuccessor(bases["mpnet"], ["sports", "finance"], train=FAST, device="cpu", max_length=32)
    assert isinstance(model, Successor)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict_proba(["x"])
    stats = model.fit(texts, labels, dev_texts=dev_x, dev_targets=dev_y, seed=0)
    assert stats["dev_metric"] == "accuracy" and 0 < stats["steps"] <= 8 and stats["train_examples"] == 24
    assert stats["best_dev_metric"] is not None and 1 <= len(stats["dev_history"]) <= stats["epochs"]
    probs = model.predict_proba(dev_x)
    assert probs.shape == (6, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert model.predict([]).shape == (0,)
    model.save(tmp_path / "s")
    assert (tmp_path / "s" / "model.safetensors").is_file() and is_hf_directory(tmp_path / "s")
    for loaded in (load_successor(tmp_path / "s", device="cpu"), successor_base.load_successor(tmp_path / "s")):
        assert isinstance(loaded, HFSuccessor) and loaded.labels == ["sports", "finance"]
        np.testing.assert_allclose(loaded.predict_proba(dev_x), probs, atol=1e-5)
    clf = pipeline("text-classification", model=str(tmp_path / "s"), device="cpu")
    assert clf("the team won")[0]["label"] in ("sports", "finance")
    # a plain HF directory (no albackend.json) still loads: the spec comes from config.json
    (tmp_path / "s" / "albackend.json").unlink()
    plain = load_successor(tmp_path / "s", device="cpu")
    assert plain.kind == "classification" and plain.labels == ["sports", "finance"]
    np.testing.assert_allclose(plain.predict_proba(dev_x), probs, atol=1e-5)


def test_tagging_successor_spans(bases, tmp_path):
    texts, spans = ner_texts(24, seed=0)
    model = HFSuccessor(bases["bert"], ["PER", "LOC"], kind="tagging", train=FAST, device="cpu", max_length=32)
    stats = model.fit(texts, spans, dev_texts=texts[:4], dev_targets=spans[:4], seed=0)
    assert stats["dev_metric"] == "f1"
    assert model.tag_names == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    probs = model.predict_proba(["alice flew to paris", ""])
    assert probs[0].shape == (4, 5) and probs[1].shape == (0, 5)
    out = model.predict_spans(["alice flew to paris"])
    assert len(out) == 1 and all(0 <= s < e <= 19 and lab in ("PER", "LOC") for s, e, lab, _ in out[0])
    model.save(tmp_path / "t")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["model_type"] == "bert" and config["id2label"]["1"] == "B-PER"
    loaded = load_successor(tmp_path / "t")
    assert loaded.kind == "tagging" and loaded.predict_spans(["alice flew to paris"]) == out
    (tmp_path / "t" / "albackend.json").unlink()
    assert load_successor(tmp_path / "t").labels == ["PER", "LOC"]


def test_bad_input(bases, tmp_path):
    cls = HFSuccessor(bases["bert"], ["a", "b"], device="cpu")
    with pytest.raises(ValueError, match="class ids"):
        cls.fit(["x", "y"], [0, 2])
    with pytest.raises(ValueError, match="targets"):
        cls.fit(["x", "y"], [0])
    with pytest.raises(ValueError, match="predict_spans"):
        cls.predict_spans(["x"])
    tag = HFSuccessor(bases["bert"], ["PER"], kind="tagging", device="cpu")
    with pytest.raises(ValueError, match="not one of"):
        tag.fit(["Bob ran"], [[(0, 3, "LOC")]])
    with pytest.raises(ValueError, match="out of range"):
        tag.fit(["Bob ran"], [[(0, 30, "PER")]])
    with pytest.raises(ValueError):
        HFSuccessor(bases["bert"])
    assert {"hf", "bert", "mpnet"} <= set(HF_MODEL_TYPES)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "weird", "architectures": ["WeirdModel"]}))
    with pytest.raises(ValueError, match="no sequence or token classification"):
        load_successor(tmp_path)
