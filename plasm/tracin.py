"""TracIn self-influence (Pruthi et al., 2020) for the PLASM pseudo-label filter.

Self-influence of a training example z is TracInCP(z, z) = sum over checkpoints of ||grad_theta L(z; theta_t)||^2.
PLASM (the paper, section 4.1) uses the *average* over the last k (default 3) epoch checkpoints of the model
trained on gold + pseudo labels; the most self-influential pseudo-labels are the likeliest mislabelled ones.
The learning-rate weighting of the original TracIn is left out (a constant factor per checkpoint would not
change the ranking if the rates were equal; with a decaying schedule the paper's code also averages).

Per-example gradients are computed in batches with ``torch.func``: ``vmap(grad(loss))`` over a
``functional_call`` of the model, one vectorised forward/backward per batch instead of one backward pass per
example. Inside ``vmap`` each example sees a 4-D additive attention mask (Hugging Face's 2-D mask handling
inspects the mask's values, which ``vmap`` cannot do) and the model runs with eager attention (SDPA has no
batching rule on CPU). Batches are length-sorted so padding stays small.

Loss per example: cross-entropy of its label (classification); for token classification the mean
cross-entropy over labelled positions (label -100 ignored; an example without labelled positions has
loss 0 and self-influence 0) - the same reductions as the Hugging Face heads' own loss for a batch of one.

Parameter subsets (``params``):
- ``"head"``: parameters outside the base encoder (classifier, pre-classifier) and the encoder's pooler;
- ``"head+last"`` (default): the head plus the last transformer layer - the usual TracIn approximation,
  cheap because the backward pass stops at the last layer;
- ``"all"``: every trainable parameter (memory-heavy: the batch shrinks so that the per-example gradients
  fit ``max_grad_bytes``);
- or an explicit list of parameter names.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from albackend.models.acquisition import AcquisitionModel
from albackend.models.train import TrainConfig, collate, plan_steps

log = logging.getLogger(__name__)

__all__ = ["TracInResult", "PARAM_MODES", "select_params", "per_example_grad_sq_norms", "self_influence",
           "train_with_checkpoints", "tracin_self_influence"]

PARAM_MODES = ("head", "head+last", "all")
IGNORE = -100
_LAYER = re.compile(r"\.(?:layer|layers|block|blocks|h)\.(\d+)\.")


@dataclass
class TracInResult:
    self_influence: np.ndarray  # (n,) mean over checkpoints
    per_checkpoint: np.ndarray  # (k, n)
    checkpoint_steps: list[int]
    param_names: list[str]
    n_params: int
    seconds_train: float = 0.0
    seconds_influence: float = 0.0
    train_stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        s = self.self_influence
        return {"checkpoints": len(self.checkpoint_steps), "checkpoint_steps": self.checkpoint_steps,
                "n_params": self.n_params, "n_param_tensors": len(self.param_names),
                "seconds_train": round(self.seconds_train, 3), "seconds_influence": round(self.seconds_influence, 3),
                "self_influence_mean": float(s.mean()) if s.size else None,
                "self_influence_max": float(s.max()) if s.size else None}


# ----------------------------------------------------------------------------------------------- params
def select_params(model: nn.Module, params: str | Sequence[str] = "head+last") -> list[str]:
    """Names of the trainable parameters TracIn differentiates (see the module docstring)."""
    named = [n for n, p in model.named_parameters() if p.requires_grad]
    if not isinstance(params, str):
        missing = sorted(set(params) - set(named))
        if missing:
            raise ValueError(f"unknown parameter names: {missing[:5]}")
        return [n for n in named if n in set(params)]
    if params == "all":
        return named
    if params not in PARAM_MODES:
        raise ValueError(f"params must be one of {PARAM_MODES} or a list of names, got {params!r}")
    prefix = getattr(model, "base_model_prefix", "") or ""
    in_base = (lambda n: n.startswith(prefix + ".")) if prefix else (lambda n: False)
    head = [n for n in named if not in_base(n) or ".pooler." in n]
    chosen = set(head)
    if params == "head+last":
        layers = [int(m.group(1)) for n in named if in_base(n) and (m := _LAYER.search(n))]
        if layers:
            last = max(layers)
            chosen |= {n for n in named if in_base(n) and (m := _LAYER.search(n)) and int(m.group(1)) == last}
    if not chosen:
        raise ValueError("found no head parameters; pass params='all' or a list of names")
    return [n for n in named if n in chosen]


# ----------------------------------------------------------------------------------------------- loss
def _example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loss of ONE example: logits (C,) + label () or logits (W, C) + labels (W,) with -100 ignored."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    if labels.dim() == 0:
        return -logp.gather(-1, labels.reshape(1))[0]
    valid = labels != IGNORE
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (nll * valid).sum() / valid.sum().clamp(min=1)


def _kind_of(features: Sequence[dict]) -> str:
    first = features[0]["labels"]
    if isinstance(first, (list, tuple)):
        if first and isinstance(first[0], float):
            raise ValueError("TracIn does not support multi-label classification")
        return "tagging"
    return "classification"


# ----------------------------------------------------------------------------------------------- grads
class _EagerAttention:
    """Switch an HF model to eager attention for the duration (SDPA has no vmap batching rule on CPU)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.before = getattr(getattr(model, "config", None), "_attn_implementation", None)

    def __enter__(self):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            try:
                self.model.set_attn_implementation("eager")
            except Exception:  # noqa: BLE001 - keep the model's own attention; vmap falls back if needed
                log.debug("could not switch %s to eager attention", type(self.model).__name__)
        return self

    def __exit__(self, *exc):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            try:
                self.model.set_attn_implementation(self.before)
            except Exception:  # noqa: BLE001
                pass


