"""Classical successors (CNN classifier, CNN-BiLSTM tagger) trained from scratch on tiny synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plasm.successors.base import Successor, load_successor
from plasm.successors.bilstm import BiLSTMTaggerSuccessor, iob2_to_spans, repair_iob2
from plasm.successors.cnn import CNNClassifierSuccessor
from plasm.successors.vocab import PAD_ID, UNK_ID, Vocab
from plasm.words import spans_to_iob2, tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---------------------------------------------------------------------------------------------- data

SPORTS = ["goal", "match", "team", "coach", "player", "league", "score"]
FINANCE = ["stock", "market", "bank", "price", "trade", "shares", "profit"]
FILLER = ["the", "a", "today", "yesterday", "new", "big", "report", "said", "about", "very", "this", "week",
          "people", "news", "of", "in", "on", "it", "was", "good"]


def make_classification(n: int, seed: int):
    rng = np.random.default_rng(seed)
    texts, ys = [], []
    for _ in range(n):
        y = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=6)) + list(rng.choice([SPORTS, FINANCE][y], size=2))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + " .")
        ys.append(y)
    return texts, ys


NAMES = ["Alice", "Bob", "Carol", "David", "Émile", "Zoë", "Anna Smith", "John Lee", "Grace", "Henry"]
TEMPLATES = ["{0} went to the market .", "Yesterday {0} met {1} in town", "I saw {0} , said the man .",
             "the report was written by {0}", "{0} and {1} play chess 🎉", "nobody called today ☕",
             "did {0} call {1} ?", "the big city is very quiet"]


def build_tagging_text(template: str, names: list[str], rng) -> tuple[str, list[tuple[int, int, str]]]:
    """Fill ``template`` with ``names``, random extra whitespace between pieces; return text and PER spans."""
    text, spans = "", []
    pieces = template.split(" ")
    for k, piece in enumerate(pieces):
        if k:
            text += " " * int(rng.integers(1, 3))
        if piece.startswith("{") and piece.endswith("}"):
            name = names[int(piece[1:-1])]
            spans.append((len(text), len(text) + len(name), "PER"))
            text += name
        else:
            text += piece
    return text, spans


def make_tagging(n: int, seed: int):
    rng = np.random.default_rng(seed)
    texts, targets = [], []
    for _ in range(n):
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        names = [str(x) for x in rng.choice(NAMES, size=2, replace=False)]
        text, spans = build_tagging_text(template, names, rng)
        texts.append(text)
        targets.append(spans)
    return texts, targets


SMALL_CNN = dict(embedding_dim=32, num_filters=16, epochs=6)
SMALL_TAGGER = dict(word_dim=24, char_dim=12, char_filters=12, hidden_size=32, ff_size=32, epochs=3)


@pytest.fixture(scope="module")
def cls_data():
    return make_classification(160, seed=1), make_classification(60, seed=2)


@pytest.fixture(scope="module")
def tag_data():
    return make_tagging(160, seed=1), make_tagging(60, seed=2)


@pytest.fixture(scope="module")
def trained_cnn(cls_data):
    (train_x, train_y), (dev_x, dev_y) = cls_data
    model = CNNClassifierSuccessor(["sports", "finance"], device="cpu", epochs=10, patience=2)
    stats = model.fit(train_x, train_y, dev_texts=dev_x, dev_targets=dev_y, seed=0)
    return model, stats


@pytest.fixture(scope="module")
def trained_tagger(tag_data):
    (train_x, train_y), (dev_x, dev_y) = tag_data
    model = BiLSTMTaggerSuccessor(["PER"], device="cpu", epochs=10, patience=2)
    stats = model.fit(train_x, train_y, dev_texts=dev_x, dev_targets=dev_y, seed=0)
    return model, stats


# ------------------------------------------------------------------------------------ tokenizer, vocab


def test_tokenize_offsets_are_exact_with_unicode_emoji_and_whitespace():
    text = "  Zoë\tmet  Émile…   at café ☕🎉 , don't!\n"
    tokens = tokenize(text)
    assert [t.text for t in tokens] == ["Zoë", "met", "Émile", "…", "at", "café", "☕", "🎉", ",", "don", "'", "t", "!"]
    for t in tokens:
        assert text[t.start:t.end] == t.text
    lowered = tokenize(text, lowercase=True)
    assert [t.text for t in lowered][:3] == ["zoë", "met", "émile"]
    assert [(t.start, t.end) for t in lowered] == [(t.start, t.end) for t in tokens]
    assert tokenize("") == [] and tokenize(" \t\n ") == []


def test_vocab_build_order_min_freq_max_size_and_json_round_trip(tmp_path):
    seqs = [["b", "a", "c"], ["a", "b"], ["a", "d", "<unk>"]]
    vocab = Vocab.build(seqs)
    assert vocab.itos == ["<pad>", "<unk>", "a", "b", "c", "d"]  # by count, ties alphabetical
    assert vocab.lookup("<pad>") == PAD_ID and vocab.encode(["a", "zzz"]) == [2, UNK_ID]
    assert Vocab.build(seqs, min_freq=2).itos == ["<pad>", "<unk>", "a", "b"]
    assert Vocab.build(seqs, max_size=3).itos == ["<pad>", "<unk>", "a"]
    chars = Vocab.build_chars(["aab", "b"])
    assert chars.itos == ["<pad>", "<unk>", "a", "b"]
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == vocab
    with pytest.raises(ValueError):
        Vocab(["a", "<pad>", "<unk>"])


# -------------------------------------------------------------------------------------------- IOB2


def test_spans_to_iob2_overlap_rules():
    text = "New York-based Anna Smith met Bob"
    tokens = tokenize(text)  # New York - based Anna Smith met Bob
    spans = [(0, 8, "LOC"), (15, 25, "PER"), (31, 33, "PER")]  # last span covers part of "Bob"
    assert spans_to_iob2(tokens, spans) == ["B-LOC", "I-LOC", "O", "O", "B-PER", "I-PER", "O", "B-PER"]
    # adjacent spans of the same label stay separate; a word claimed earlier keeps its tag
    tokens = tokenize("Ann Bob Cy")
    assert spans_to_iob2(tokens, [(0, 3, "PER"), (4, 7, "PER")]) == ["B-PER", "B-PER", "O"]
    assert spans_to_iob2(tokens, [(0, 5, "PER"), (4, 10, "ORG")]) == ["B-PER", "I-PER", "B-ORG"]
    assert spans_to_iob2(tokens, []) == ["O", "O", "O"]


def test_iob2_decoding_edge_cases():
    assert iob2_to_spans([]) == []
    assert iob2_to_spans(["O", "O"]) == []
    assert iob2_to_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC")]
    assert iob2_to_spans(["I-PER", "I-PER"]) == [(0, 2, "PER")]  # lone I- starts a span
    assert iob2_to_spans(["O", "I-PER"]) == [(1, 2, "PER")]
    assert iob2_to_spans(["B-PER", "I-LOC", "I-LOC"]) == [(0, 1, "PER"), (1, 3, "LOC")]
    assert iob2_to_spans(["B-PER", "B-PER", "I-PER"]) == [(0, 1, "PER"), (1, 3, "PER")]
    assert iob2_to_spans(["B-PER", "O", "I-PER"]) == [(0, 1, "PER"), (2, 3, "PER")]
    assert repair_iob2(["O", "I-PER", "I-PER", "I-LOC"]) == ["O", "B-PER", "I-PER", "B-LOC"]


def test_predict_spans_offsets_are_exact_with_given_probabilities():
    model = BiLSTMTaggerSuccessor(["PER", "LOC"], device="cpu")
    assert model.tag_names == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    texts = ["  🎉 Zoë\t\tvisited  Nový   Jičín ☕ ", "", "Émile"]
    plan = [["O", "B-PER", "O", "I-LOC", "I-LOC", "O"], [], ["I-PER"]]
    names = model.tag_names

    def fake_proba(batch_texts):
        out = []
        for tags in plan:
            probs = np.full((len(tags), len(names)), 0.05, dtype=np.float32)
            for i, tag in enumerate(tags):
                probs[i, names.index(tag)] = 0.8
            out.append(probs)
        return out

    model.predict_proba = fake_proba
    spans = model.predict_spans(texts)
    assert [[(texts[k][s:e], label) for s, e, label, _ in doc] for k, doc in enumerate(spans)] == [
        [("Zoë", "PER"), ("Nový   Jičín", "LOC")], [], [("Émile", "PER")]]
    assert all(score == pytest.approx(0.8) for doc in spans for *_, score in doc)


# --------------------------------------------------------------------------------------------- CNN


def test_cnn_learns_and_keeps_best_dev_weights(trained_cnn, cls_data):
    model, stats = trained_cnn
    (train_x, train_y), (dev_x, dev_y) = cls_data
    assert isinstance(model, Successor) and model.kind == "classification"
    assert set(stats) >= {"epochs", "steps", "seconds", "best_dev_metric", "best_epoch"}
    assert 1 <= stats["epochs"] <= 10 and stats["steps"] == stats["epochs"] * 2  # 160 texts, batch 128
    train_acc = float((model.predict(train_x) == np.array(train_y)).mean())
    dev_acc = float((model.predict(dev_x) == np.array(dev_y)).mean())
    assert train_acc >= 0.95 and dev_acc >= 0.95, (train_acc, dev_acc)
    assert dev_acc == pytest.approx(stats["best_dev_metric"])  # the best weights were restored
    probs = model.predict_proba(dev_x)
    assert probs.shape == (len(dev_x), 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.predict_proba([]).shape == (0, 2)
    assert model.predict_proba(["", "🎉"]).shape == (2, 2)  # no known token: still a distribution


def test_early_stopping_restores_the_best_dev_weights(cls_data):
    (train_x, train_y), (dev_x, dev_y) = cls_data
    flipped = [1 - y for y in dev_y]  # the more it learns the train set, the worse it gets on this "dev" set
    model = CNNClassifierSuccessor(["sports", "finance"], device="cpu", **{**SMALL_CNN, "epochs": 30}, patience=2)
    stats = model.fit(train_x, train_y, dev_texts=dev_x, dev_targets=flipped, seed=0)
    assert stats["epochs"] == stats["best_epoch"] + 2 < 30, stats
    dev_acc = float((model.predict(dev_x) == np.array(flipped)).mean())
    assert dev_acc == pytest.approx(stats["best_dev_metric"])
    no_dev = CNNClassifierSuccessor(["sports", "finance"], device="cpu", **{**SMALL_CNN, "epochs": 4}, patience=1)
    stats = no_dev.fit(train_x, train_y, seed=0)
    assert stats["epochs"] == 4 and stats["best_dev_metric"] is None and stats["best_epoch"] is None


def test_cnn_probabilities_do_not_depend_on_batch_composition(trained_cnn, cls_data):
    model, _ = trained_cnn
    texts = cls_data[1][0][:8] + ["goal", "a very long text about the stock market " * 20]
    batched = model.predict_proba(texts)
    single = np.concatenate([model.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_cnn_save_load_round_trip(trained_cnn, cls_data, tmp_path):
    model, _ = trained_cnn
    dev_x = cls_data[1][0]
    model.save(tmp_path / "cnn")
    assert sorted(p.name for p in (tmp_path / "cnn").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    config = json.loads((tmp_path / "cnn" / "config.json").read_text())
    assert config["model_type"] == "cnn_classifier" and config["labels"] == ["sports", "finance"]
    for loaded in (CNNClassifierSuccessor.load(tmp_path / "cnn"), load_successor(tmp_path / "cnn", device="cpu")):
        assert isinstance(loaded, CNNClassifierSuccessor) and loaded.config == model.config
        np.testing.assert_array_equal(loaded.predict_proba(dev_x), model.predict_proba(dev_x))


def test_cnn_is_deterministic_given_the_seed(cls_data):
    (train_x, train_y), _ = cls_data
    runs = []
    for seed in (3, 3, 4):
        model = CNNClassifierSuccessor(["sports", "finance"], device="cpu", **SMALL_CNN)
        model.fit(train_x, train_y, seed=seed)
        runs.append(model.predict_proba(train_x[:20]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_cnn_rejects_bad_input(cls_data):
    model = CNNClassifierSuccessor(["a", "b"], device="cpu")
    with pytest.raises(RuntimeError):
        model.predict_proba(["x"])
    with pytest.raises(ValueError):
        model.fit(["x", "y"], [0, 2])
    with pytest.raises(ValueError):
        model.fit(["x", "y"], [0])
    with pytest.raises(ValueError):
        CNNClassifierSuccessor(["a", "a"])


# ------------------------------------------------------------------------------------------ tagger


def _span_set(texts, spans_per_text):
    return {(k, texts[k][s:e], label) for k, doc in enumerate(spans_per_text) for s, e, label, *_ in doc}


def test_tagger_learns_names_and_decodes_exact_spans(trained_tagger, tag_data):
    model, stats = trained_tagger
    (train_x, train_y), (dev_x, dev_y) = tag_data
    assert isinstance(model, Successor) and model.kind == "tagging"
    assert stats["best_dev_metric"] >= 0.9, stats
    predicted = model.predict_spans(dev_x)
    gold = _span_set(dev_x, dev_y)
    found = _span_set(dev_x, predicted)
    tp = len(gold & found)
    f1 = 2 * tp / (len(gold) + len(found))
    assert f1 >= 0.9, (f1, sorted(gold ^ found)[:10])
    for k, doc in enumerate(predicted):
        for start, end, label, score in doc:
            assert dev_x[k][start:end] == dev_x[k][start:end].strip() and 0 < score <= 1
    # unicode, emoji and extra whitespace: offsets are exact into the original text
    text = "  🎉   Zoë\t and    Anna   Smith play chess ☕  "
    spans = model.predict_spans([text])[0]
    assert [(text[s:e], label) for s, e, label, _ in spans] == [("Zoë", "PER"), ("Anna   Smith", "PER")]


def test_tagger_probabilities_shapes(trained_tagger):
    model, _ = trained_tagger
    texts = ["Alice went home .", "", "  ", "🎉"]
    probs = model.predict_proba(texts)
    assert [p.shape for p in probs] == [(4, 3), (0, 3), (0, 3), (1, 3)]
    np.testing.assert_allclose(probs[0].sum(axis=1), 1.0, atol=1e-5)
    assert model.predict_spans(["", "  "]) == [[], []]
    # batch composition does not change a text's probabilities (packed BiLSTM, masked char pooling)
    single = model.predict_proba(["Alice went home ."])[0]
    np.testing.assert_allclose(single, model.predict_proba(["x " * 30, "Alice went home ."])[1], atol=1e-5)


def test_tagger_save_load_round_trip(trained_tagger, tag_data, tmp_path):
    model, _ = trained_tagger
    dev_x = tag_data[1][0]
    model.save(tmp_path / "tagger")
    loaded = load_successor(tmp_path / "tagger")
    assert isinstance(loaded, BiLSTMTaggerSuccessor) and loaded.tag_names == model.tag_names
    assert loaded.char_vocab == model.char_vocab and loaded.vocab == model.vocab
    for a, b in zip(loaded.predict_proba(dev_x), model.predict_proba(dev_x)):
        np.testing.assert_array_equal(a, b)
    assert loaded.predict_spans(dev_x) == model.predict_spans(dev_x)


def test_tagger_is_deterministic_given_the_seed(tag_data):
    (train_x, train_y), _ = tag_data
    runs = []
    for seed in (5, 5, 6):
        model = BiLSTMTaggerSuccessor(["PER"], device="cpu", **SMALL_TAGGER)
        model.fit(train_x[:64], train_y[:64], seed=seed)
        runs.append(np.concatenate(model.predict_proba(train_x[:10])))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_tagger_rejects_bad_spans_and_unknown_model_type(tmp_path):
    model = BiLSTMTaggerSuccessor(["PER"], device="cpu")
    with pytest.raises(ValueError):
        model.fit(["Bob ran"], [[(0, 3, "LOC")]])
    with pytest.raises(ValueError):
        model.fit(["Bob ran"], [[(0, 30, "PER")]])
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nope"}))
    with pytest.raises(ValueError, match="unknown successor"):
        load_successor(tmp_path)
    with pytest.raises(ValueError):
        CNNClassifierSuccessor.load(tmp_path)
