"""PLASM orchestration (paper section 4.1; DESIGN.md section 3): teacher -> pseudo-labels -> filters -> successor.

Pure orchestration over in-memory data, shared by the RQ job (:mod:`plasm.job`), the CLI ``--sync`` path and
the AL emulation: no Label Studio, Redis or RQ here.

Stages of :func:`run_plasm` (names as reported to ``progress`` and in ``report["timings"]``):

``split``
    gold -> train / dev, seeded, stratified by class (classification) or by the first entity label (tagging);
    ``dev = min(n - 1, max(1, round(dev_fraction * n)))`` so dev >= 1 whenever gold >= 2.
``teacher``
    fine-tune the teacher on the train split with early stopping on dev (accuracy; strict span F1 via seqeval
    over a common word segmentation, :mod:`plasm.metrics`); q = its dev score (``q_override`` replaces it for
    experiments).
``pseudo_label``
    the teacher labels the pool: classification argmax with confidence max P; tagging decoded spans with
    confidence exp(-MNLP) (the geometric mean of the per-word max probabilities; same ranking as 1 - MNLP).
``filter``
    :func:`plasm.filters.plan_filters` (q, mode) splits the 1 - q drop budget; the uncertainty filter drops the
    least confident pseudo-labels, TracIn the most self-influential ones (of what the uncertainty filter kept).
    TracIn trains a model on gold-train + the remaining pseudo-labels and averages squared per-example gradient
    norms over its last ``tracin_checkpoints`` epoch checkpoints. That model is the successor's encoder when the
    successor is an HF model (the influence is then measured on the model being trained, as in the paper) and the
    teacher's encoder when the successor is classical (CNN/BiLSTM): TracIn needs gradients of a model that fits
    the data reasonably after a few epochs, and the teacher architecture is the one the pseudo-labels come from.
    ``tracin_model`` overrides the choice.
``successor``
    train the successor from scratch (classical) or from its pretrained encoder (HF) on gold-train + kept
    pseudo-labels, early stopping on dev.
``evaluate``
    dev metrics of teacher and successor (and of both on an optional external ``test`` set).

Artifacts in ``out_dir``: ``teacher/`` and ``successor/`` (HF directories loadable by ``transformers.pipeline``;
classical successors: safetensors + config.json + vocab.json, loaded by :func:`plasm.successors.load_successor`),
``pseudo_labels.jsonl``, ``report.json`` and, written last and atomically, ``COMPLETE``. A run that fails leaves
no ``COMPLETE``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from albackend.examples import Example
from albackend.labelconfig import TaskSpec
from albackend.store import atomic_write_text
from plasm.filters import FILTER_MODES, drop_count, drop_least_confident, drop_most_influential, plan_filters

log = logging.getLogger(__name__)

__all__ = ["PlasmConfig", "PlasmError", "SuccessorChoice", "STAGES", "run_plasm", "split_gold", "parse_successor",
           "validate_config", "make_successor", "evaluate_successor", "COMPLETE_MARKER", "REPORT_FILE",
           "PSEUDO_FILE", "is_complete"]

COMPLETE_MARKER = "COMPLETE"
REPORT_FILE = "report.json"
PSEUDO_FILE = "pseudo_labels.jsonl"
# Stage -> share of the overall progress bar (rough CPU cost with TracIn on; normalised when stages are skipped).
STAGES: dict[str, float] = {"split": 0.01, "teacher": 0.30, "pseudo_label": 0.10, "filter": 0.22,
                            "successor": 0.30, "evaluate": 0.04, "write": 0.03}
SUCCESSOR_KEYWORDS = ("same-as-teacher", "cnn", "bilstm", "classical")


class PlasmError(ValueError):
    """The PLASM run cannot start or go on; the message is safe to show to a user."""


# ============================================================================================== config
def _train_config(value: Any):
    from albackend.models.train import TrainConfig

    if value is None or isinstance(value, TrainConfig):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = set(value) - known
        if unknown:
            raise PlasmError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        return TrainConfig(**value)
    raise PlasmError(f"a training config must be a dict or TrainConfig, got {type(value).__name__}")


@dataclass
class PlasmConfig:
    """Everything a PLASM run needs besides the data. JSON round trip: :meth:`to_dict` / :meth:`from_dict`.

    Training configs left ``None`` use the paper's recipe at CPU scale (5 epochs, >= 60 steps, batch 16, lr 1e-4
    for classification / 5e-5 for tagging, patience 2); the run's ``seed`` always replaces their seed.
    """

    teacher: str = "minilm-l6"
    successor: str = "same-as-teacher"  # "hf:<model>" | "cnn" | "bilstm" | "classical" | "same-as-teacher"
    filter: str = "uncertainty"  # uncertainty | tracin | both | none
    uncertainty_share: float = 0.5  # "both": share of the 1 - q budget the uncertainty filter takes first
    dev_fraction: float = 0.1
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    max_length: int = 256
    teacher_train: Any = None  # TrainConfig | dict | None
    successor_train: Any = None  # HF successors
    classical: dict = field(default_factory=dict)  # CNN / BiLSTM hyperparameter overrides (see their configs)
    tracin_model: str = "auto"  # auto: the successor's encoder if HF, else the teacher's; or a model name
    tracin_checkpoints: int = 3
    tracin_params: str = "head+last"  # head | head+last | all
    tracin_train: Any = None  # default: the successor's (HF) or teacher's training config, no early stopping
    tracin_batch_size: int = 16
    tracin_method: str = "vmap"  # vmap: batched torch.func per-example gradients; loop: one backward per example
    infer_batch_size: int = 64
    q_override: float | None = None  # replace the measured teacher dev score (ablations, tests)

    def __post_init__(self):
        self.teacher_train = _train_config(self.teacher_train)
        self.successor_train = _train_config(self.successor_train)
        self.tracin_train = _train_config(self.tracin_train)
        self.classical = dict(self.classical or {})

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PlasmConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PlasmError(f"unknown PLASM option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def train_config(self, which: str, kind: str):
        """The TrainConfig of ``which`` in teacher | successor | tracin, with the run's seed."""
        from plasm.successors.hf import default_train_config

        value = {"teacher": self.teacher_train, "successor": self.successor_train, "tracin": self.tracin_train}[which]
        if value is None and which == "tracin":
            value = self.successor_train if parse_successor(self.successor, kind).kind == "hf" else self.teacher_train
        if value is None:
            value = default_train_config(kind)
        return dataclasses.replace(value, seed=self.seed)


