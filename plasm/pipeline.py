"""PLASM orchestration (paper section 4.1): teacher -> pseudo-labels -> filters -> successor.

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
    :func:`albackend.algorithms.plasm_filters.plan_filters` (q, mode) splits the 1 - q drop budget; the uncertainty
    filter drops the least confident pseudo-labels, TracIn the most self-influential ones (of what the uncertainty filter kept).
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

This module is the orchestration and the report; the parts live in :mod:`plasm.config` (``PlasmConfig``, successor
choice, validation), :mod:`plasm.stages` (split, pseudo-label, filter, successor construction),
:mod:`plasm.evaluation` (scoring teacher and successors) and :mod:`plasm.progress` (stage-weighted progress). The
public names are re-exported here: ``from plasm.pipeline import PlasmConfig, run_plasm, ...`` keeps working.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from albackend.domain.examples import Example
from albackend.domain.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel
from albackend.services.store import atomic_write_text, json_default
from plasm.config import (SUCCESSOR_KEYWORDS, PlasmConfig, PlasmError, SuccessorChoice,  # noqa: F401 - re-exported
                          parse_successor, tracin_base, validate_config)
from plasm.evaluation import HFView, evaluate_successor, example_targets, metric_score, successor_warnings
from albackend.algorithms.plasm_filters import plan_filters
from plasm.progress import Tracker, step_reporter
from plasm.stages import filter_pseudo_labels, make_successor, pseudo_label, split_gold

__all__ = ["PlasmConfig", "PlasmError", "SuccessorChoice", "STAGES", "run_plasm", "split_gold", "parse_successor",
           "validate_config", "make_successor", "evaluate_successor", "COMPLETE_MARKER", "REPORT_FILE",
           "PSEUDO_FILE", "is_complete"]

COMPLETE_MARKER = "COMPLETE"
REPORT_FILE = "report.json"
PSEUDO_FILE = "pseudo_labels.jsonl"
# Stage -> share of the overall progress bar (rough CPU cost with TracIn on; normalised when stages are skipped).
STAGES: dict[str, float] = {"split": 0.01, "teacher": 0.30, "pseudo_label": 0.10, "filter": 0.22,
                            "successor": 0.30, "evaluate": 0.04, "write": 0.03}


# ============================================================================================== run
def is_complete(out_dir: str | Path) -> bool:
    return (Path(out_dir) / COMPLETE_MARKER).is_file()


@dataclass
class _Teacher:
    """The fine-tuned teacher, its view as a successor, training stats, dev metrics and q."""

    model: AcquisitionModel
    view: HFView
    stats: dict
    dev: dict
    q_measured: float
    q: float


@dataclass
class _Filtered:
    """Pseudo-labels, their rows of pseudo_labels.jsonl, and what the filters kept."""

    pseudo: list[Example]
    records: list[dict]
    keep: np.ndarray
    tracin: dict


def _prepare(out_dir: Path, gold: list[Example], spec: TaskSpec, cfg: PlasmConfig) -> None:
    validate_config(cfg, spec, check_models=True)
    if is_complete(out_dir):
        raise PlasmError(f"{out_dir} already holds a complete PLASM run; use a fresh directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (REPORT_FILE, PSEUDO_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    for e in gold:
        if spec.kind == "classification" and len(e.label_ids) != 1:
            raise PlasmError(f"gold example {e.task_id} has {len(e.label_ids)} labels; PLASM needs exactly one")


def _teacher(train: list[Example], dev: list[Example], spec: TaskSpec, cfg: PlasmConfig, out_dir: Path,
             tracker: Tracker) -> _Teacher:
    """Fine-tune the teacher with early stopping on dev and save it; q = its dev score (or ``q_override``)."""
    tracker.start("teacher")
    teacher = AcquisitionModel.create(cfg.teacher, spec, device=cfg.device, max_length=cfg.max_length,
                                      seed=cfg.seed)
    teacher.meta["plasm"] = {"role": "teacher"}
    view = HFView(teacher, cfg.infer_batch_size)
    stats = teacher.fit(train, cfg.train_config("teacher", spec.kind),
                        evaluate=lambda: metric_score(evaluate_successor(view, dev, spec)),
                        on_step=step_reporter(tracker, 0.0, 0.95))
    dev_metrics = evaluate_successor(view, dev, spec)
    q_measured = metric_score(dev_metrics)
    q = float(cfg.q_override) if cfg.q_override is not None else q_measured
    teacher.save(out_dir / "teacher")
    tracker.finish(q=q)
    return _Teacher(teacher, view, stats, dev_metrics, q_measured, q)


def _pseudo_and_filter(teacher: _Teacher, pool: list[str], pool_index: list[int], train: list[Example],
                       spec: TaskSpec, cfg: PlasmConfig, plan, tracker: Tracker) -> _Filtered:
    """Pseudo-label the pool, then drop the planned share (uncertainty, then TracIn); records say why."""
    pseudo, confidence, records = [], np.zeros(0), []
    if pool:
        tracker.start("pseudo_label")
        pseudo, confidence, records = pseudo_label(teacher.model, pool, pool_index, spec, cfg.infer_batch_size,
                                                   tracker)
        tracker.finish(pseudo=len(pseudo))
    else:
        tracker.skip("pseudo_label", "empty pool")
    keep, reason, tracin_info = np.ones(len(pseudo), dtype=bool), ["kept"] * len(pseudo), {"ran": False}
    if pseudo:
        tracker.start("filter")
        keep, reason, tracin_info = filter_pseudo_labels(plan, confidence, pseudo, records, train, spec, cfg,
                                                         tracker)
        tracker.finish(kept=int(keep.sum()))
    else:
        tracker.skip("filter", "no pseudo-labels")
    for r, k, why in zip(records, keep, reason):
        r["kept"], r["reason"] = bool(k), why
    return _Filtered(pseudo, records, keep, tracin_info)


def _successor(train: list[Example], dev: list[Example], kept: list[Example], spec: TaskSpec, cfg: PlasmConfig,
               out_dir: Path, tracker: Tracker):
    """Train the configured successor on gold-train + kept pseudo-labels (early stopping on dev) and save it."""
    tracker.start("successor")
    succ_train = list(train) + kept
    successor = make_successor(cfg, spec)
    hf = parse_successor(cfg.successor, spec.kind, cfg.teacher).kind == "hf"
    fit_kwargs = {"on_step": step_reporter(tracker, 0.0, 0.95)} if hf else {}
    stats = successor.fit([e.text for e in succ_train], example_targets(succ_train, spec),
                          dev_texts=[e.text for e in dev], dev_targets=example_targets(dev, spec), seed=cfg.seed,
                          **fit_kwargs)
    successor.save(out_dir / "successor")
    tracker.finish()
    return successor, stats, len(succ_train)


def _counts(gold, train, dev, pool_all, pool, filtered: _Filtered, n_successor_train: int) -> dict:
    n, n_kept = len(filtered.pseudo), int(filtered.keep.sum())
    reasons = [r["reason"] for r in filtered.records]
    return {"gold": len(gold), "gold_train": len(train), "dev": len(dev), "pool": len(pool_all),
            "pool_blank_skipped": len(pool_all) - len(pool), "pseudo": n,
            "dropped_uncertainty": sum(r.startswith("uncertainty:") for r in reasons),
            "dropped_tracin": sum(r.startswith("tracin:") for r in reasons), "dropped": n - n_kept, "kept": n_kept,
            "successor_train": n_successor_train}


def _fractions(counts: dict, plan) -> dict:
    frac = (lambda x: x / counts["pseudo"] if counts["pseudo"] else 0.0)
    return {"planned_uncertainty": plan.uncertainty_fraction, "planned_tracin": plan.tracin_fraction,
            "planned_total": plan.total, "dropped_uncertainty": frac(counts["dropped_uncertainty"]),
            "dropped_tracin": frac(counts["dropped_tracin"]), "dropped": frac(counts["dropped"]),
            "kept": frac(counts["kept"])}


def run_plasm(gold: list[Example], pool_texts: list[str], spec: TaskSpec, cfg: PlasmConfig, out_dir: Path,
              progress: Callable[[str, float, dict], None] | None = None, *,
              test: list[Example] | None = None) -> dict:
    """Run PLASM end to end and return the report (also written to ``out_dir/report.json``).

    ``progress(stage, overall_fraction, info)`` is called at stage starts/ends and during training (at most
    every 0.5 s); ``info`` holds ``stage_progress`` and the ``timings`` so far, plus step/loss while training.
    ``test`` (optional) is an external labelled set the teacher and successor are also scored on.
    """
    out_dir, gold = Path(out_dir), list(gold)
    _prepare(out_dir, gold, spec, cfg)
    pool_all = [str(t) for t in pool_texts]
    pool_index = [i for i, t in enumerate(pool_all) if t.strip()]
    pool = [pool_all[i] for i in pool_index]
    tracker, started, t_run = Tracker(progress, STAGES), time.time(), time.perf_counter()
    tracker.start("split")
    train, dev = split_gold(gold, spec, cfg.dev_fraction, cfg.seed)
    tracker.finish(gold=len(gold), train=len(train), dev=len(dev), pool=len(pool))
    teacher = _teacher(train, dev, spec, cfg, out_dir, tracker)
    plan = plan_filters(teacher.q, cfg.filter, cfg.uncertainty_share)
    filtered = _pseudo_and_filter(teacher, pool, pool_index, train, spec, cfg, plan, tracker)
    kept = [filtered.pseudo[i] for i in np.flatnonzero(filtered.keep)]
    successor, succ_stats, n_succ = _successor(train, dev, kept, spec, cfg, out_dir, tracker)
    tracker.start("evaluate")
    dev_metrics = {"teacher": teacher.dev, "successor": evaluate_successor(successor, dev, spec)}
    test_metrics = {"teacher": evaluate_successor(teacher.view, test, spec),
                    "successor": evaluate_successor(successor, test, spec)} if test else None
    tracker.finish()
    tracker.start("write")
    atomic_write_text(out_dir / PSEUDO_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                     for r in filtered.records))
    counts = _counts(gold, train, dev, pool_all, pool, filtered, n_succ)
    successor_type = parse_successor(cfg.successor, spec.kind, cfg.teacher).describe()
    report = {
        "status": "complete", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": None, "task": spec.to_dict(), "config": cfg.to_dict(), "successor_type": successor_type,
        "counts": counts, "q": teacher.q, "q_measured": teacher.q_measured,
        "q_metric": "span_f1" if spec.kind == "tagging" else "accuracy", "fractions": _fractions(counts, plan),
        "dev_metrics": dev_metrics, "test_metrics": test_metrics,
        "teacher": {"model": cfg.teacher, "training": _jsonable(teacher.stats)},
        "successor": {"type": successor_type, "training": _jsonable(succ_stats)},
        "tracin": filtered.tracin, "warnings": successor_warnings(dev_metrics), "timings": {},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": str(teacher.model.device)},
        "artifacts": {"teacher": "teacher", "successor": "successor", "pseudo_labels": PSEUDO_FILE,
                      "report": REPORT_FILE},
    }
    tracker.finish()
    return _finish(report, out_dir, tracker, t_run, progress)


def _finish(report: dict, out_dir: Path, tracker: Tracker, t_run: float, progress) -> dict:
    """Write report.json, then COMPLETE (last, atomically), and report 100%."""
    report["timings"] = {**tracker.timings, "total": round(time.perf_counter() - t_run, 3)}
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2, default=json_default))
    atomic_write_text(out_dir / COMPLETE_MARKER, report["finished_at"] + "\n")
    if progress is not None:
        progress("done", 1.0, {"stage_progress": 1.0, "timings": report["timings"]})
    return report


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