def _batches(features: Sequence[dict], batch_size: int) -> list[np.ndarray]:
    order = np.argsort([len(f["input_ids"]) for f in features], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def per_example_grad_sq_norms(model: nn.Module, features: Sequence[dict], *, param_names: Sequence[str],
                              device: torch.device | str = "cpu", pad_id: int = 0, batch_size: int = 16,
                              max_grad_bytes: int = 1 << 30, method: str = "vmap",
                              on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """||grad_{param_names} L(z)||^2 for every feature dict ``{"input_ids", "labels"}`` (model in eval mode).

    ``method="vmap"`` (default) vectorises over the batch with torch.func; ``"loop"`` is one backward pass per
    example (reference / fallback). Returns float64 ``(len(features),)`` in input order.
    """
    if not features:
        return np.zeros(0, dtype=np.float64)
    device = torch.device(device)
    _kind_of(features)
    was_training = model.training
    model.to(device).eval()
    names = list(param_names)
    try:
        if method == "loop":
            return _sq_norms_loop(model, features, names, device, on_batch)
        if method != "vmap":
            raise ValueError(f"method must be 'vmap' or 'loop', got {method!r}")
        with _EagerAttention(model):
            return _sq_norms_vmap(model, features, names, device, pad_id, batch_size, max_grad_bytes, on_batch)
    finally:
        model.train(was_training)


def _sq_norms_vmap(model, features, names, device, pad_id, batch_size, max_grad_bytes, on_batch) -> np.ndarray:
    params = {n: p.detach() for n, p in model.named_parameters()}
    trained = {n: params[n] for n in names}
    frozen = {n: p for n, p in params.items() if n not in trained}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    n_params = sum(p.numel() for p in trained.values())
    per_batch = max(1, min(batch_size, max_grad_bytes // max(1, 4 * n_params)))
    neg = torch.finfo(torch.float32).min

    def loss(tp: dict, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - mask.to(torch.float32))[None, None, None, :] * neg  # (1, 1, 1, W)
        out = functional_call(model, (tp, frozen, buffers), args=(),
                              kwargs={"input_ids": ids[None], "attention_mask": additive})
        return _example_loss(out.logits[0], labels)

    per_example = vmap(grad(loss), in_dims=(None, 0, 0, 0))
    out = np.zeros(len(features), dtype=np.float64)
    batches = _batches(features, per_batch)
    for b, idx in enumerate(batches):
        batch = collate([features[i] for i in idx], pad_id)
        grads = per_example(trained, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                            batch["labels"].to(device))
        sq = torch.zeros(len(idx), dtype=torch.float64, device=device)
        for g in grads.values():
            sq += g.reshape(len(idx), -1).double().pow(2).sum(dim=1)
        out[idx] = sq.cpu().numpy()
        del grads
        if on_batch is not None:
            on_batch(b + 1, len(batches))
    return out


def _sq_norms_loop(model, features, names, device, on_batch) -> np.ndarray:
    wanted = set(names)
    params = [p for n, p in model.named_parameters() if n in wanted]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in wanted)
    out = np.zeros(len(features), dtype=np.float64)
    try:
        for i, f in enumerate(features):
            ids = torch.as_tensor(f["input_ids"], device=device)[None]
            labels = torch.as_tensor(f["labels"], device=device)
            logits = model(input_ids=ids).logits[0]
            g = torch.autograd.grad(_example_loss(logits, labels), params, allow_unused=True)
            out[i] = float(sum(x.double().pow(2).sum() for x in g if x is not None))
            if on_batch is not None:
                on_batch(i + 1, len(features))
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    return out


def self_influence(model: nn.Module, checkpoints: Sequence[dict], features: Sequence[dict], *,
                   param_names: Sequence[str], device: torch.device | str = "cpu", pad_id: int = 0,
                   batch_size: int = 16, max_grad_bytes: int = 1 << 30, method: str = "vmap",
                   on_progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean over checkpoints, per-checkpoint ``(k, n)``) of squared per-example gradient norms.

    ``checkpoints`` are state dicts loaded into ``model`` in turn; the model's own weights are restored after.
    """
    if not checkpoints:
        raise ValueError("need at least one checkpoint")
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    per = np.zeros((len(checkpoints), len(features)), dtype=np.float64)
    try:
        for c, state in enumerate(checkpoints):
            model.load_state_dict(state)

            def tick(done: int, total: int, c=c) -> None:
                if on_progress is not None:
                    on_progress((c + done / max(1, total)) / len(checkpoints))

            per[c] = per_example_grad_sq_norms(model, features, param_names=param_names, device=device,
                                               pad_id=pad_id, batch_size=batch_size, max_grad_bytes=max_grad_bytes,
                                               method=method, on_batch=tick)
    finally:
        model.load_state_dict(original)
    return per.mean(axis=0), per


# ----------------------------------------------------------------------------------------------- training
def train_with_checkpoints(model, examples, cfg: TrainConfig, *, keep_last: int = 3,
                           on_step: Callable[[int, int, float], None] | None = None) -> tuple[dict, list[dict], list[int]]:
    """Fit an :class:`~albackend.models.acquisition.AcquisitionModel` (no early stopping) and keep the state
    dicts (on the CPU) at the end of its last ``keep_last`` epochs. Returns (stats, checkpoints, their steps).

    The number of epochs is raised to ``keep_last`` so that there are that many epoch checkpoints.
    """
    cfg = dataclasses.replace(cfg, epochs=max(cfg.epochs, keep_last))
    total, per_epoch = plan_steps(len(examples), cfg)
    kept: list[tuple[int, dict]] = []

    def step(i: int, n: int, loss: float) -> None:
        if i % per_epoch == 0 or i == total:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.model.state_dict().items()}
            kept.append((i, state))
            del kept[:-keep_last]
        if on_step is not None:
            on_step(i, n, loss)

    stats = model.fit(examples, cfg, on_step=step)
    return stats, [s for _, s in kept], [i for i, _ in kept]


def tracin_self_influence(base: str, spec, train_examples, target_examples, *, train: TrainConfig,
                          checkpoints: int = 3, params: str | Sequence[str] = "head+last",
                          device: str = "auto", max_length: int = 256, seed: int = 42, batch_size: int = 16,
                          method: str = "vmap",
                          progress: Callable[[float, dict], None] | None = None) -> TracInResult:
    """Train ``base`` on ``train_examples`` (gold + pseudo labels), then TracIn self-influence of
    ``target_examples`` (the pseudo-labels, normally a subset of the training examples) averaged over the
    last ``checkpoints`` epoch checkpoints. ``progress(fraction, info)`` gets 0..1 (training is the first half).
    """

    model = AcquisitionModel.create(base, spec, device=device, max_length=max_length, seed=seed)
    t0 = time.perf_counter()

    def on_step(i: int, n: int, loss: float) -> None:
        if progress is not None:
            progress(0.5 * i / max(1, n), {"step": i, "steps": n, "loss": loss})

    stats, states, steps = train_with_checkpoints(model, list(train_examples), train, keep_last=checkpoints,
                                                  on_step=on_step)
    t1 = time.perf_counter()
    names = select_params(model.model, params)
    n_params = sum(p.numel() for n, p in model.model.named_parameters() if n in set(names))
    feats = model.features(list(target_examples))
    mean, per = self_influence(model.model, states, feats, param_names=names, device=model.device,
                               pad_id=model.tokenizer.pad_token_id or 0, batch_size=batch_size, method=method,
                               on_progress=(lambda f: progress(0.5 + 0.5 * f, {})) if progress else None)
    result = TracInResult(self_influence=mean, per_checkpoint=per, checkpoint_steps=steps, param_names=names,
                          n_params=int(n_params), seconds_train=t1 - t0, seconds_influence=time.perf_counter() - t1,
                          train_stats={k: v for k, v in stats.items() if k != "dev_history"})
    if not np.all(np.isfinite(mean)):
        log.warning("TracIn: %d non-finite self-influence values", int((~np.isfinite(mean)).sum()))
    del model, states
    return result