@dataclass(frozen=True)
class SuccessorChoice:
    kind: str  # "hf" | "cnn" | "bilstm"
    model: str | None = None  # the HF model name for kind "hf"

    def describe(self) -> str:
        return f"hf:{self.model}" if self.kind == "hf" else self.kind


def parse_successor(name: str, task_kind: str, teacher: str | None = None) -> SuccessorChoice:
    """"hf:<model>" | "cnn" | "bilstm" | "classical" (CNN or BiLSTM by task) | "same-as-teacher" | "<model>"."""
    if not isinstance(name, str) or not name.strip():
        raise PlasmError("empty successor name")
    name = name.strip()
    low = name.lower()
    if low == "classical":
        low = "bilstm" if task_kind == "tagging" else "cnn"
    if low == "cnn":
        if task_kind != "classification":
            raise PlasmError("the CNN successor is a text classifier; use 'bilstm' (or 'classical') for NER")
        return SuccessorChoice("cnn")
    if low == "bilstm":
        if task_kind != "tagging":
            raise PlasmError("the BiLSTM successor is a tagger; use 'cnn' (or 'classical') for classification")
        return SuccessorChoice("bilstm")
    if low == "same-as-teacher":
        return SuccessorChoice("hf", teacher)
    if low.startswith("hf:"):
        model = name[3:].strip()
        if not model:
            raise PlasmError("'hf:' needs a model name, e.g. hf:mpnet")
        return SuccessorChoice("hf", model)
    return SuccessorChoice("hf", name)  # a bare model name: an HF encoder


def tracin_base(cfg: PlasmConfig, task_kind: str) -> str:
    if cfg.tracin_model and cfg.tracin_model != "auto":
        return cfg.tracin_model
    choice = parse_successor(cfg.successor, task_kind, cfg.teacher)
    return choice.model if choice.kind == "hf" else cfg.teacher


