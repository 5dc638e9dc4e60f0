"""The distilled student acquisition model of a run: the product's ``python -m plasm distil`` on the pool's texts.

A configuration whose model is named ``student`` (:data:`bench.emulation.config.STUDENT`) acquires with a student
distilled from the teacher (``Settings.distil``: its options; teacher default: the settings' ``teacher``) on the
unlabeled texts of the run's pool, before any AL iteration, as a user would before annotating (paper section 4.1,
step 1). The student is built by :func:`plasm.distil_job.run`, the code behind the CLI (no quality report), into
``OUT/student`` and reused by a later run (``--resume``) with the same options and pool. Every ``student`` name of
the settings and configurations is then replaced by that directory.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shlex
import time
from pathlib import Path

from albackend.models.registry import META_FILE
from bench.emulation.config import STUDENT, Settings
from bench.emulation.data import Dataset
from plasm.distil_job import run as distil_run

STUDENT_DIR = "student"
STAMP_FILE = "emulate_stamp.json"  # options + texts digest of the student in the directory
TEXTS_FILE = "student_texts.csv"
DEFAULTS = {"epochs": 1.0, "max_length": 128, "batch_size": 32, "seed": 42}
# the options of `python -m plasm distil` that shape the student (the text source and output are the run's)
OPTIONS = ("teacher", "layers", "keep_every", "max_length", "batch_size", "grad_accum", "lr", "warmup", "epochs",
           "max_steps", "temperature", "mlm_prob", "loss_weights", "seed", "device", "max_texts")


def distil_options(st: Settings) -> dict:
    """The distillation options of the run (defaults < ``Settings.distil``); unknown keys are refused."""
    unknown = set(st.distil) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown distil option(s) {sorted(unknown)}; valid: {', '.join(OPTIONS)}")
    opts = {**DEFAULTS, "teacher": st.teacher, **st.distil, "device": st.distil.get("device", st.device)}
    if opts["teacher"] == STUDENT:
        raise ValueError("the student's teacher cannot be the student itself")
    if isinstance(opts.get("layers"), list):
        opts["layers"] = ",".join(str(i) for i in opts["layers"])
    return opts


def command(opts: dict, out: Path, texts_csv: Path) -> str:
    """The equivalent command line, for the report."""
    parts = ["python", "-m", "plasm", "distil", "--sync", "--no-quality", "--out", str(out), "--csv", str(texts_csv)]
    for key, value in opts.items():
        parts += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _write_texts(path: Path, texts: list[str]) -> str:
    """The pool's texts as a one-column CSV (texts may hold newlines); returns their SHA-1."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    return hashlib.sha1("\n".join(texts).encode()).hexdigest()


def distil_student(ds: Dataset, st: Settings, out_dir: Path, *, progress: bool = True) -> dict:
    """Distil the student into ``out_dir/student`` (or reuse the one there); returns what the report says of it."""
    opts = distil_options(st)
    target, texts_csv = out_dir / STUDENT_DIR, out_dir / TEXTS_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = _write_texts(texts_csv, ds.pool.texts)
    stamp = {"options": opts, "texts_sha1": digest}
    info = {"dir": str(target), "teacher": opts["teacher"], "command": command(opts, target, texts_csv)}
    if (target / META_FILE).is_file() and (target / STAMP_FILE).is_file():
        if json.loads((target / STAMP_FILE).read_text()) == stamp:
            return {**info, **_summary(target), "reused": True}
    t0 = time.perf_counter()
    report = distil_run({**opts, "out": str(target), "csv": str(texts_csv), "text_col": "text",
                         "no_quality": True, "checkpoint_every": 0}, progress=progress)
    (target / STAMP_FILE).write_text(json.dumps(stamp, indent=1))
    return {**info, **_summary(target), "wall_s": round(time.perf_counter() - t0, 2), "reused": False,
            "steps": report.get("steps")}


def _summary(target: Path) -> dict:
    meta = json.loads((target / META_FILE).read_text())
    return {"layers_kept": meta.get("teacher_layers_kept"), "teacher_layers": meta.get("teacher_num_layers"),
            "n_texts": (meta.get("distilled_on") or {}).get("n_texts"), "train_seconds": meta.get("train_seconds"),
            "device": meta.get("device"), "losses_used": (meta.get("losses") or {}).get("used")}


def substitute(st: Settings, path: str) -> None:
    """Every ``student`` model name of the settings and configurations becomes the distilled directory."""
    for obj in [st, *st.configs]:
        for key in ("acquisition", "successor", "teacher"):
            if getattr(obj, key) == STUDENT:
                setattr(obj, key, path)
