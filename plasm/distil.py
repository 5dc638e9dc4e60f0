"""Distil a student acquisition model from any teacher on unlabeled text (PLASM step 1, paper Appendix A.1).

The student has the teacher's architecture with a subset of its layers (default every second one), initialised
from the teacher's weights (embeddings, kept layers, pooler, MLM head when present), then trained to match the
teacher on the project's own unlabeled texts with L = ce + mlm + cos + mse: hidden-state cosine and MSE losses
always, soft-target cross-entropy and masked-LM losses only when the checkpoint has an MLM head. The result is
a plain Hugging Face directory with ``albackend.json`` naming its teacher, so ``AcquisitionModel.create`` (the
backend's ACQUISITION_MODEL) and the PLASM job (default teacher) pick it up. ``plasm.distil_quality`` holds the
text sources and the quality report; this module is the model side, the RQ job and the CLI subcommand.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, get_linear_schedule_with_warmup

from albackend.models.acquisition import META_FILE
from albackend.models.device import autocast, pick_device, seed_everything
from albackend.models.registry import resolve_model
from albackend.models.train import collate, length_grouped_batches

LOSSES = ("ce", "mlm", "cos", "mse")
_LAYER_LIST_NAMES = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer", "h", "blocks")


# ---- student construction ----------------------------------------------------------------------------
def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: named like `encoder.layer`, as long as config.num_hidden_layers."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    cands = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1]
    if not cands:
        raise ValueError(f"{type(model).__name__} has no list of identical layers to choose from")

    def rank(item: tuple[str, nn.ModuleList]) -> tuple:
        name, mods = item
        known = any(name == k or name.endswith("." + k) for k in _LAYER_LIST_NAMES)
        return (len(mods) == n, known, len(mods), -name.count("."))
    return max(cands, key=rank)


def choose_layers(n_layers: int, layers: Sequence[int] | str | None = None, keep_every: int = 2) -> list[int]:
    """Teacher layer indices to keep: explicit ("0,2,4") or every `keep_every`-th from layer 0."""
    if isinstance(layers, str):
        layers = [int(x) for x in layers.replace(" ", "").split(",") if x]
    if layers:
        chosen = sorted(set(int(i) for i in layers))
        bad = [i for i in chosen if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"layers {bad} do not exist: the teacher has layers 0..{n_layers - 1}")
        return chosen
    if keep_every < 1:
        raise ValueError("--keep-every must be >= 1")
    return list(range(0, n_layers, keep_every))


def layer_map(layers: Sequence[int], n_layers: int) -> list[tuple[int, int]]:
    """(student hidden-state index, teacher hidden-state index) pairs the hidden-state losses compare.

    Index 0 is the embedding output. Student layer j is initialised from teacher layer layers[j] and stands for
    the teacher block up to the next kept layer, so its output is matched to the teacher's output just before
    layers[j + 1] (the teacher's final output for the last layer): keeping 0,2,4 of 6 maps 1->2, 2->4, 3->6.
    """
    ends = list(layers[1:]) + [n_layers]
    return [(0, 0)] + [(j + 1, ends[j]) for j in range(len(layers))]


def build_student(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """Same class and config with len(layers) layers; weights copied from the teacher (layers renumbered)."""
    path, blocks = find_layer_list(teacher)
    n = len(blocks)
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(layers)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == n:
        cfg.layer_types = [types[i] for i in layers]
    student = type(teacher)(cfg)
    prefix, renum, state = path + ".", {t: s for s, t in enumerate(layers)}, {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            idx, rest = key[len(prefix):].split(".", 1)
            if int(idx) in renum:
                state[f"{prefix}{renum[int(idx)]}.{rest}"] = value.detach().clone()
        else:
            state[key] = value.detach().clone()
    student.load_state_dict(state, strict=True)
    return student


def load_teacher(name: str) -> tuple[nn.Module, object, bool, dict]:
    """(model, tokenizer, has_mlm_head, extra file tensors such as a pooler the MLM class does not hold)."""
    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    extras: dict = {}
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except (ValueError, OSError, KeyError):
        mlm, info = None, {"missing_keys": ["?"]}
    prefix = getattr(mlm, "base_model_prefix", "")
    if mlm is not None and not [k for k in info["missing_keys"] if not k.startswith(prefix + ".")]:
        pooler = [k for k in info.get("unexpected_keys", []) if "pooler" in k]
        files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
        for fname in files:
            with safe_open(str(fname), "pt") as fh:
                for key in set(pooler) & set(fh.keys()):
                    extras[key if key.startswith(prefix + ".") else f"{prefix}.{key}"] = fh.get_tensor(key)
        return mlm.eval(), tokenizer, True, extras
    del mlm
    return AutoModel.from_pretrained(path).eval(), tokenizer, False, extras


# ---- losses -------------------------------------------------------------------------------------------
def hidden_losses(s_hidden: Sequence[torch.Tensor], t_hidden: Sequence[torch.Tensor], mask: torch.Tensor,
                  pairs: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine embedding loss 1 - cos, MSE) over non-padding tokens, averaged over the layer pairs."""
    keep = mask.bool()
    cos, mse = [], []
    for si, ti in pairs:
        s, t = s_hidden[si][keep].float(), t_hidden[ti][keep].float()
        cos.append((1.0 - F.cosine_similarity(s, t, dim=-1)).mean())
        mse.append(F.mse_loss(s, t))
    return torch.stack(cos).mean(), torch.stack(mse).mean()


def mlm_losses(s_logits: torch.Tensor, t_logits: torch.Tensor, labels: torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft-target cross-entropy -sum t log s at temperature T, scaled by T^2; masked-LM loss) at masked tokens."""
    sel = labels != -100
    if not bool(sel.any()):
        zero = s_logits.sum() * 0.0
        return zero, zero
    s, t = s_logits[sel].float(), t_logits[sel].float()
    soft = F.softmax(t / temperature, -1)
    ce = -(soft * F.log_softmax(s / temperature, -1)).sum(-1).mean() * temperature ** 2
    return ce, F.cross_entropy(s, labels[sel])


def mask_tokens(ids: torch.Tensor, attn: torch.Tensor, tokenizer, prob: float,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: `prob` of the real, non-special tokens; 80% [MASK], 10% random, 10% unchanged."""
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()], dtype=torch.bool)
    cand = attn.bool() & ~special
    picked = (torch.rand(ids.shape, generator=gen) < prob) & cand
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    out = ids.clone()
    out[picked & (r < 0.8)] = tokenizer.mask_token_id
    rand_pos = picked & (r >= 0.8) & (r < 0.9)
    out[rand_pos] = torch.randint(len(tokenizer), ids.shape, generator=gen)[rand_pos]
    return out, labels


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
        raise ValueError(f"checkpoint {ckpt} was made with different settings (saved, now): {diff}")
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


