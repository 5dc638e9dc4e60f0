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
from pathlib import Path

import numpy as np
import torch

from albackend.examples import Example
from albackend.labelconfig import TaskSpec
from albackend.models.acquisition import AcquisitionModel
from albackend.store import atomic_write_text, json_default
from plasm.config import (SUCCESSOR_KEYWORDS, PlasmConfig, PlasmError, SuccessorChoice,  # noqa: F401 - re-exported
                          parse_successor, tracin_base, validate_config)
from plasm.evaluation import HFView, evaluate_successor, example_targets, metric_score
from plasm.filters import plan_filters
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


def run_plasm(gold: list[Example], pool_texts: list[str], spec: TaskSpec, cfg: PlasmConfig, out_dir: Path,
              progress: Callable[[str, float, dict], None] | None = None, *,
              test: list[Example] | None = None) -> dict:
    """Run PLASM end to end and return the report (also written to ``out_dir/report.json``).

    ``progress(stage, overall_fraction, info)`` is called at stage starts/ends and during training (at most
    every 0.5 s); ``info`` holds ``stage_progress`` and the ``timings`` so far, plus step/loss while training.
    ``test`` (optional) is an external labelled set the teacher and successor are also scored on.
    """

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
    tracker = Tracker(progress, STAGES)
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
    teacher_view = HFView(teacher, cfg.infer_batch_size)
    teacher_stats = teacher.fit(train, cfg.train_config("teacher", spec.kind),
                                evaluate=lambda: metric_score(evaluate_successor(teacher_view, dev, spec)),
                                on_step=step_reporter(tracker, 0.0, 0.95))
    teacher_dev = evaluate_successor(teacher_view, dev, spec)
    q_measured = metric_score(teacher_dev)
    q = float(cfg.q_override) if cfg.q_override is not None else q_measured
    teacher.save(out_dir / "teacher")
    tracker.finish(q=q)

    # ---- pseudo-label
    pseudo: list[Example] = []
    confidence = np.zeros(0)
    records: list[dict] = []
    if pool:
        tracker.start("pseudo_label")
        pseudo, confidence, records = pseudo_label(teacher, pool, pool_index, spec, cfg.infer_batch_size, tracker)
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
        keep, reason, tracin_info = filter_pseudo_labels(plan, confidence, pseudo, records, train, spec, cfg,
                                                         tracker)
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
        fit_kwargs["on_step"] = step_reporter(tracker, 0.0, 0.95)
    succ_stats = successor.fit([e.text for e in succ_train], example_targets(succ_train, spec),
                               dev_texts=[e.text for e in dev], dev_targets=example_targets(dev, spec), seed=cfg.seed,
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
