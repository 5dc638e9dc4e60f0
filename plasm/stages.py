"""The data-moving stages of a PLASM run (see :mod:`plasm.pipeline` for the order and the artifacts).

``split`` (:func:`split_gold`), ``pseudo_label`` (:func:`pseudo_label`), ``filter`` (:func:`filter_pseudo_labels`)
and the successor's construction (:func:`make_successor`). Each takes in-memory data and returns it; progress
goes to a :class:`plasm.progress.Tracker` whose stage the caller has started.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.algorithms.strategies import mnlp
from plasm.config import PlasmConfig, PlasmError, parse_successor, tracin_base
from albackend.algorithms.plasm_filters import FilterPlan, drop_count, drop_least_confident, drop_most_influential
from plasm.progress import Tracker
from plasm.successors.bilstm import BiLSTMTaggerSuccessor
from plasm.successors.cnn import CNNClassifierSuccessor
from plasm.successors.hf import HFSuccessor
from plasm.tracin import tracin_self_influence

__all__ = ["filter_pseudo_labels", "make_successor", "pseudo_label", "split_gold"]


# ============================================================================================== split
def split_gold(gold: Sequence[Example], spec: TaskSpec, dev_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded (train, dev) split, stratified: each stratum's members get evenly spaced keys (j + u) / n_s in a
    random order, and the dev split takes the smallest keys, so every stratum is represented in proportion."""
    gold = list(gold)
    n = len(gold)
    if n < 2:
        raise PlasmError(f"PLASM needs at least 2 gold examples (a train and a dev split), got {n}")
    n_dev = min(n - 1, max(1, int(round(dev_fraction * n))))
    rng = np.random.default_rng(seed)

    def stratum(e: Example) -> str:
        if spec.kind == "classification":
            return ",".join(str(i) for i in sorted(e.label_ids))
        return sorted(e.spans)[0][2] if e.spans else ""

    groups: dict[str, list[int]] = {}
    for i, e in enumerate(gold):
        groups.setdefault(stratum(e), []).append(i)
    keys = np.zeros(n)
    for members in groups.values():
        order = rng.permutation(len(members))
        offset = rng.random()
        for rank, j in enumerate(order):
            keys[members[j]] = (rank + offset) / len(members)
    tie = rng.random(n)
    chosen = set(np.lexsort((tie, keys))[:n_dev].tolist())
    train = [e for i, e in enumerate(gold) if i not in chosen]
    dev = [e for i, e in enumerate(gold) if i in chosen]
    return train, dev


# ============================================================================================== pseudo_label
def pseudo_label(teacher, pool: list[str], pool_index: list[int], spec: TaskSpec, batch_size: int,
                 tracker: Tracker) -> tuple[list[Example], np.ndarray, list[dict]]:
    """The teacher labels the (non-empty) pool: ``(pseudo examples, confidence, records)``.

    Classification: argmax, confidence max P. Tagging: decoded spans, confidence exp(-MNLP). ``records`` are
    the ``pseudo_labels.jsonl`` rows so far (``index`` into the original pool, text, label or spans, confidence).
    """

    pseudo: list[Example] = []
    records: list[dict] = []
    chunk = max(batch_size * 8, 256)
    probs_all: list = []
    ranges_all: list = []
    for start in range(0, len(pool), chunk):
        preds = teacher.predict(pool[start:start + chunk], batch_size=batch_size)
        if spec.kind == "tagging":
            probs_all += list(preds.probs)
            ranges_all += list(preds.word_ranges)
        else:
            probs_all.append(np.asarray(preds.probs))
        tracker.update(min(1.0, (start + chunk) / len(pool)), labelled=min(len(pool), start + chunk))
    if spec.kind == "tagging":
        confidence = np.exp(-mnlp(probs_all))
        for i, text in enumerate(pool):
            spans = teacher.spans(text, ranges_all[i], probs_all[i])
            pseudo.append(Example(None, text, spans=[(s, e, lab) for s, e, lab, _ in spans]))
            records.append({"index": pool_index[i], "text": text,
                            "spans": [{"start": s, "end": e, "label": lab, "score": round(float(sc), 5)}
                                      for s, e, lab, sc in spans]})
    else:
        probs = np.concatenate(probs_all) if probs_all else np.zeros((0, len(spec.labels)))
        confidence = probs.max(axis=1).astype(np.float64)
        for i, text in enumerate(pool):
            y = int(probs[i].argmax())
            pseudo.append(Example(None, text, label_ids=[y]))
            records.append({"index": pool_index[i], "text": text, "label": spec.labels[y]})
    for r, c in zip(records, confidence):
        r["confidence"] = round(float(c), 6)
    return pseudo, confidence, records


