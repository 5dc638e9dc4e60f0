"""The paper's fine-tuning recipe (Appendix A, Table 4): AdamW, weight decay 0.01, linear schedule with
10% warm-up, gradient clipping 1.0, and a minimum number of gradient steps so tiny seed sets still train.

Batches are grouped by length (shuffled mega-batches sorted inside) so CPU time goes to real tokens,
not padding. Optional per-epoch evaluation keeps the best weights (early stopping for the PLASM teacher).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from albackend.models.device import autocast
from albackend.algorithms.warmstart import warm_steps

log = logging.getLogger(__name__)
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


DEFAULT_LR = 1e-4  # the recipe's encoder learning rate, its one home (default_lr says why)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    min_steps: int = 60
    max_steps: int = 0
    batch_size: int = 16
    lr: float = DEFAULT_LR
    weight_decay: float = 0.01
    warmup: float = 0.1
    grad_clip: float = 1.0
    seed: int = 42
    patience: int = 2  # epochs without dev improvement before stopping (with an evaluate callback, after min_steps)
    head_lr: float = 0.0  # lr of the parameters not in the checkpoint (the new head); 0 = lr
    class_weights: tuple[float, ...] = ()  # cross-entropy weight per class / tag id; () = unweighted
    label_smoothing: float = 0.0

    def __post_init__(self):  # a JSON round trip gives a list: keep the config hashable and comparable
        object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))


def default_lr(kind: str) -> float:
    """Encoder learning rate when none is configured: 1e-4 for both kinds.

    Tagging used the paper's 5e-5 (BERT-base, 1,000 steps on a GPU); with the small packaged encoders and
    60-step retrains on tiny label sets it under-trains: on CoNLL-2003 a 2e-4 encoder lr alone lifted F1
    from 0.11 to 0.41 at 40 sentences (bench/cold_ner.py). 1e-4 (the classification value) plus the head's
    own lr (`default_head_lr`) keeps the encoder's step moderate for larger acquisition models.
    """
    return DEFAULT_LR


def default_head_lr(kind: str) -> float:
    """Learning rate of the freshly initialised head when none is configured (0 = the encoder's).

    Tagging: 3e-3. At 5e-5 for every parameter, a tagger trained on 40 CoNLL-2003 sentences (60 steps)
    predicted 19 spans for 1,700 gold ones on one seed (F1 0.003) and ~250 at 80 sentences: the head
    still sits near its random start and the O prior (~83% of words) wins, so its MNLP ranking is noise
    exactly when active learning matters most. A separate head lr fixes that without touching the encoder's
    lr (bench/cold_ner.py, docs/results.md "Cold NER and warm start"). Classification: unchanged.
    """
    return 3e-3 if kind == "tagging" else 0.0


def default_train_config(kind: str, seed: int = 42, **overrides) -> TrainConfig:
    """The product's recipe for a task kind (the one home of its defaults); `overrides` replace fields."""
    return TrainConfig(**{"lr": default_lr(kind), "head_lr": default_head_lr(kind), **overrides, "seed": seed})


def plan_steps(n_examples: int, cfg: TrainConfig) -> tuple[int, int]:
    """(total steps, steps per epoch): epochs over the data, raised to min_steps, capped by max_steps."""
    per_epoch = max(1, math.ceil(n_examples / cfg.batch_size))
    total = max(cfg.min_steps, cfg.epochs * per_epoch)
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    return total, per_epoch


def warm_train_config(cfg: TrainConfig, n_examples: int, fraction: float) -> TrainConfig:
    """`cfg` for a warm start: exactly `fraction` of the steps a from-scratch retrain on `n_examples` plans."""
    steps = warm_steps(plan_steps(n_examples, cfg)[0], fraction)
    return dataclasses.replace(cfg, min_steps=steps, max_steps=steps)


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


def param_groups(model: torch.nn.Module, cfg: TrainConfig, new_params: Collection[str] = ()) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; `cfg.head_lr` for the freshly initialised `new_params`.

    A random head trained at an encoder's fine-tuning lr (5e-5) barely leaves its initialisation in a few dozen
    steps, so on a tiny label set it only learns the majority class (the all-O NER collapse); the pretrained
    encoder still needs the small lr not to forget what it knows.
    """
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (name.endswith(NO_DECAY), bool(cfg.head_lr) and name in new_params)
            groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
             "lr": cfg.head_lr if head else cfg.lr} for (no_decay, head), ps in sorted(groups.items())]


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], weights: torch.Tensor | None,
               smoothing: float = 0.0) -> torch.Tensor:
    """The model's own loss, or class-weighted / label-smoothed cross-entropy (single-label and token labels)."""
    labels = batch.get("labels")
    if (weights is None and not smoothing) or labels is None or labels.dtype != torch.long:
        return model(**batch).loss
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             weight=weights, ignore_index=-100, label_smoothing=smoothing)


