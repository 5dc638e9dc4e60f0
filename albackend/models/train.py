"""The paper's fine-tuning recipe (Appendix A, Table 4): AdamW, weight decay 0.01, linear schedule with
10% warm-up, gradient clipping 1.0, and a minimum number of gradient steps so tiny seed sets still train.

Batches are grouped by length (shuffled mega-batches sorted inside) so CPU time goes to real tokens,
not padding. Optional per-epoch evaluation keeps the best weights (early stopping for the PLASM teacher).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from albackend.models.device import autocast

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    min_steps: int = 60
    max_steps: int = 0
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    grad_clip: float = 1.0
    seed: int = 42
    patience: int = 2  # epochs without dev improvement before stopping (only with an evaluate callback)


def plan_steps(n_examples: int, cfg: TrainConfig) -> tuple[int, int]:
    """(total steps, steps per epoch): epochs over the data, raised to min_steps, capped by max_steps."""
    per_epoch = max(1, math.ceil(n_examples / cfg.batch_size))
    total = max(cfg.min_steps, cfg.epochs * per_epoch)
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    return total, per_epoch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort inside mega-batches of 50 batches, shuffle the batch order."""
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    mega = batch_size * 50
    batches = []
    for i in range(0, len(order), mega):
        chunk = order[i:i + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(features: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest sequence (dynamic padding)."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.as_tensor(f["input_ids"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, (list, tuple)) and len(first) and isinstance(first[0], float):
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float)
        elif isinstance(first, (list, tuple)):  # token labels
            labels = torch.full((len(features), width), -100, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, :len(f["labels"])] = torch.as_tensor(f["labels"])
            batch["labels"] = labels
        else:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    return batch


def fine_tune(model: torch.nn.Module, features: Sequence[dict], cfg: TrainConfig, device: torch.device, *,
              pad_id: int = 0, evaluate: Callable[[], float] | None = None,
              on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Train in place; returns stats. With `evaluate`, restores the best-scoring epoch's weights."""
    if not features:
        raise ValueError("no training examples")
    total, per_epoch = plan_steps(len(features), cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    params = [
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(no_decay)],
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * total), total)
    lengths = [len(f["input_ids"]) for f in features]
    step, epoch, losses = 0, 0, []
    best_score, best_state, best_epoch, bad_epochs, history = -math.inf, None, -1, 0, []
    t0 = time.perf_counter()
    while step < total:
        for idx in length_grouped_batches(lengths, cfg.batch_size, rng):
            batch = {k: v.to(device) for k, v in collate([features[i] for i in idx], pad_id).items()}
            with autocast(device):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach()))
            if on_step:
                on_step(step, total, losses[-1])
            if step >= total:
                break
        epoch += 1
        if evaluate is not None:
            model.eval()
            score = float(evaluate())
            model.train()
            history.append(score)
            if score > best_score:
                best_score, best_epoch, bad_epochs = score, epoch, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    log.info("early stopping after epoch %d (best %d: %.4f)", epoch, best_epoch, best_score)
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "steps": step, "planned_steps": total, "epochs": epoch, "steps_per_epoch": per_epoch,
        "final_loss": float(np.mean(losses[-10:])), "seconds": time.perf_counter() - t0,
        "dev_history": history, "best_dev": None if best_state is None else best_score,
        "best_epoch": best_epoch if best_state is not None else None,
    }