# ============================================================================================== filter
def filter_pseudo_labels(plan: FilterPlan, confidence: np.ndarray, pseudo: list[Example], records: list[dict],
                         train: list[Example], spec: TaskSpec, cfg: PlasmConfig,
                         tracker: Tracker) -> tuple[np.ndarray, list[str], dict]:
    """Apply ``plan`` to n >= 1 pseudo-labels: ``(keep mask, reason per pseudo-label, TracIn summary)``.

    The uncertainty filter drops the least confident ``plan.uncertainty_fraction`` of the pool; TracIn then
    drops the most self-influential ``plan.tracin_fraction`` of the pool among what is left (fractions of the
    original pool, :func:`albackend.algorithms.plasm_filters.drop_count`). TracIn scores are added to ``records`` as
    ``self_influence``.
    """
    n = len(pseudo)
    reason = ["kept"] * n
    keep_u = drop_least_confident(confidence, plan.uncertainty_fraction) if plan.uncertainty_fraction > 0 \
        else np.ones(n, dtype=bool)
    if plan.uncertainty_fraction > 0:
        threshold = float(confidence[~keep_u].max()) if (~keep_u).any() else None
        for i in np.flatnonzero(~keep_u):
            reason[i] = (f"uncertainty: teacher confidence {confidence[i]:.4f} is among the "
                         f"{int((~keep_u).sum())} lowest ({plan.uncertainty_fraction:.2%} of the pool"
                         + (f", <= {threshold:.4f})" if threshold is not None else ")"))
    keep = keep_u.copy()
    remaining = np.flatnonzero(keep)
    k_tracin = drop_count(plan.tracin_fraction, n, len(remaining)) if plan.tracin_fraction > 0 else 0
    tracin_info: dict = {"ran": False}
    if k_tracin >= len(remaining) and k_tracin > 0:
        keep[remaining] = False
        for i in remaining:
            reason[i] = f"tracin: the budget ({plan.tracin_fraction:.2%} of the pool) drops every remaining pseudo-label"
        tracin_info = {"ran": False, "why": "budget covers all remaining pseudo-labels"}
    elif k_tracin > 0:
        tracin_info = _tracin_filter(plan, remaining, keep, reason, pseudo, records, train, spec, cfg, tracker)
    return keep, reason, tracin_info


def _tracin_filter(plan: FilterPlan, remaining: np.ndarray, keep: np.ndarray, reason: list[str],
                   pseudo: list[Example], records: list[dict], train: list[Example], spec: TaskSpec,
                   cfg: PlasmConfig, tracker: Tracker) -> dict:
    """Score ``remaining`` by TracIn self-influence and drop the most influential (updates keep and reason)."""

    n = len(pseudo)
    influence = np.full(n, np.nan)
    base = tracin_base(cfg, spec.kind)
    targets = [pseudo[i] for i in remaining]
    result = tracin_self_influence(
        base, spec, list(train) + targets, targets, train=cfg.train_config("tracin", spec.kind),
        checkpoints=cfg.tracin_checkpoints, params=cfg.tracin_params, device=cfg.device,
        max_length=cfg.max_length, seed=cfg.seed, batch_size=cfg.tracin_batch_size,
        method=cfg.tracin_method,
        progress=lambda f, info: tracker.update(0.05 + 0.95 * f, tracin=True, **info))
    influence[remaining] = result.self_influence
    keep_t = drop_most_influential(result.self_influence, plan.tracin_fraction, n_reference=n)
    dropped = remaining[~keep_t]
    keep[dropped] = False
    cut = float(result.self_influence[~keep_t].min()) if (~keep_t).any() else None
    for i in dropped:
        reason[i] = (f"tracin: self-influence {influence[i]:.4g} is among the {len(dropped)} highest "
                     f"({plan.tracin_fraction:.2%} of the pool" + (f", >= {cut:.4g})" if cut is not None else ")"))
    for r, v in zip((records[i] for i in remaining), result.self_influence):
        r["self_influence"] = float(v)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"ran": True, "model": base, "params": cfg.tracin_params, "method": cfg.tracin_method,
            **result.summary()}


# ============================================================================================== successor
def make_successor(cfg: PlasmConfig, spec: TaskSpec):
    """A fresh successor of the configured type for ``spec``."""
    choice = parse_successor(cfg.successor, spec.kind, cfg.teacher)
    if choice.kind == "hf":
        return HFSuccessor(choice.model, spec=spec, train=cfg.train_config("successor", spec.kind),
                           device=cfg.device, max_length=cfg.max_length, batch_size=cfg.infer_batch_size)
    device = None if cfg.device == "auto" else cfg.device
    if choice.kind == "cnn":
        return CNNClassifierSuccessor(list(spec.labels), device=device, **cfg.classical)

    return BiLSTMTaggerSuccessor(list(spec.labels), device=device, **cfg.classical)