def validate_config(cfg: PlasmConfig, spec: TaskSpec, *, check_models: bool = True) -> None:
    """Fail fast, with a one-line reason, on options that would fail later (also unknown model names)."""
    from albackend.models.registry import ModelNotFound, resolve_model

    if spec.multi_label:
        raise PlasmError("PLASM supports single-label classification and NER; this project is multi-label")
    if cfg.filter not in FILTER_MODES:
        raise PlasmError(f"unknown filter {cfg.filter!r}; valid: {', '.join(FILTER_MODES)}")
    if not 0.0 < float(cfg.dev_fraction) < 1.0:
        raise PlasmError(f"dev_fraction must be in (0, 1), got {cfg.dev_fraction}")
    if not 0.0 <= float(cfg.uncertainty_share) <= 1.0:
        raise PlasmError(f"uncertainty_share must be in [0, 1], got {cfg.uncertainty_share}")
    if cfg.q_override is not None and not 0.0 <= float(cfg.q_override) <= 1.0:
        raise PlasmError(f"q_override must be in [0, 1], got {cfg.q_override}")
    if cfg.tracin_checkpoints < 1:
        raise PlasmError("tracin_checkpoints must be >= 1")
    from plasm.tracin import PARAM_MODES

    if cfg.tracin_params not in PARAM_MODES:
        raise PlasmError(f"unknown tracin_params {cfg.tracin_params!r}; valid: {', '.join(PARAM_MODES)}")
    if cfg.tracin_method not in ("vmap", "loop"):
        raise PlasmError(f"tracin_method must be 'vmap' or 'loop', got {cfg.tracin_method!r}")
    choice = parse_successor(cfg.successor, spec.kind, cfg.teacher)
    if choice.kind != "hf" and cfg.classical:
        from plasm.successors.bilstm import BiLSTMConfig
        from plasm.successors.cnn import CNNConfig

        known = {f.name for f in dataclasses.fields(CNNConfig if choice.kind == "cnn" else BiLSTMConfig)}
        unknown = set(cfg.classical) - known
        if unknown:
            raise PlasmError(f"unknown {choice.kind} option(s) {sorted(unknown)}; known: {sorted(known)}")
    if check_models:
        names = {"teacher": cfg.teacher}
        if choice.kind == "hf":
            names["successor"] = choice.model
        if cfg.filter in ("tracin", "both"):
            names["tracin model"] = tracin_base(cfg, spec.kind)
        for role, name in names.items():
            try:
                resolve_model(name)
            except ModelNotFound as exc:
                raise PlasmError(f"{role}: {exc}") from None


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


# ============================================================================================== successors
def make_successor(cfg: PlasmConfig, spec: TaskSpec):
    """A fresh successor of the configured type for ``spec``."""
    choice = parse_successor(cfg.successor, spec.kind, cfg.teacher)
    if choice.kind == "hf":
        from plasm.successors.hf import HFSuccessor

        return HFSuccessor(choice.model, spec=spec, train=cfg.train_config("successor", spec.kind),
                           device=cfg.device, max_length=cfg.max_length, batch_size=cfg.infer_batch_size)
    device = None if cfg.device == "auto" else cfg.device
    if choice.kind == "cnn":
        from plasm.successors.cnn import CNNClassifierSuccessor

        return CNNClassifierSuccessor(list(spec.labels), device=device, **cfg.classical)
    from plasm.successors.bilstm import BiLSTMTaggerSuccessor

    return BiLSTMTaggerSuccessor(list(spec.labels), device=device, **cfg.classical)


def _targets(examples: Sequence[Example], spec: TaskSpec) -> list:
    if spec.kind == "tagging":
        return [[tuple(s) for s in e.spans] for e in examples]
    return [int(e.label_ids[0]) for e in examples]


def evaluate_successor(model, examples: Sequence[Example], spec: TaskSpec) -> dict:
    """Accuracy (classification) or strict span F1 / precision / recall (tagging) of any successor."""
    from plasm.metrics import accuracy, span_scores

    texts = [e.text for e in examples]
    if not texts:
        return {"n": 0}
    if spec.kind == "tagging":
        pred = model.predict_spans(texts)
        return {"metric": "f1", **span_scores(texts, _targets(examples, spec), pred)}
    probs = np.asarray(model.predict_proba(texts))
    return {"metric": "accuracy", "accuracy": accuracy(probs.argmax(axis=1), _targets(examples, spec)),
            "n": len(texts)}


def _score(metrics: dict) -> float:
    return float(metrics.get(metrics.get("metric", "accuracy"), 0.0))


# ============================================================================================== progress
class _Tracker:
    def __init__(self, callback: Callable[[str, float, dict], None] | None, stages: dict[str, float]):
        total = sum(stages.values())
        self.weights = {k: v / total for k, v in stages.items()}
        self.callback = callback
        self.timings: dict[str, float] = {}
        self.done = 0.0
        self.stage = ""
        self._t0 = 0.0

    def start(self, stage: str) -> None:
        self.stage, self._t0 = stage, time.perf_counter()
        self.update(0.0)

    def update(self, fraction: float, **info) -> None:
        if self.callback is None:
            return
        fraction = min(1.0, max(0.0, fraction))
        overall = self.done + self.weights.get(self.stage, 0.0) * fraction
        self.callback(self.stage, min(1.0, overall), {"stage_progress": fraction, "timings": dict(self.timings),
                                                      **info})

    def finish(self, **info) -> float:
        seconds = time.perf_counter() - self._t0
        self.timings[self.stage] = round(self.timings.get(self.stage, 0.0) + seconds, 3)
        self.update(1.0, **info)
        self.done += self.weights.get(self.stage, 0.0)
        return seconds

    def skip(self, stage: str, why: str) -> None:
        self.stage = stage
        self.timings[stage] = 0.0
        self.update(1.0, skipped=why)
        self.done += self.weights.get(stage, 0.0)