class BestEpoch:
    """Early stopping: keeps the best-scoring epoch's weights and says when `patience` epochs in a row did not
    improve on it (None: never stop early, only keep the best). Shared by fine_tune and the classical successors."""

    def __init__(self, patience: int | None):
        self.patience, self.bad_epochs, self.history = patience, 0, []
        self.score, self.epoch, self.state = -math.inf, -1, None

    def update(self, model: torch.nn.Module, epoch: int, score: float) -> bool:
        """Record the epoch's dev score; True when training should stop."""
        self.history.append(score)
        if score > self.score:
            self.score, self.epoch, self.bad_epochs = score, epoch, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        if self.patience is None or self.bad_epochs < self.patience:
            return False
        log.info("early stopping after epoch %d (best %d: %.4f)", epoch, self.epoch, self.score)
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)

    def stats(self) -> dict:
        kept = self.state is not None
        return {"dev_history": self.history, "best_dev": self.score if kept else None,
                "best_epoch": self.epoch if kept else None}


def fine_tune(model: torch.nn.Module, features: Sequence[dict], cfg: TrainConfig, device: torch.device, *,
              pad_id: int = 0, evaluate: Callable[[], float] | None = None,
              on_step: Callable[[int, int, float], None] | None = None, new_params: Collection[str] = ()) -> dict:
    """Train in place; returns stats. With `evaluate`, restores the best-scoring epoch's weights.

    Epochs are evaluated (and early stopping counts) only once `cfg.min_steps` are done: min_steps is the floor
    that keeps tiny label sets from under-training, and a noisy dev set of a few examples would otherwise stop a
    teacher after 3 epochs of 2 steps (or pick its first epoch) whatever min_steps says.

    `new_params`: names of the parameters that are not pretrained (they get `cfg.head_lr`).
    """
    if not features:
        raise ValueError("no training examples")
    total, per_epoch = plan_steps(len(features), cfg)
    floor = min(cfg.min_steps, total)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    weights = torch.tensor(cfg.class_weights, dtype=torch.float, device=device) if cfg.class_weights else None
    opt = torch.optim.AdamW(param_groups(model, cfg, new_params), lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * total), total)
    lengths = [len(f["input_ids"]) for f in features]
    step, epoch, losses, best = 0, 0, [], BestEpoch(cfg.patience)
    t0 = time.perf_counter()
    while step < total:
        for idx in length_grouped_batches(lengths, cfg.batch_size, rng):
            batch = {k: v.to(device) for k, v in collate([features[i] for i in idx], pad_id).items()}
            with autocast(device):
                loss = batch_loss(model, batch, weights, cfg.label_smoothing)
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
        if evaluate is not None and step >= floor:
            model.eval()
            score = float(evaluate())
            model.train()
            if best.update(model, epoch, score):
                break
    best.restore(model)
    model.eval()
    return {"steps": step, "planned_steps": total, "epochs": epoch, "steps_per_epoch": per_epoch,
            "final_loss": float(np.mean(losses[-10:])), "seconds": time.perf_counter() - t0, **best.stats()}
