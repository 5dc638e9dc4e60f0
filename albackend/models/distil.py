"""Distil a student acquisition model from any teacher on unlabeled text (PLASM step 1, paper Appendix A.1).

The student has the teacher's architecture with a subset of its layers (default every second one), initialised
from the teacher's weights (embeddings, kept layers, pooler, MLM head when present), then trained to match the
teacher on the project's own unlabeled texts with L = ce + mlm + cos + mse: hidden-state cosine and MSE losses
always, soft-target cross-entropy and masked-LM losses only when the checkpoint has an MLM head. The result is
a plain Hugging Face directory with ``albackend.json`` naming its teacher, so ``AcquisitionModel.create`` (the
backend's ACQUISITION_MODEL) and the PLASM job (default teacher) pick it up. The student's construction and
losses are :mod:`albackend.models.student`, the quality report :mod:`albackend.models.distil_quality`; the text sources, the RQ job and the CLI are :mod:`plasm.distil_job` and
``python -m plasm distil``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from albackend.models.device import autocast, bf16_active, pick_device, seed_everything
from albackend.models.errors import DistilError
from albackend.models.student import (LOSSES, build_student, choose_layers, find_layer_list,
                                      hidden_losses, layer_map, load_teacher, mask_tokens, mlm_losses,
                                      save_student)
from albackend.models.train import collate, length_grouped_batches


# ---- training -----------------------------------------------------------------------------------------
@dataclass
class DistilConfig:
    teacher: str = "minilm-l6"
    layers: list[int] | None = None
    keep_every: int = 2
    max_length: int = 128
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4  # paper Appendix A.1
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup: float = 0.05
    epochs: float = 1.0
    max_steps: int = 0
    temperature: float = 2.0
    mlm_prob: float = 0.15
    weights: dict = field(default_factory=lambda: {k: 1.0 for k in LOSSES})
    checkpoint_every: int = 200
    keep_checkpoints: bool = False
    seed: int = 42
    device: str = "auto"


@dataclass
class _Run:
    """Everything one distillation run trains with: the models, the tokenized texts and the step plan."""

    cfg: DistilConfig
    device: torch.device
    teacher: nn.Module
    student: nn.Module
    tokenizer: object
    has_mlm: bool
    extras: dict
    layer_list: str
    n_layers: int
    layers: list[int]
    pairs: list[tuple[int, int]]
    ids: list[list[int]]
    total: int
    active: list[str]
    batches: dict = field(default_factory=dict)  # epoch -> its length-grouped batches (the current epoch only)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    @property
    def n_batches(self) -> int:
        return -(-len(self.ids) // self.cfg.batch_size)


def _prepare(texts: Sequence[str], cfg: DistilConfig) -> _Run:
    """Load the teacher, build the student on the device, tokenize, and plan the steps and the active losses."""
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_everything(cfg.seed)
    teacher, tokenizer, has_mlm, extras = load_teacher(cfg.teacher)
    layer_list, blocks = find_layer_list(teacher)
    layers = choose_layers(len(blocks), cfg.layers, cfg.keep_every)
    student = build_student(teacher, layers)
    teacher.to(device).eval()
    student.to(device).train()
    ids = tokenizer(list(texts), truncation=True, max_length=cfg.max_length)["input_ids"]
    n_batches = -(-len(ids) // cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, int(np.ceil(cfg.epochs * n_batches / cfg.grad_accum)))
    active = [k for k in LOSSES if cfg.weights.get(k, 0) > 0 and (has_mlm or k in ("cos", "mse"))]
    return _Run(cfg, device, teacher, student, tokenizer, has_mlm, extras, layer_list, len(blocks), layers,
                layer_map(layers, len(blocks)), ids, total, active)


def _optimizer(run: _Run):
    """AdamW without weight decay on biases and norms, linear warm-up and decay."""
    cfg, named = run.cfg, list(run.student.named_parameters())
    plain = [n.endswith(("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")) for n, _ in named]
    groups = [{"params": [p for (_, p), nd in zip(named, plain) if nd is decay_off],
               "weight_decay": 0.0 if decay_off else cfg.weight_decay} for decay_off in (False, True)]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.eps)
    return opt, get_linear_schedule_with_warmup(opt, int(cfg.warmup * run.total), run.total)


def _micro_batch(run: _Run, micro: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(input ids, attention mask, MLM labels or None) of micro-batch ``micro``: seeded, so a resume repeats it."""
    cfg = run.cfg
    epoch, pos = divmod(micro, run.n_batches)
    if epoch not in run.batches:
        run.batches = {epoch: length_grouped_batches(run.lengths, cfg.batch_size,
                                                     np.random.default_rng([cfg.seed, epoch]))}
    batch = collate([{"input_ids": run.ids[i]} for i in run.batches[epoch][pos]], run.tokenizer.pad_token_id or 0)
    inp, attn, labels = batch["input_ids"], batch["attention_mask"], None
    if run.has_mlm and cfg.mlm_prob > 0:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + micro)
        inp, labels = mask_tokens(inp, attn, run.tokenizer, cfg.mlm_prob, gen)
    return inp.to(run.device), attn.to(run.device), (labels.to(run.device) if labels is not None else None)