def _step_reporter(tracker: _Tracker, lo: float = 0.0, hi: float = 1.0):
    last = [0.0]

    def on_step(step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        if step == total or now - last[0] >= 0.5:
            last[0] = now
            tracker.update(lo + (hi - lo) * step / max(1, total), step=step, steps=total,
                           loss=round(float(loss), 5))
    return on_step


# ============================================================================================== run
def is_complete(out_dir: str | Path) -> bool:
    return (Path(out_dir) / COMPLETE_MARKER).is_file()


def run_plasm(gold: list[Example], pool_texts: list[str], spec: TaskSpec, cfg: PlasmConfig, out_dir: Path,
              progress: Callable[[str, float, dict], None] | None = None, *,
              test: list[Example] | None = None) -> dict:
    """Run PLASM end to end and return the report (also written to ``out_dir/report.json``).

    ``progress(stage, overall_fraction, info)`` is called at stage starts/ends and during training (at most
    every 0.5 s); ``info`` holds ``stage_progress`` and the ``timings`` so far, plus step/loss while training.
    ``test`` (optional) is an external labelled set the teacher and successor are also scored on.
    """
    import torch

    from albackend.models.acquisition import AcquisitionModel
    from albackend.strategies import mnlp

    validate_config(cfg, spec, check_models=True)
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        raise PlasmError(f"{out_dir} already holds a complete PLASM run; use a fresh directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (REPORT_FILE, PSEUDO_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    gold = list(gold)
    for e in gold:
        if spec.kind == "classification" and len(e.label_ids) != 1:
            raise PlasmError(f"gold example {e.task_id} has {len(e.label_ids)} labels; PLASM needs exactly one")
    pool_all = [str(t) for t in pool_texts]
    pool_index = [i for i, t in enumerate(pool_all) if t.strip()]
    pool = [pool_all[i] for i in pool_index]
    choice = parse_successor(cfg.successor, spec.kind, cfg.teacher)
    tracker = _Tracker(progress, STAGES)
    started = time.time()
    t_run = time.perf_counter()

    # ---- split
    tracker.start("split")
    train, dev = split_gold(gold, spec, cfg.dev_fraction, cfg.seed)
    tracker.finish(gold=len(gold), train=len(train), dev=len(dev), pool=len(pool))

    # ---- teacher
    tracker.start("teacher")
    teacher = AcquisitionModel.create(cfg.teacher, spec, device=cfg.device, max_length=cfg.max_length,
                                      seed=cfg.seed)
    teacher.meta["plasm"] = {"role": "teacher"}
    teacher_view = _HFView(teacher, cfg.infer_batch_size)
    teacher_stats = teacher.fit(train, cfg.train_config("teacher", spec.kind),
                                evaluate=lambda: _score(evaluate_successor(teacher_view, dev, spec)),
                                on_step=_step_reporter(tracker, 0.0, 0.95))
    teacher_dev = evaluate_successor(teacher_view, dev, spec)
    q_measured = _score(teacher_dev)
    q = float(cfg.q_override) if cfg.q_override is not None else q_measured
    teacher.save(out_dir / "teacher")
    tracker.finish(q=q)

    # ---- pseudo-label
    pseudo: list[Example] = []
    confidence = np.zeros(0)
    records: list[dict] = []
    if pool:
        tracker.start("pseudo_label")
        chunk = max(cfg.infer_batch_size * 8, 256)
        probs_all: list = []
        ranges_all: list = []
        for start in range(0, len(pool), chunk):
            preds = teacher.predict(pool[start:start + chunk], batch_size=cfg.infer_batch_size)
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
        tracker.finish(pseudo=len(pseudo))
    else:
        tracker.skip("pseudo_label", "empty pool")

    # ---- filter
    n = len(pseudo)
    plan = plan_filters(q, cfg.filter, cfg.uncertainty_share)
    keep = np.ones(n, dtype=bool)
    reason = ["kept"] * n
    tracin_info: dict = {"ran": False}
    if n:
        tracker.start("filter")
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
        influence = np.full(n, np.nan)
        if k_tracin >= len(remaining) and k_tracin > 0:
            keep[remaining] = False
            for i in remaining:
                reason[i] = f"tracin: the budget ({plan.tracin_fraction:.2%} of the pool) drops every remaining pseudo-label"
            tracin_info = {"ran": False, "why": "budget covers all remaining pseudo-labels"}
        elif k_tracin > 0:
            from plasm.tracin import tracin_self_influence

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
            tracin_info = {"ran": True, "model": base, "params": cfg.tracin_params, "method": cfg.tracin_method,
                           **result.summary()}
            for r, v in zip((records[i] for i in remaining), result.self_influence):
                r["self_influence"] = float(v)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        tracker.finish(kept=int(keep.sum()))
    else:
        tracker.skip("filter", "no pseudo-labels")
    n_unc = sum(r.startswith("uncertainty:") for r in reason)
    n_tr = sum(r.startswith("tracin:") for r in reason)
    for r, k, why in zip(records, keep, reason):
        r["kept"] = bool(k)
        r["reason"] = why

    # ---- successor
    tracker.start("successor")
    kept_pseudo = [pseudo[i] for i in np.flatnonzero(keep)]
    succ_train = list(train) + kept_pseudo
    successor = make_successor(cfg, spec)
    fit_kwargs: dict = {}
    if choice.kind == "hf":
        fit_kwargs["on_step"] = _step_reporter(tracker, 0.0, 0.95)
    succ_stats = successor.fit([e.text for e in succ_train], _targets(succ_train, spec),
                               dev_texts=[e.text for e in dev], dev_targets=_targets(dev, spec), seed=cfg.seed,
                               **fit_kwargs)
    successor.save(out_dir / "successor")
    tracker.finish()

    # ---- evaluate
    tracker.start("evaluate")
    dev_metrics = {"teacher": teacher_dev, "successor": evaluate_successor(successor, dev, spec)}
    test_metrics = None
    if test:
        test_metrics = {"teacher": evaluate_successor(teacher_view, test, spec),
                        "successor": evaluate_successor(successor, test, spec)}
    tracker.finish()

    # ---- write
    tracker.start("write")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(out_dir / PSEUDO_FILE, lines)
    n_kept = int(keep.sum())
    frac = (lambda x: x / n if n else 0.0)
    report = {
        "status": "complete",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": None,
        "task": spec.to_dict(),
        "config": cfg.to_dict(),
        "successor_type": choice.describe(),
        "counts": {"gold": len(gold), "gold_train": len(train), "dev": len(dev), "pool": len(pool_all),
                   "pool_blank_skipped": len(pool_all) - len(pool), "pseudo": n,
                   "dropped_uncertainty": n_unc, "dropped_tracin": n_tr, "dropped": n - n_kept, "kept": n_kept,
                   "successor_train": len(succ_train)},
        "q": q, "q_measured": q_measured, "q_metric": "span_f1" if spec.kind == "tagging" else "accuracy",
        "fractions": {"planned_uncertainty": plan.uncertainty_fraction, "planned_tracin": plan.tracin_fraction,
                      "planned_total": plan.total, "dropped_uncertainty": frac(n_unc), "dropped_tracin": frac(n_tr),
                      "dropped": frac(n - n_kept), "kept": frac(n_kept)},
        "dev_metrics": dev_metrics,
        "test_metrics": test_metrics,
        "teacher": {"model": cfg.teacher, "training": _jsonable(teacher_stats)},
        "successor": {"type": choice.describe(), "training": _jsonable(succ_stats)},
        "tracin": tracin_info,
        "timings": {},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": str(teacher.device)},
        "artifacts": {"teacher": "teacher", "successor": "successor", "pseudo_labels": PSEUDO_FILE,
                      "report": REPORT_FILE},
    }
    tracker.finish()
    report["timings"] = {**tracker.timings, "total": round(time.perf_counter() - t_run, 3)}
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2, default=_json_default))
    atomic_write_text(out_dir / COMPLETE_MARKER, report["finished_at"] + "\n")
    if progress is not None:
        progress("done", 1.0, {"stage_progress": 1.0, "timings": report["timings"]})
    return report


class _HFView:
    """An AcquisitionModel seen through the successor interface (predict_proba / predict_spans)."""

    def __init__(self, model, batch_size: int):
        from plasm.successors.hf import HFSuccessor

        self._s = HFSuccessor.from_model(model, batch_size=batch_size)

    def predict_proba(self, texts):
        return self._s.predict_proba(texts)

    def predict_spans(self, texts):
        return self._s.predict_spans(texts)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def remove_run(out_dir: str | Path) -> None:
    """Delete a run directory (used by tests and by callers that retry into the same place)."""
    shutil.rmtree(out_dir, ignore_errors=True)
