"""Tests for albackend.models (acquisition, train, infer, registry) on a tiny random BERT: real HF loading,
training, scoring, saving; seconds on a CPU."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import META_FILE, AcquisitionModel
from albackend.models.registry import ModelNotFound, resolve_model
from albackend.models.train import (TrainConfig, batch_loss, collate, default_lr, default_train_config,
                                    length_grouped_batches, param_groups, plan_steps, warm_train_config)
from albackend.algorithms.tagging import tag_names

CLS = TaskSpec("classification", "label", "text", "text", ("sports", "politics", "tech"))
MULTI = TaskSpec("classification", "label", "text", "text", ("sports", "politics", "tech"), multi_label=True)
NER = TaskSpec("tagging", "ner", "text", "text", ("PER", "LOC"))
CFG = TrainConfig(epochs=1, min_steps=6, batch_size=4, lr=1e-3, seed=3)

TEXTS = ["the match ended in a draw", "parliament passed the budget", "a new chip was released",
         "the striker scored twice in the second half of a long and tiring game", "vote",
         "engineers shipped the software update after weeks of testing", "goal", "senate debate"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cls_examples():
    return [Example(i, t, label_ids=[i % 3]) for i, t in enumerate(TEXTS)]


def multi_examples():
    return [Example(i, t, label_ids=sorted({i % 3, (i + 1) % 3}) if i % 2 else [i % 3]) for i, t in enumerate(TEXTS)]


def ner_examples():
    texts = ["Ada Lovelace lives in London", "Bob visited Paris", "nothing here", "Zoë moved to Łódź"]
    ents = [[("Ada Lovelace", "PER"), ("London", "LOC")], [("Bob", "PER"), ("Paris", "LOC")], [],
            [("Zoë", "PER"), ("Łódź", "LOC")]]
    out = []
    for i, (t, es) in enumerate(zip(texts, ents)):
        out.append(Example(i, t, spans=[(t.index(e), t.index(e) + len(e), lab) for e, lab in es]))
    return out


@pytest.fixture
def fp32_scoring(monkeypatch):
    """Exact batch-independence is an fp32 property: int8 activation scales are per batch (test_precision.py)."""
    monkeypatch.setenv("SCORING_PRECISION", "fp32")


def create(tiny, spec, seed=7, max_length=64):
    return AcquisitionModel.create(tiny, spec, device="cpu", max_length=max_length, seed=seed)


# ------------------------------------------------------------------------------------ classification


def test_classification_fit_predict_save_load(tiny, tmp_path):
    model = create(tiny, CLS)
    stats = model.fit(cls_examples(), CFG)
    assert stats["steps"] == 6 and stats["n_examples"] == len(TEXTS)
    assert np.isfinite(stats["final_loss"])
    preds = model.predict(TEXTS, batch_size=3)
    assert preds.probs.shape == (len(TEXTS), 3)
    assert preds.probs.dtype == np.float32
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1.0, atol=1e-5)
    assert preds.n_tokens > len(TEXTS)

    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert not list((tmp_path / "m").glob("*.bin"))  # no pickles
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    assert meta["spec"] == CLS.to_dict() and meta["training"]["steps"] == 6
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "sports", "1": "politics", "2": "tech"}

    loaded = AcquisitionModel.load(tmp_path / "m", device="cpu")
    assert loaded.spec == CLS and loaded.max_length == 64
    np.testing.assert_array_equal(loaded.predict(TEXTS, batch_size=3).probs, preds.probs)


def test_multilabel_probabilities_are_independent(tiny, tmp_path):
    model = create(tiny, MULTI)
    assert model.model.config.problem_type == "multi_label_classification"
    model.fit(multi_examples(), CFG)
    probs = model.predict(TEXTS).probs
    assert probs.shape == (len(TEXTS), 3)
    assert ((probs >= 0) & (probs <= 1)).all()
    model.save(tmp_path / "m")
    loaded = AcquisitionModel.load(tmp_path / "m", device="cpu")
    assert loaded.spec.multi_label
    np.testing.assert_array_equal(loaded.predict(TEXTS).probs, probs)


def test_training_is_deterministic_for_a_seed(tiny):
    a, b, c = create(tiny, CLS, seed=5), create(tiny, CLS, seed=5), create(tiny, CLS, seed=6)
    for m in (a, b):
        m.fit(cls_examples(), CFG)
    c.fit(cls_examples(), CFG)
    pa, pb, pc = (m.predict(TEXTS).probs for m in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.allclose(pa, pc)


def test_training_changes_the_model(tiny):
    model = create(tiny, CLS)
    before = model.predict(TEXTS).probs
    model.fit(cls_examples(), CFG)
    assert not np.allclose(before, model.predict(TEXTS).probs)


def falling_dev_scores():
    """An evaluate callback whose every epoch scores worse than the last: early stopping at the first chance."""
    scores = iter(range(100, 0, -1))
    return lambda: float(next(scores))


@pytest.mark.parametrize("min_steps, epochs, steps, history", [
    (12, 1, 12, 1),  # the floor is the whole plan (6 epochs of 2 steps): only the last epoch is scored
    (4, 10, 8, 3),  # scored from epoch 2 (step 4) on; patience 2 stops after epoch 4 (step 8)
])
def test_early_stopping_waits_for_min_steps(tiny, min_steps, epochs, steps, history):
    """min_steps is a floor even with a dev set: a noisy few-example dev set once stopped a PLASM teacher after
    3 epochs of 2 steps (--min-steps 20000 ran 6 steps) and kept its first epoch."""
    cfg = dataclasses.replace(CFG, min_steps=min_steps, epochs=epochs, patience=2)
    stats = create(tiny, CLS).fit(cls_examples(), cfg, evaluate=falling_dev_scores())
    assert stats["steps_per_epoch"] == 2 and stats["steps"] == steps, stats
    assert len(stats["dev_history"]) == history and stats["best_epoch"] == min_steps // 2, stats


@pytest.mark.usefixtures("fp32_scoring")
def test_predict_order_survives_length_sorting(tiny):
    model = create(tiny, CLS)
    batched = model.predict(TEXTS, batch_size=3)
    alone = np.concatenate([model.predict([t], batch_size=1).probs for t in TEXTS])
    np.testing.assert_allclose(batched.probs, alone, atol=1e-5)
    rev = model.predict(TEXTS[::-1], batch_size=3).probs
    np.testing.assert_allclose(rev[::-1], batched.probs, atol=1e-5)
    # distinct texts give distinct rows, so a permutation would not pass unnoticed
    assert len({tuple(np.round(r, 6)) for r in batched.probs}) == len(TEXTS)


def test_predict_empty_and_odd_texts(tiny):
    model = create(tiny, CLS, max_length=16)
    assert model.predict([]).probs.shape == (0, 3)
    probs = model.predict(["", "🙂", "מוחמד", "word " * 500]).probs
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.usefixtures("fp32_scoring")
def test_embeddings_for_mahalanobis(tiny):
    model = create(tiny, CLS)
    preds = model.predict(TEXTS, batch_size=3, embeddings=True)
    hidden = model.model.config.hidden_size
    assert preds.embeddings.shape == (len(TEXTS), hidden)
    assert np.isfinite(preds.embeddings).all()
    # same order as the inputs: each row matches the text's own embedding
    single = model.predict([TEXTS[3]], embeddings=True).embeddings
    np.testing.assert_allclose(preds.embeddings[3], single[0], atol=1e-5)
    assert model.predict(TEXTS).embeddings is None


# ------------------------------------------------------------------------------------------- tagging


def test_tagging_fit_predict_save_load(tiny, tmp_path):
    model = create(tiny, NER)
    assert model.label_names == tag_names(NER.labels)
    exs = ner_examples()
    feats = model.features(exs)
    assert all(len(f["labels"]) == len(f["input_ids"]) for f in feats)
    model.fit(exs, CFG)
    texts = [e.text for e in exs]
    preds = model.predict(texts, batch_size=2)
    assert len(preds.probs) == len(texts) == len(preds.word_ranges)
    for text, p, ranges in zip(texts, preds.probs, preds.word_ranges):
        assert p.shape == (len(ranges), 5)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert [text[s:e] for s, e in ranges] == text.split()
        for s, e, label, score in model.spans(text, ranges, p):
            assert label in NER.labels and 0 <= s < e <= len(text) and 0 < score <= 1
    model.save(tmp_path / "t")
    loaded = AcquisitionModel.load(tmp_path / "t", device="cpu")
    assert loaded.spec == NER
    for a, b in zip(loaded.predict(texts, batch_size=2).probs, preds.probs):
        np.testing.assert_array_equal(a, b)
    emb = model.predict(texts, embeddings=True).embeddings
    assert emb.shape == (len(texts), model.model.config.hidden_size)


def test_tagging_truncation_and_empty_text(tiny):
    model = create(tiny, NER, max_length=8)
    preds = model.predict(["one two three four five six seven eight nine ten", "", "🙂"])
    assert len(preds.word_ranges[0]) == 6  # 8 positions minus [CLS] and [SEP]
    assert preds.probs[1].shape == (0, 5) and preds.word_ranges[1] == []
    assert preds.probs[2].shape == (1, 5)
    empty = model.predict([])
    assert empty.probs == [] and empty.word_ranges == [] and empty.n_tokens == 0


def test_tagging_learns_a_trivial_pattern(tiny):
    """Enough steps on one repeated sentence: decoding must reproduce its span exactly."""
    text = "Bob visited Paris"
    exs = [Example(i, text, spans=[(0, 3, "PER"), (12, 17, "LOC")]) for i in range(8)]
    model = create(tiny, NER)
    model.fit(exs, TrainConfig(epochs=1, min_steps=60, batch_size=8, lr=5e-3, seed=0))
    preds = model.predict([text])
    spans = [(s, e, lab) for s, e, lab, _ in model.spans(text, preds.word_ranges[0], preds.probs[0])]
    assert spans == [(0, 3, "PER"), (12, 17, "LOC")]


# -------------------------------------------------------------------------------------------- loading


def test_unknown_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFound, match="without config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE"):
        resolve_model("no-such-org/no-such-model")
    with pytest.raises(ModelNotFound):
        resolve_model("")


def test_corrupt_model_directory_fails_to_create(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ModelNotFound):
        AcquisitionModel.create(str(tmp_path), CLS, device="cpu")


# ---------------------------------------------------------------------------------------- train recipe


@pytest.mark.parametrize("n, cfg, total, per_epoch", [
    (0, TrainConfig(epochs=5, min_steps=60, batch_size=16), 60, 1),
    (10, TrainConfig(epochs=5, min_steps=60, batch_size=16), 60, 1),
    (1000, TrainConfig(epochs=5, min_steps=60, batch_size=16), 315, 63),
    (1000, TrainConfig(epochs=5, min_steps=60, max_steps=100, batch_size=16), 100, 63),
    (10, TrainConfig(epochs=5, min_steps=60, max_steps=20, batch_size=16), 20, 1),
    (33, TrainConfig(epochs=2, min_steps=0, batch_size=16), 6, 3),
])
def test_plan_steps(n, cfg, total, per_epoch):
    assert plan_steps(n, cfg) == (total, per_epoch)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 300), min_size=0, max_size=2000), bs=st.integers(1, 40),
       seed=st.integers(0, 2**31))
def test_length_grouped_batches_cover_every_index_once(lengths, bs, seed):
    batches = length_grouped_batches(lengths, bs, np.random.default_rng(seed))
    flat = np.concatenate(batches) if batches else np.zeros(0, int)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(1 <= len(b) <= bs for b in batches)
    assert len(batches) >= -(-len(lengths) // bs)
    # inside a batch, lengths are sorted (longest first): little padding
    arr = np.asarray(lengths)
    assert all((np.diff(arr[b]) <= 0).all() for b in batches)


def test_collate_pads_dynamically():
    batch = collate([{"input_ids": [1, 2, 3], "labels": [0, 1, -100]}, {"input_ids": [4], "labels": [2]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[0, 1, -100], [2, -100, -100]]
    multi = collate([{"input_ids": [1], "labels": [1.0, 0.0]}, {"input_ids": [1, 2], "labels": [0.0, 1.0]}], 0)
    assert multi["labels"].dtype.is_floating_point
    single = collate([{"input_ids": [1], "labels": 2}], 0)
    assert single["labels"].tolist() == [2]


# ------------------------------------------------------------------------------------------ warm start


def _state(model):
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def test_fresh_head_is_the_new_params(tiny):
    model = create(tiny, NER)
    assert model.new_params == {"classifier.weight", "classifier.bias"}
    assert not model.warm_started


def test_head_lr_applies_to_new_params_only(tiny):
    model = create(tiny, NER)
    cfg = TrainConfig(lr=1e-5, head_lr=1e-2)
    groups = param_groups(model.model, cfg, model.new_params)
    names = {id(p): n for n, p in model.model.named_parameters()}
    for g in groups:
        is_head = {names[id(p)] in model.new_params for p in g["params"]}
        assert len(is_head) == 1
        assert g["lr"] == (1e-2 if is_head.pop() else 1e-5)
    assert sum(len(g["params"]) for g in groups) == len(list(model.model.parameters()))
    assert all(g["lr"] == 1e-5 for g in param_groups(model.model, TrainConfig(lr=1e-5), model.new_params))


def test_warm_start_continues_from_the_saved_weights(tiny, tmp_path):
    prev = create(tiny, NER)
    prev.fit(ner_examples(), CFG)
    prev.meta["model_version"] = "it0"
    prev.save(tmp_path / "v0")
    warm = AcquisitionModel.create(tiny, NER, device="cpu", max_length=64, seed=1, init_from=tmp_path / "v0")
    assert warm.warm_started and warm.new_params == frozenset()
    assert warm.meta["warm_start"] == {"from": str(tmp_path / "v0"), "model_version": "it0"}
    assert "training" not in warm.meta
    before = _state(prev)
    for k, v in _state(warm).items():
        assert torch.equal(v, before[k]), k
    # it starts where the previous model ended: lower loss at step 0 than a fresh head
    scratch = create(tiny, NER, seed=1)
    losses = {}
    for name, m in (("warm", warm), ("scratch", scratch)):
        m.fit(ner_examples(), TrainConfig(epochs=1, min_steps=1, max_steps=1, batch_size=4, lr=1e-12, seed=0),
              on_step=lambda step, total, loss, name=name: losses.setdefault(name, loss))
    assert losses["warm"] < losses["scratch"]


def test_warm_start_refused_falls_back_to_scratch(tiny, tmp_path, caplog):
    prev = create(tiny, NER)
    prev.fit(ner_examples(), CFG)
    prev.save(tmp_path / "v0")
    other = TaskSpec("tagging", "ner", "text", "text", ("PER", "LOC", "ORG"))
    fresh = create(tiny, other, seed=5)
    with caplog.at_level("INFO"):
        model = AcquisitionModel.create(tiny, other, device="cpu", max_length=64, seed=5, init_from=tmp_path / "v0")
    assert not model.warm_started and model.new_params
    assert "task" in caplog.text
    assert torch.equal(_state(model)["classifier.weight"], _state(fresh)["classifier.weight"])
    (tmp_path / "v0" / "model.safetensors").write_bytes(b"broken")
    model = AcquisitionModel.create(tiny, NER, device="cpu", max_length=64, init_from=tmp_path / "v0")
    assert not model.warm_started
    assert not AcquisitionModel.create(tiny, NER, device="cpu", init_from=tmp_path / "missing").warm_started


def test_warm_train_config_takes_a_fraction_of_the_steps():
    cfg = TrainConfig(epochs=5, min_steps=60, batch_size=16)
    assert plan_steps(400, cfg)[0] == 125
    warm = warm_train_config(cfg, 400, 0.5)
    assert plan_steps(400, warm)[0] == 63 and plan_steps(10, warm)[0] == 63
    assert warm.lr == cfg.lr and warm.epochs == cfg.epochs


def test_default_train_config_overrides():
    assert default_train_config("tagging").lr == default_lr("tagging")
    cfg = default_train_config("classification", 7, lr=3e-4, epochs=2)
    assert (cfg.lr, cfg.epochs, cfg.seed) == (3e-4, 2, 7)


# ------------------------------------------------------------------------------- cold-start tagging recipe

TOY_NAMES = {"PER": ["John", "Maria", "Ahmed", "Olga", "Kofi"], "LOC": ["Paris", "Tokyo", "Berlin", "Lagos", "Oslo"]}
TOY_FILLER = ("the government said on monday that prices of oil and wheat would rise again after a week of talks "
              "with unions over wages").split()


def _toy_ner(n: int, seed: int) -> list[Example]:
    """12 filler words and one well-known name per sentence: ~92% O, like news text (CoNLL-2003: 83%)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = [str(w) for w in rng.choice(TOY_FILLER, 12)]
        label = ("PER", "LOC")[i % 2]
        name, k = str(rng.choice(TOY_NAMES[label])), int(rng.integers(0, 13))
        words.insert(k, name)
        start = len(" ".join(words[:k])) + (1 if k else 0)
        out.append(Example(i, " ".join(words), spans=[(start, start + len(name), label)]))
    return out