def _losses(run: _Run, micro: int) -> dict[str, torch.Tensor]:
    inp, attn, labels = _micro_batch(run, micro)
    with torch.no_grad(), autocast(run.device):
        t_out = run.teacher(input_ids=inp, attention_mask=attn, output_hidden_states=True)
    with autocast(run.device):
        s_out = run.student(input_ids=inp, attention_mask=attn, output_hidden_states=True)
    parts = dict(zip(("cos", "mse"), hidden_losses(s_out.hidden_states, t_out.hidden_states, attn, run.pairs)))
    if labels is not None:
        parts.update(zip(("ce", "mlm"), mlm_losses(s_out.logits, t_out.logits, labels, run.cfg.temperature)))
    return parts


def _train_step(run: _Run, step: int, opt, sched) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches; the mean of each active loss."""
    cfg, sums = run.cfg, {k: 0.0 for k in run.active}
    for a in range(cfg.grad_accum):
        parts = _losses(run, step * cfg.grad_accum + a)
        loss = sum(cfg.weights[k] * parts[k] for k in run.active) / cfg.grad_accum
        loss.backward()
        for k in run.active:
            sums[k] += float(parts[k].detach()) / cfg.grad_accum
    torch.nn.utils.clip_grad_norm_(run.student.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return {k: round(v, 6) for k, v in sums.items()}


def _report(run: _Run, history: list[dict], source: str, resumed_from: int, seconds: dict) -> dict:
    """The distillation report (albackend.json of the student)."""
    cfg, has_mlm = run.cfg, run.has_mlm
    last20 = {k: float(np.mean([h[k] for h in history[-20:]])) for k in run.active}
    session = seconds["session"]
    return {
        "teacher": cfg.teacher, "teacher_layers_kept": run.layers, "teacher_num_layers": run.n_layers,
        "layer_list": run.layer_list, "layer_map": run.pairs, "teacher_has_mlm_head": has_mlm,
        "distilled_on": {"source": source, "n_texts": len(run.ids), "max_length": cfg.max_length,
                         "n_tokens": int(sum(run.lengths))},
        "losses": {"used": run.active, "weights": {k: cfg.weights[k] for k in run.active},
                   "first": history[0] if history else {}, "final_mean_last_20": last20,
                   "skipped": [] if has_mlm else ["ce", "mlm"],
                   "note": None if has_mlm else "teacher checkpoint has no MLM head: only hidden-state cos + MSE"},
        "steps": run.total, "resumed_from": resumed_from, "config": asdict(cfg), "device": str(run.device),
        "bf16": bf16_active(run.device), "train_seconds": round(seconds["before"] + session, 2),
        "train_seconds_this_run": round(session, 2), "seconds_this_run": round(seconds["all"], 2),
        "texts_per_second": round((run.total - resumed_from) * cfg.grad_accum * cfg.batch_size / max(session, 1e-9), 2),
        "memory": _peak_memory(run.device), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def distil(texts: Sequence[str], out_dir: str | Path, cfg: DistilConfig, *, resume: bool = False,
           stop_after: int = 0, progress: bool = True, source: str = "",
           on_progress: Callable[[dict], None] | None = None) -> dict:
    """Build, train and save the student into out_dir; returns the distillation report (also in albackend.json)."""
    out_dir, t_start = Path(out_dir), time.perf_counter()
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DistilError("no unlabeled texts to distil on")
    run = _prepare(texts, cfg)
    opt, sched = _optimizer(run)
    fingerprint, ckdir = _fingerprint(cfg, run.layers, texts, run.total), out_dir / "checkpoints"
    step, history, before = 0, [], 0.0  # before: training seconds of earlier (interrupted) runs
    if resume and sorted(ckdir.glob("step-*")):
        state = _load_checkpoint(sorted(ckdir.glob("step-*"))[-1], run.student, opt, sched, fingerprint)
        step, history, before = state["step"], state["history"], float(state.get("train_seconds", 0.0))
    resumed_from, t_train = step, time.perf_counter()
    bar = tqdm(total=run.total, initial=step, desc="distil", unit="step", disable=not progress, dynamic_ncols=True)
    while step < run.total and not (stop_after and step >= stop_after):
        history.append(_train_step(run, step, opt, sched))
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in history[-1].items()})
        if on_progress:
            on_progress({"stage": "distil", "step": step, "total": run.total, "losses": history[-1]})
        if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == run.total
                                     or (stop_after and step >= stop_after)):
            _save_checkpoint(ckdir, step, run.student, opt, sched,
                             {"step": step, "history": history, "fingerprint": fingerprint,
                              "train_seconds": before + time.perf_counter() - t_train})
    bar.close()
    session = time.perf_counter() - t_train
    if step < run.total:
        return {"complete": False, "step": step, "total_steps": run.total, "resumed_from": resumed_from,
                "checkpoint": str(ckdir), "seconds": round(session, 2)}
    report = _report(run, history, source, resumed_from,
                     {"before": before, "session": session, "all": time.perf_counter() - t_start})
    save_student(run.student, run.tokenizer, out_dir, report, run.extras)
    if not cfg.keep_checkpoints:
        shutil.rmtree(ckdir, ignore_errors=True)
    return report


def _peak_memory(device: torch.device) -> dict:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _fingerprint(cfg: DistilConfig, layers: list[int], texts: Sequence[str], total: int) -> dict:
    keys = ("teacher", "max_length", "batch_size", "grad_accum", "lr", "eps", "weight_decay", "warmup",
            "temperature", "mlm_prob", "weights", "seed")
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()
    return {**{k: getattr(cfg, k) for k in keys}, "layers": layers, "total_steps": total, "texts_sha1": digest}


def _save_checkpoint(ckdir: Path, step: int, student, opt, sched, state: dict, keep: int = 2) -> None:
    final = ckdir / f"step-{step:07d}"
    tmp = ckdir / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(student, str(tmp / "model.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng}, tmp / "trainer.pt")
    np_state = np.random.get_state()
    state = {**state, "python_rng": [random.getstate()[0], list(random.getstate()[1]), None],
             "numpy_rng": [np_state[0], np_state[1].tolist(), *[float(x) for x in np_state[2:]]]}
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(ckdir.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(ckpt: Path, student, opt, sched, fingerprint: dict) -> dict:
    state = json.loads((ckpt / "state.json").read_text())
    diff = {k: (state["fingerprint"].get(k), v) for k, v in fingerprint.items() if state["fingerprint"].get(k) != v}
    if diff:
        raise DistilError(f"checkpoint {ckpt} was made with different settings (saved, now): {diff}")
    load_model(student, str(ckpt / "model.safetensors"))
    trainer = torch.load(ckpt / "trainer.pt", weights_only=True)
    opt.load_state_dict(trainer["optimizer"])
    sched.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(trainer["rng"]["torch"])
    if "cuda" in trainer["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["rng"]["cuda"])
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), None))
    nps = state["numpy_rng"]
    np.random.set_state((nps[0], np.asarray(nps[1], dtype=np.uint32), int(nps[2]), int(nps[3]), nps[4]))
    return state
