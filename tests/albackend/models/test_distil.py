"""Student distillation (albackend.models.student, .distil, .distil_quality): layer choice and initialisation, the
Appendix A.1 losses, resumable training, the backend loading a student, the quality report's numpy Spearman.

Tiny random BERTs (tests.support.tiny) keep every test to seconds on two CPU cores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr
from transformers import AutoModel, AutoTokenizer, BertForMaskedLM, MPNetConfig, MPNetModel

from albackend.domain.labelconfig import TaskSpec
from albackend.models import distil as D
from albackend.models import distil_quality as Q
from albackend.models import student as S
from albackend.models.acquisition import META_FILE, AcquisitionModel
from tests.support.tiny import make_tiny_bert

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [f"{w} news about {x} and the {y} market today" for w in ("oil", "stock", "team", "space", "vote")
         for x in ("prices", "games", "rockets", "elections", "banks", "players") for y in ("world", "tech")]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    plain = make_tiny_bert(root / "plain", layers=4, seed=1)
    torch.manual_seed(1)
    AutoModel.from_pretrained(plain).save_pretrained(plain)  # a BertModel file with its pooler, like MiniLM's
    return {"plain": str(plain),
            "mlm": str(make_tiny_bert(root / "mlm", layers=4, seed=2, mlm=True))}


def _batch(tokenizer, texts=TEXTS[:8]):
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


# ---- layer selection and initialisation ----------------------------------------------------------------
def test_choose_layers_and_map():
    assert S.choose_layers(6) == [0, 2, 4]
    assert S.choose_layers(6, keep_every=3) == [0, 3]
    assert S.choose_layers(6, "4, 0,2") == [0, 2, 4]
    with pytest.raises(ValueError, match="do not exist"):
        S.choose_layers(6, [0, 6])
    assert S.layer_map([0, 2, 4], 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert S.layer_map(list(range(4)), 4) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]


@pytest.mark.parametrize("kind", ["plain", "mlm"])
def test_student_copies_teacher_layers_exactly(teachers, kind):
    teacher, _, has_mlm, _ = S.load_teacher(teachers[kind])
    assert has_mlm is (kind == "mlm")
    name, blocks = S.find_layer_list(teacher)
    assert name.endswith("encoder.layer") and len(blocks) == 4
    student = S.build_student(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and type(student) is type(teacher)
    s_blocks, t_sd, s_sd = S.find_layer_list(student)[1], teacher.state_dict(), student.state_dict()
    for j, i in enumerate([1, 3]):
        for (n1, p1), (n2, p2) in zip(s_blocks[j].state_dict().items(), blocks[i].state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2)
    shared = [k for k in t_sd if ".layer." not in k]
    assert any("embeddings" in k for k in shared)
    assert any(("pooler" in k) if kind == "plain" else k.startswith("cls.") for k in shared)
    for k in shared:  # embeddings, pooler / MLM head
        assert torch.equal(s_sd[k], t_sd[k]), k


def test_mpnet_student_keeps_relative_attention_bias():
    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    teacher = MPNetModel(cfg).eval()
    assert S.find_layer_list(teacher)[0] == "encoder.layer"
    student = S.build_student(teacher, [0, 2])
    assert torch.equal(student.encoder.relative_attention_bias.weight, teacher.encoder.relative_attention_bias.weight)
    for j, i in enumerate([0, 2]):
        for p1, p2 in zip(student.encoder.layer[j].parameters(), teacher.encoder.layer[i].parameters()):
            assert torch.equal(p1, p2)
    ids = torch.randint(3, 100, (2, 7))
    assert student(input_ids=ids, output_hidden_states=True).hidden_states[-1].shape == (2, 7, 32)


# ---- losses --------------------------------------------------------------------------------------------
def test_hidden_losses_zero_for_identical_student(teachers):
    teacher, tok, _, _ = S.load_teacher(teachers["plain"])
    student = S.build_student(teacher, [0, 1, 2, 3]).eval()
    ids, attn = _batch(tok)
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
        s = student(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
    cos, mse = S.hidden_losses(s, t, attn, S.layer_map([0, 1, 2, 3], 4))
    assert float(cos) < 1e-6 and float(mse) < 1e-10


@pytest.mark.parametrize("loss", ["cos", "mse", "ce", "mlm"])
def test_each_loss_is_finite_and_decreases(teachers, loss):
    teacher, tok, _, _ = S.load_teacher(teachers["mlm"])
    student = S.build_student(teacher, [0, 2]).eval()  # no dropout: a clean descent check
    torch.manual_seed(0)
    with torch.no_grad():  # a random tiny BERT's layers barely change its states: move the student away first
        for p in student.bert.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    pairs = S.layer_map([0, 2], 4)
    ids, attn = _batch(tok)
    ids, labels = S.mask_tokens(ids, attn, tok, 0.3, torch.Generator().manual_seed(0))
    assert (labels != -100).any()
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    values = []
    for _ in range(5):
        s = student(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        parts = dict(zip(("cos", "mse"), S.hidden_losses(s.hidden_states, t.hidden_states, attn, pairs)))
        parts.update(zip(("ce", "mlm"), S.mlm_losses(s.logits, t.logits, labels, 2.0)))
        assert all(torch.isfinite(v) for v in parts.values())
        values.append(float(parts[loss].detach()))
        opt.zero_grad()
        parts[loss].backward()
        opt.step()
    assert values[-1] < values[0], values


def test_mask_tokens_spares_special_and_padding(teachers):
    _, tok, _, _ = S.load_teacher(teachers["mlm"])
    ids, attn = _batch(tok)
    _, labels = S.mask_tokens(ids, attn, tok, 1.0, torch.Generator().manual_seed(1))
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    assert ((labels != -100) == (~special & attn.bool())).all()


# ---- training, checkpoints, output ---------------------------------------------------------------------
def _cfg(teacher, **kw):
    base = dict(teacher=teacher, max_length=16, batch_size=4, grad_accum=2, lr=1e-3, max_steps=6,
                checkpoint_every=2, device="cpu", seed=3)
    return D.DistilConfig(**{**base, **kw})


def test_resume_equals_uninterrupted_run(teachers, tmp_path):
    cfg = _cfg(teachers["mlm"], max_steps=4)  # MLM teacher: masking, dropout and accumulation all take part
    full = D.distil(TEXTS, tmp_path / "full", cfg, progress=False)
    part = D.distil(TEXTS, tmp_path / "split", cfg, stop_after=3, progress=False)
    assert part["complete"] is False and part["step"] == 3
    assert (tmp_path / "split" / "checkpoints" / "step-0000003" / "trainer.pt").exists()
    resumed = D.distil(TEXTS, tmp_path / "split", cfg, resume=True, progress=False)
    assert resumed["resumed_from"] == 3 and resumed["steps"] == 4
    assert resumed["train_seconds"] > resumed["train_seconds_this_run"] > 0  # time of both sessions
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["losses"]["final_mean_last_20"] == full["losses"]["final_mean_last_20"]
    assert not (tmp_path / "split" / "checkpoints").exists()  # removed after success by default


def test_resume_refuses_other_settings(teachers, tmp_path):
    D.distil(TEXTS, tmp_path / "s", _cfg(teachers["plain"]), stop_after=2, progress=False)
    with pytest.raises(ValueError, match="different settings"):
        D.distil(TEXTS, tmp_path / "s", _cfg(teachers["plain"], lr=5e-4), resume=True, progress=False)


def test_backend_loads_distilled_student(teachers, tmp_path):
    report = D.distil(TEXTS, tmp_path / "student", _cfg(teachers["plain"], grad_accum=1, max_steps=3),
                      progress=False, source="unit test")
    assert report["teacher_has_mlm_head"] is False and report["losses"]["used"] == ["cos", "mse"]
    assert report["losses"]["skipped"] == ["ce", "mlm"] and report["memory"]["peak_rss_mb"] > 0
    meta = json.loads((tmp_path / "student" / META_FILE).read_text())
    assert meta["teacher"] == teachers["plain"] and meta["teacher_layers_kept"] == [0, 2]
    assert {"distilled_on", "losses"} <= meta.keys()
    spec = TaskSpec("classification", "label", "text", "text", ("a", "b"))
    model = AcquisitionModel.create(str(tmp_path / "student"), spec, device="cpu", max_length=16)
    assert model.meta["teacher"] == teachers["plain"]
    assert model.model.config.num_hidden_layers == 2
    teacher = AutoModel.from_pretrained(teachers["plain"])
    assert torch.equal(model.model.bert.pooler.dense.weight, teacher.pooler.dense.weight)
    probs = model.predict(TEXTS[:5]).probs
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_mlm_student_keeps_head_and_teacher_pooler(tmp_path):
    torch.manual_seed(0)
    src = make_tiny_bert(tmp_path / "base", layers=4, seed=4)
    mlm = BertForMaskedLM.from_pretrained(src)  # a pretraining-style checkpoint: MLM head + pooler in the file
    state = {**mlm.state_dict(), "bert.pooler.dense.weight": torch.randn(32, 32), "bert.pooler.dense.bias":
             torch.zeros(32)}
    mlm.save_pretrained(tmp_path / "t", state_dict=state)
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp_path / "t")
    report = D.distil(TEXTS[:8], tmp_path / "s", _cfg(str(tmp_path / "t"), max_steps=1), progress=False)
    assert report["teacher_has_mlm_head"] and report["losses"]["used"] == ["ce", "mlm", "cos", "mse"]
    saved = load_file(str(tmp_path / "s" / "model.safetensors"))
    assert torch.equal(saved["bert.pooler.dense.weight"], state["bert.pooler.dense.weight"])
    assert any(k.startswith("cls.predictions") for k in saved)


# ---- quality report pieces -----------------------------------------------------------------------------
def test_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 200).astype(float)  # many ties
    b = a + rng.normal(0, 2, 200)
    assert Q.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert Q.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert Q.rank_average(np.array([10, 20, 20, 30])).tolist() == [0, 1.5, 1.5, 3]
