"""PLASM as a successor of the emulation: :func:`plasm.pipeline.run_plasm` on the labeled set of an iteration.

Each iteration runs the whole product pipeline from scratch on the gold labels acquired so far and the
remaining unlabeled pool (optionally a random subset of ``plasm_pool`` items, to bound CPU time): teacher
with a 10% dev split and early stopping, pseudo-labels, the uncertainty / TracIn filter sized by the teacher's
dev score, and the successor trained on gold + kept pseudo-labels. The saved successor is loaded back with
:func:`plasm.successors.load_successor` and evaluated on the test set like every other successor; the run
directory is deleted afterwards (``keep_dir`` keeps it).
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from albackend.domain.examples import Example
from bench.emulation.config import ConfigSpec, Settings
from bench.emulation.data import Dataset
from bench.emulation.learners import Learner, TrainOpts


def plasm_available() -> bool:
    try:
        import plasm.pipeline  # noqa: F401
    except ImportError:
        return False
    return True


class PlasmLearner(Learner):
    def __init__(self, cfg: ConfigSpec, ds: Dataset, st: Settings, keep_dir: str | Path | None = None):
        self.cfg, self.ds, self.st, self.spec = cfg, ds, st, ds.spec
        self.name = f"plasm:{cfg.teacher}->{cfg.successor}"
        self.keep_dir = Path(keep_dir) if keep_dir else None
        self.model = None
        self.last_report: dict | None = None

    def _config(self, seed: int):
        from plasm.pipeline import PlasmConfig

        st = self.st
        kind = self.spec.kind
        extra = dict(st.plasm or {})
        # a train config in settings.plasm overrides the role's options for PLASM only (fields not named keep the
        # role's): its successor trains on gold + kept pseudo-labels, several times the gold-only baselines'
        # data, so a step cap sized for those undertrains it (docs/results.md section 8)
        train = {key: TrainOpts.from_dict({**dataclasses.asdict(opts), **(extra.pop(key, None) or {})})
                 .train_config(kind, seed)
                 for key, opts in (("teacher_train", st.teacher_train), ("successor_train", st.successor_train))}
        return PlasmConfig(
            teacher=self.cfg.teacher, successor=self.cfg.successor, filter=self.cfg.plasm_filter, seed=seed,
            device=st.device, max_length=st.teacher_train.max_length, **train,
            classical=dict(st.classical), infer_batch_size=st.teacher_train.infer_batch_size, **extra)

    def fit(self, examples: Sequence[Example], seed: int, labeled: np.ndarray | None = None) -> dict:
        from plasm.pipeline import run_plasm
        from plasm.successors import load_successor

        pool = self.ds.pool
        unlabeled = np.setdiff1d(np.arange(len(pool), dtype=np.int64), [] if labeled is None else labeled)
        if 0 < self.cfg.plasm_pool < unlabeled.size:
            unlabeled = np.sort(np.random.default_rng(seed).choice(unlabeled, self.cfg.plasm_pool, replace=False))
        pool_texts = [pool.examples[i].text for i in unlabeled]
        root = Path(tempfile.mkdtemp(prefix="emulate-plasm-"))
        out = root / "run"
        try:
            report = run_plasm(list(examples), pool_texts, self.spec, self._config(seed), out)
            self.model = load_successor(out / "successor", device=None if self.st.device == "auto" else self.st.device)
            if self.keep_dir is not None:
                shutil.copytree(out, self.keep_dir / f"seed{seed}", dirs_exist_ok=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        counts = report.get("counts", {})
        self.last_report = {
            "q": report.get("q"), "teacher_dev": _dev(report, "teacher"), "successor_dev": _dev(report, "successor"),
            "pseudo": counts.get("pseudo"), "kept": counts.get("kept"), "dropped": counts.get("dropped"),
            "successor_train": counts.get("successor_train"), "timings": report.get("timings", {}),
        }
        return self.last_report

    def predict_targets(self, texts: Sequence[str]) -> list:
        if self.model is None:
            raise RuntimeError("PLASM successor is not trained")
        if self.spec.kind == "classification":
            return [int(i) for i in np.asarray(self.model.predict_proba(list(texts))).argmax(axis=1)]
        return self.model.predict_spans(list(texts))

    def release(self) -> None:
        self.model = None


def _dev(report: dict, who: str) -> float | None:
    m = (report.get("dev_metrics") or {}).get(who) or {}
    key = m.get("metric")
    return m.get(key) if key else None
