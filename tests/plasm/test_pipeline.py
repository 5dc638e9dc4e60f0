"""PLASM end to end in-process with tiny models: artifacts load, the report adds up, filters follow plan_filters."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from albackend.domain.examples import Example
from albackend.models.train import default_train_config
from plasm import pipeline as P
from albackend.algorithms.plasm_filters import drop_count, plan_filters
from plasm.evaluation import successor_warnings
from plasm.successors import load_successor
from plasm.successors.bilstm import BiLSTMTaggerSuccessor
from plasm.successors.cnn import CNNClassifierSuccessor
from plasm.successors.hf import HFSuccessor
from tests.plasm.plasm_data import (CLS_SPEC, NER_SPEC, classification_texts, cls_examples, fast_config,
                                    make_tiny_mpnet, ner_examples, ner_texts)
from tests.support.tiny import make_tiny_bert


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("plasm-models")
    return {"teacher": str(make_tiny_bert(root / "bert")), "other": str(make_tiny_mpnet(root / "mpnet"))}


def _data(kind):
    if kind == "classification":
        return CLS_SPEC, cls_examples(30, seed=0), classification_texts(40, seed=1)[0]
    return NER_SPEC, ner_examples(30, seed=0), ner_texts(40, seed=1)[0]


def _check_report(report, out, n_pool, cfg):
    c, f = report["counts"], report["fractions"]
    n = c["pseudo"]
    assert n == n_pool
    assert c["kept"] + c["dropped"] == n
    assert c["dropped"] == c["dropped_uncertainty"] + c["dropped_tracin"]
    assert c["gold_train"] + c["dev"] == c["gold"] and c["dev"] >= 1
    assert c["successor_train"] == c["gold_train"] + c["kept"]
    plan = plan_filters(report["q"], cfg.filter, cfg.uncertainty_share)
    assert f["planned_uncertainty"] == pytest.approx(plan.uncertainty_fraction)
    assert f["planned_tracin"] == pytest.approx(plan.tracin_fraction)
    assert c["dropped_uncertainty"] == drop_count(plan.uncertainty_fraction, n, n)
    assert c["dropped_tracin"] == drop_count(plan.tracin_fraction, n, n - c["dropped_uncertainty"])
    assert f["dropped"] == pytest.approx(c["dropped"] / n) and f["kept"] == pytest.approx(c["kept"] / n)
    assert set(report["timings"]) >= {"split", "teacher", "pseudo_label", "filter", "successor", "evaluate", "total"}
    assert report["q_metric"] in ("accuracy", "span_f1") and 0.0 <= report["q_measured"] <= 1.0
    for role in ("teacher", "successor"):
        m = report["dev_metrics"][role]
        assert 0.0 <= m[m["metric"]] <= 1.0
        assert (m["predicted_spans"] >= 0) if m["metric"] == "f1" else "predicted_spans" not in m
    assert report["warnings"] == successor_warnings(report["dev_metrics"])
    # the files agree with the report
    assert (out / "COMPLETE").is_file()
    assert json.loads((out / "report.json").read_text())["counts"] == c
    lines = [json.loads(x) for x in (out / "pseudo_labels.jsonl").read_text().splitlines()]
    assert len(lines) == n
    assert sum(r["kept"] for r in lines) == c["kept"]
    why = Counter(r["reason"].split(":")[0] for r in lines)
    assert why["uncertainty"] == c["dropped_uncertainty"] and why["tracin"] == c["dropped_tracin"]
    assert all(0.0 <= r["confidence"] <= 1.0 for r in lines)
    if c["dropped_uncertainty"] and c["kept"]:  # the least confident went first
        dropped = [r["confidence"] for r in lines if r["reason"].startswith("uncertainty")]
        kept = [r["confidence"] for r in lines if r["kept"]]
        assert max(dropped) <= min(kept)
    if c["dropped_tracin"] and c["kept"]:
        dropped = [r["self_influence"] for r in lines if r["reason"].startswith("tracin")]
        kept = [r["self_influence"] for r in lines if r["kept"]]
        assert min(dropped) >= max(kept)
    return lines


def test_classification_hf_successor_other_architecture(models, tmp_path):
    from transformers import pipeline

    spec, gold, pool = _data("classification")
    cfg = fast_config(models["teacher"], "hf:" + models["other"], "classification", filter="both", q_override=0.6)
    stages = []
    report = P.run_plasm(gold, pool, spec, cfg, tmp_path / "run", progress=lambda s, f, i: stages.append((s, f)))
    lines = _check_report(report, tmp_path / "run", len(pool), cfg)
    assert report["counts"]["dropped_uncertainty"] == 8 and report["counts"]["dropped_tracin"] == 8
    assert report["tracin"]["ran"] and report["tracin"]["model"] == models["other"]  # the successor's encoder
    assert all("label" in r and r["label"] in spec.labels for r in lines)
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and stages[-1][0] == "done"
    # artifacts: HF directories that transformers.pipeline loads, and the successor interface
    for role in ("teacher", "successor"):
        clf = pipeline("text-classification", model=str(tmp_path / "run" / role), device="cpu")
        out = clf(["the team won the match", "shares fell"])
        assert [o["label"] in spec.labels for o in out] == [True, True]
    assert json.loads((tmp_path / "run" / "successor" / "config.json").read_text())["model_type"] == "mpnet"
    succ = load_successor(tmp_path / "run" / "successor", device="cpu")
    assert isinstance(succ, HFSuccessor) and succ.kind == "classification"
    probs = succ.predict_proba(["the team won the match"])
    assert probs.shape == (1, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert P.evaluate_successor(succ, gold[:5], spec)["n"] == 5


def test_classification_cnn_successor_measured_q(models, tmp_path):
    spec, gold, pool = _data("classification")
    cfg = fast_config(models["teacher"], "cnn", "classification", filter="uncertainty")
    report = P.run_plasm(gold, pool, spec, cfg, tmp_path / "run")
    _check_report(report, tmp_path / "run", len(pool), cfg)
    assert report["q"] == report["q_measured"] == report["dev_metrics"]["teacher"]["accuracy"]
    assert report["tracin"] == {"ran": False}
    succ = load_successor(tmp_path / "run" / "successor", device="cpu")
    assert isinstance(succ, CNNClassifierSuccessor)
    acc = P.evaluate_successor(succ, [g for g in gold], spec)["accuracy"]
    assert 0.0 <= acc <= 1.0


def test_ner_hf_successor_tracin(models, tmp_path):
    from transformers import pipeline

    spec, gold, pool = _data("tagging")
    cfg = fast_config(models["teacher"], "hf:" + models["other"], "tagging", filter="tracin", q_override=0.75)
    report = P.run_plasm(gold, pool, spec, cfg, tmp_path / "run")
    lines = _check_report(report, tmp_path / "run", len(pool), cfg)
    assert report["counts"]["dropped_tracin"] == 10 and report["counts"]["dropped_uncertainty"] == 0
    for r in lines:
        for s in r["spans"]:
            assert s["label"] in spec.labels and 0 <= s["start"] < s["end"] <= len(r["text"])
    tagger = pipeline("token-classification", model=str(tmp_path / "run" / "successor"), device="cpu")
    assert isinstance(tagger("alice flew to paris today"), list)
    config = json.loads((tmp_path / "run" / "successor" / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and set(config["label2id"]) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
    succ = load_successor(tmp_path / "run" / "successor")
    assert isinstance(succ, HFSuccessor) and succ.kind == "tagging"
    spans = succ.predict_spans(["alice flew to paris today"])
    assert isinstance(spans, list) and len(spans) == 1


def test_ner_bilstm_successor_both_filters_measured_q(models, tmp_path):
    from transformers import pipeline

    spec, gold, pool = _data("tagging")
    cfg = fast_config(models["teacher"], "bilstm", "tagging", filter="both", tracin_params="head",
                      tracin_method="loop")
    report = P.run_plasm(gold, pool, spec, cfg, tmp_path / "run")
    _check_report(report, tmp_path / "run", len(pool), cfg)
    assert report["q_metric"] == "span_f1" and report["q"] == report["dev_metrics"]["teacher"]["f1"]
    # q is measured, so TracIn's share may round to no pseudo-label at all (then it does not run)
    assert report["tracin"]["ran"] == (report["counts"]["dropped_tracin"] > 0 and "why" not in report["tracin"])
    if report["tracin"]["ran"]:
        assert report["tracin"]["model"] == models["teacher"]  # classical successor: the teacher's encoder
        assert report["tracin"]["method"] == "loop"
    succ = load_successor(tmp_path / "run" / "successor")
    assert isinstance(succ, BiLSTMTaggerSuccessor)
    teacher = pipeline("token-classification", model=str(tmp_path / "run" / "teacher"), device="cpu")
    assert isinstance(teacher("bob lives near tokyo"), list)


@pytest.mark.parametrize("q, mode, dropped", [(1.0, "both", 0), (0.0, "tracin", 40), (0.0, "uncertainty", 40),
                                              (0.5, "none", 0)])
def test_extreme_q(models, tmp_path, q, mode, dropped):
    spec, gold, pool = _data("classification")
    cfg = fast_config(models["teacher"], "cnn", "classification", filter=mode, q_override=q)
    report = P.run_plasm(gold, pool, spec, cfg, tmp_path / "run")
    _check_report(report, tmp_path / "run", len(pool), cfg)
    assert report["counts"]["dropped"] == dropped
    assert report["tracin"]["ran"] is False  # nothing to rank: TracIn is skipped, not computed
    assert report["counts"]["successor_train"] == report["counts"]["gold_train"] + 40 - dropped


def test_empty_pool_and_blank_texts(models, tmp_path):
    spec, gold, _ = _data("tagging")
    cfg = fast_config(models["teacher"], "bilstm", "tagging", filter="both")
    report = P.run_plasm(gold, ["", "   "], spec, cfg, tmp_path / "run")
    c = report["counts"]
    assert c["pseudo"] == c["kept"] == c["dropped"] == 0 and c["pool"] == 2 and c["pool_blank_skipped"] == 2
    assert report["timings"]["pseudo_label"] == 0.0 and report["timings"]["filter"] == 0.0
    assert (tmp_path / "run" / "pseudo_labels.jsonl").read_text() == ""
    assert (tmp_path / "run" / "COMPLETE").is_file()
    assert c["successor_train"] == c["gold_train"]


def test_failure_leaves_no_complete_marker_and_rerun_works(models, tmp_path, monkeypatch):
    spec, gold, pool = _data("classification")
    cfg = fast_config(models["teacher"], "cnn", "classification", filter="none")

    def boom(*a, **k):
        raise RuntimeError("successor exploded")

    monkeypatch.setattr(P, "make_successor", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        P.run_plasm(gold, pool[:5], spec, cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "COMPLETE").exists() and not (tmp_path / "run" / "report.json").exists()
    assert (tmp_path / "run" / "teacher").is_dir()  # earlier stages' output stays for inspection
    monkeypatch.undo()
    report = P.run_plasm(gold, pool[:5], spec, cfg, tmp_path / "run")  # same dir: not complete, so allowed
    assert report["status"] == "complete" and P.is_complete(tmp_path / "run")
    with pytest.raises(P.PlasmError, match="complete"):
        P.run_plasm(gold, pool[:5], spec, cfg, tmp_path / "run")


# ----------------------------------------------------------------------------------------------- pure parts
def test_split_gold_is_seeded_stratified_and_keeps_dev_nonempty():
    gold = [Example(i, f"t{i}", label_ids=[0 if i < 80 else 1]) for i in range(100)]
    train, dev = P.split_gold(gold, CLS_SPEC, 0.1, seed=1)
    assert len(dev) == 10 and len(train) == 90
    assert Counter(e.label_ids[0] for e in dev) == {0: 8, 1: 2}
    assert P.split_gold(gold, CLS_SPEC, 0.1, seed=1) == (train, dev)
    assert P.split_gold(gold, CLS_SPEC, 0.1, seed=2)[1] != dev
    assert [len(x) for x in P.split_gold(gold[:2], CLS_SPEC, 0.1, seed=0)] == [1, 1]
    assert [len(x) for x in P.split_gold(gold[:3], CLS_SPEC, 0.9, seed=0)] == [1, 2]
    with pytest.raises(P.PlasmError):
        P.split_gold(gold[:1], CLS_SPEC, 0.1, seed=0)
    ner = ner_examples(40, seed=0)
    train, dev = P.split_gold(ner, NER_SPEC, 0.25, seed=0)
    assert len(dev) == 10 and {e.text for e in train} | {e.text for e in dev} == {e.text for e in ner}


def test_config_round_trip_and_validation(models):
    cfg = fast_config(models["teacher"], "cnn", "classification", filter="both")
    again = P.PlasmConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.train_config("teacher", "classification").lr == 2e-3
    assert P.PlasmConfig().train_config("teacher", "tagging") == default_train_config("tagging")  # the product's
    assert P.PlasmConfig(seed=7).train_config("successor", "classification").seed == 7
    with pytest.raises(P.PlasmError, match="unknown PLASM option"):
        P.PlasmConfig.from_dict({"nope": 1})
    with pytest.raises(P.PlasmError, match="training option"):
        P.PlasmConfig(teacher_train={"epoch": 3})
    bad = [(dict(filter="magic"), "filter"), (dict(dev_fraction=0.0), "dev_fraction"),
           (dict(successor="bilstm"), "tagger"), (dict(teacher="no-such-model-xyz"), "teacher"),
           (dict(successor="hf:/no/such/dir"), "successor"), (dict(classical={"layers": 3}), "cnn option"),
           (dict(tracin_params="some"), "tracin_params"), (dict(tracin_method="magic"), "tracin_method")]
    for overrides, match in bad:
        args = {"teacher": models["teacher"], "successor": "cnn", **overrides}
        with pytest.raises(P.PlasmError, match=match):
            P.validate_config(fast_config(args.pop("teacher"), args.pop("successor"), "classification", **args),
                              CLS_SPEC)
    assert P.parse_successor("classical", "tagging").kind == "bilstm"
    assert P.parse_successor("same-as-teacher", "tagging", "minilm-l6") == P.SuccessorChoice("hf", "minilm-l6")
    assert P.parse_successor("mpnet", "classification") == P.SuccessorChoice("hf", "mpnet")