def test_cold_tagging_recipe_predicts_entities():
    """The product's tagging recipe on 8 sentences (a pretrained encoder: the packaged MiniLM; half the default
    steps to stay fast) must tag held-out entities, where the recipe before (5e-5 for every parameter) stayed
    near all-O: the cold-start collapse that made MNLP rank by noise."""
    train, test = _toy_ner(8, 0), _toy_ner(12, 1)
    found, predicted = {}, {}
    for name, cfg in (("product", default_train_config("tagging", 0)),
                      ("before", default_train_config("tagging", 0, lr=5e-5, head_lr=0.0))):
        model = AcquisitionModel.create("minilm-l6", NER, device="cpu", max_length=32, seed=0)
        model.fit(train, dataclasses.replace(cfg, min_steps=30))
        preds = model.predict([e.text for e in test])
        spans = [{s[:3] for s in model.spans(e.text, r, p)} for e, r, p in zip(test, preds.word_ranges, preds.probs)]
        found[name] = sum(len(s & set(e.spans)) for s, e in zip(spans, test))
        predicted[name] = sum(map(len, spans))
    assert found["product"] >= 0.8 * len(test), (found, predicted)
    assert found["before"] < found["product"] / 2, (found, predicted)


def test_weighted_loss_matches_the_model_loss_and_drops_zero_weight_classes(tiny):
    model = create(tiny, NER)
    batch = collate(model.features(ner_examples()), model.tokenizer.pad_token_id)
    n_tags = len(tag_names(NER.labels))
    with torch.no_grad():
        own = model.model(**batch).loss
        ones = batch_loss(model.model, batch, torch.ones(n_tags))
        no_o = batch_loss(model.model, batch, torch.tensor([0.0] + [1.0] * (n_tags - 1)))
        logits = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        entity = (batch["labels"] > 0).reshape(-1)
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, n_tags)[entity],
                                                     batch["labels"].reshape(-1)[entity])
        smoothed = batch_loss(model.model, batch, None, smoothing=0.1)
    assert torch.allclose(own, ones, atol=1e-6)
    assert torch.allclose(no_o, expected, atol=1e-6)
    assert not torch.allclose(smoothed, own)