def distil(texts: Sequence[str], out_dir: str | Path, cfg: DistilConfig, *, resume: bool = False,
           stop_after: int = 0, progress: bool = True, source: str = "",
           on_progress: Callable[[dict], None] | None = None) -> dict:
    """Build, train and save the student into out_dir; returns the distillation report (also in albackend.json)."""
    out_dir = Path(out_dir)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no unlabeled texts to distil on")
    t_start = time.perf_counter()
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seed_everything(cfg.seed)
    teacher, tokenizer, has_mlm, extras = load_teacher(cfg.teacher)
    path, blocks = find_layer_list(teacher)
    n_layers = len(blocks)
    layers = choose_layers(n_layers, cfg.layers, cfg.keep_every)
    pairs = layer_map(layers, n_layers)
    student = build_student(teacher, layers)
    teacher.to(device).eval()
    student.to(device).train()
    ids = tokenizer(list(texts), truncation=True, max_length=cfg.max_length)["input_ids"]
    lengths = [len(x) for x in ids]
    n_batches = -(-len(ids) // cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, int(np.ceil(cfg.epochs * n_batches / cfg.grad_accum)))
    active = [k for k in LOSSES if cfg.weights.get(k, 0) > 0 and (has_mlm or k in ("cos", "mse"))]
    plain = [n.endswith(("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight"))
             for n, _ in student.named_parameters()]  # no weight decay on biases and norms
    groups = [{"params": [p for (_, p), nd in zip(student.named_parameters(), plain) if nd is decay_off],
               "weight_decay": 0.0 if decay_off else cfg.weight_decay} for decay_off in (False, True)]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.eps)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * total), total)
    fingerprint = _fingerprint(cfg, layers, texts, total)
    ckdir = out_dir / "checkpoints"
    step, history, before = 0, [], 0.0  # before: training seconds of earlier (interrupted) runs
    if resume and sorted(ckdir.glob("step-*")):
        state = _load_checkpoint(sorted(ckdir.glob("step-*"))[-1], student, opt, sched, fingerprint)
        step, history, before = state["step"], state["history"], float(state.get("train_seconds", 0.0))
    resumed_from = step
    epoch_cache: dict[int, list] = {}
    pad = tokenizer.pad_token_id or 0
    bar = tqdm(total=total, initial=step, desc="distil", unit="step", disable=not progress, dynamic_ncols=True)
    t_train = time.perf_counter()
    while step < total and not (stop_after and step >= stop_after):
        sums = {k: 0.0 for k in active}
        for a in range(cfg.grad_accum):
            micro = step * cfg.grad_accum + a
            epoch, pos = divmod(micro, n_batches)
            if epoch not in epoch_cache:
                epoch_cache = {epoch: length_grouped_batches(lengths, cfg.batch_size,
                                                             np.random.default_rng([cfg.seed, epoch]))}
            batch = collate([{"input_ids": ids[i]} for i in epoch_cache[epoch][pos]], pad)
            inp, attn = batch["input_ids"], batch["attention_mask"]
            labels = None
            if has_mlm and cfg.mlm_prob > 0:
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + micro)
                inp, labels = mask_tokens(inp, attn, tokenizer, cfg.mlm_prob, gen)
            inp, attn = inp.to(device), attn.to(device)
            with torch.no_grad(), autocast(device):
                t_out = teacher(input_ids=inp, attention_mask=attn, output_hidden_states=True)
            with autocast(device):
                s_out = student(input_ids=inp, attention_mask=attn, output_hidden_states=True)
            parts = dict(zip(("cos", "mse"), hidden_losses(s_out.hidden_states, t_out.hidden_states, attn, pairs)))
            if labels is not None:
                parts.update(zip(("ce", "mlm"), mlm_losses(s_out.logits, t_out.logits, labels.to(device),
                                                           cfg.temperature)))
            loss = sum(cfg.weights[k] * parts[k] for k in active) / cfg.grad_accum
            loss.backward()
            for k in active:
                sums[k] += float(parts[k].detach()) / cfg.grad_accum
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        history.append({k: round(v, 6) for k, v in sums.items()})
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in sums.items()})
        if on_progress:
            on_progress({"stage": "distil", "step": step, "total": total, "losses": history[-1]})
        if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == total
                                     or (stop_after and step >= stop_after)):
            _save_checkpoint(ckdir, step, student, opt, sched,
                             {"step": step, "history": history, "fingerprint": fingerprint,
                              "train_seconds": before + time.perf_counter() - t_train})
    bar.close()
    session = time.perf_counter() - t_train
    if step < total:
        return {"complete": False, "step": step, "total_steps": total, "resumed_from": resumed_from,
                "checkpoint": str(ckdir), "seconds": round(session, 2)}
    last20 = {k: float(np.mean([h[k] for h in history[-20:]])) for k in active}
    report = {
        "teacher": cfg.teacher, "teacher_layers_kept": layers, "teacher_num_layers": n_layers,
        "layer_list": path, "layer_map": pairs, "teacher_has_mlm_head": has_mlm,
        "distilled_on": {"source": source, "n_texts": len(texts), "max_length": cfg.max_length,
                         "n_tokens": int(sum(lengths))},
        "losses": {"used": active, "weights": {k: cfg.weights[k] for k in active},
                   "first": history[0] if history else {}, "final_mean_last_20": last20,
                   "skipped": [] if has_mlm else ["ce", "mlm"],
                   "note": None if has_mlm else "teacher checkpoint has no MLM head: only hidden-state cos + MSE"},
        "steps": total, "resumed_from": resumed_from, "config": asdict(cfg), "device": str(device),
        "bf16": device.type == "cuda" and torch.cuda.is_bf16_supported(),
        "train_seconds": round(before + session, 2), "train_seconds_this_run": round(session, 2),
        "seconds_this_run": round(time.perf_counter() - t_start, 2), "texts_per_second": round(
            (total - resumed_from) * cfg.grad_accum * cfg.batch_size / max(session, 1e-9), 2),
        "memory": _peak_memory(device), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_student(student, tokenizer, out_dir, report, extras)
    if not cfg.keep_checkpoints:
        shutil.rmtree(ckdir, ignore_errors=True)
    return report


def save_student(student: nn.Module, tokenizer, out_dir: str | Path, meta: dict, extras: dict | None = None) -> None:
    """A normal HF directory (safetensors, config, tokenizer) plus albackend.json {teacher, layers, losses, ...}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student = student.to("cpu").eval()
    student.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    weights = out_dir / "model.safetensors"
    if extras and weights.exists():  # e.g. the teacher's pooler, which its MLM class does not load
        state = load_file(str(weights))
        state.update({k: v.contiguous() for k, v in extras.items() if k not in state})
        save_file(state, str(weights), metadata={"format": "pt"})
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


# ---- job and CLI (the glue lives in plasm.distil_quality) ---------------------------------------------
def distil_job(params: dict) -> dict:
    """RQ entry point: distil + quality report, progress in the job's meta; returns the report."""
    from plasm.distil_quality import run_job
    return run_job(params)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m plasm distil`."""
    from plasm.distil_quality import add_cli_arguments
    add_cli_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Run here (--sync, or no REDIS_URL) and print the report, or enqueue distil_job and print its id."""
    from plasm.distil_quality import cli_main
    return cli_main(args)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m plasm.distil", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
