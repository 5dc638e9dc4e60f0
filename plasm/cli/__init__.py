"""``python -m plasm``: run | status | list | distil.

    python -m plasm run --export tasks.json --label-config config.xml --successor cnn            # enqueue on RQ
    python -m plasm run --project 3 --ls-url http://ls:8080 --ls-token TOKEN --successor hf:mpnet --sync
    python -m plasm status plasm-20250101-120000-abcd1234 [--json] [--wait]
    python -m plasm list [--json]
    python -m plasm distil --teacher mpnet --out students/mpnet-6l --export tasks.json

Environment (flags win): MODEL_DIR (runs go to MODEL_DIR/plasm/<run id>), REDIS_URL, RQ_QUEUE (default
"albackend"), LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, ACQUISITION_MODEL (``--teacher auto`` uses the teacher
named in its albackend.json, as written by ``plasm distil``), DEVICE, MAX_TEXT_CHARS.

Errors a user can fix (bad project id or token, unreachable Redis or Label Studio, unknown model name, missing
export or label config, bad options: :data:`plasm.errors.USER_ERRORS`) print one ``error: ...`` line and exit
with code 2; a run that fails in ``--sync`` mode exits with code 1 (its reason is in the run's status.json too).

This module is the parser and the dispatch; each command is a module of its own (:mod:`plasm.cli.run`,
:mod:`plasm.cli.status`, :mod:`plasm.cli.listing`, :mod:`plasm.cli.distil`) with a ``main(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from albackend import settings
from plasm.cli.common import DEFAULT_TEACHER, EXIT_USER_ERROR
from plasm.cli.options import precheck
from plasm.errors import USER_ERRORS

COMMANDS = {"run": "plasm.cli.run", "status": "plasm.cli.status", "list": "plasm.cli.listing",
            "distil": "plasm.cli.distil"}


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run PLASM (enqueue on RQ, or --sync here)",
                       description="Teacher -> pseudo-labels -> filters -> successor, on a project or an export.")
    src = p.add_argument_group("data source (one of)")
    src.add_argument("--project", help="Label Studio project id")
    src.add_argument("--ls-url", help="Label Studio URL (default: LABEL_STUDIO_URL)")
    src.add_argument("--ls-token", help="Label Studio personal access token or legacy token (default: "
                                        "LABEL_STUDIO_API_KEY; never logged)")
    src.add_argument("--export", help="Label Studio JSON export file")
    src.add_argument("--label-config", help="label config XML file for --export (default: <export>.xml or "
                                            "label_config.xml next to it)")
    src.add_argument("--max-chars", type=int, default=int(settings.env("MAX_TEXT_CHARS")))
    m = p.add_argument_group("models and filters")
    m.add_argument("--teacher", default="auto", help="teacher model: packaged name (minilm-l6, splade-tiny, mpnet), "
                                                     "local HF dir or hub id owner/name; auto = ACQUISITION_MODEL's "
                                                     f"teacher or {DEFAULT_TEACHER}")
    m.add_argument("--successor", default="same-as-teacher",
                   help="hf:<model> | cnn | bilstm | classical | same-as-teacher (default)")
    m.add_argument("--filter", default="uncertainty", choices=("uncertainty", "tracin", "both", "none"))
    m.add_argument("--uncertainty-share", type=float, default=None, help="'both': share of 1-q dropped by uncertainty")
    m.add_argument("--dev-fraction", type=float, default=None, help="gold share held out as dev (default 0.1)")
    m.add_argument("--seed", type=int, default=None)
    m.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="default: DEVICE or auto")
    m.add_argument("--max-length", type=int, default=None)
    m.add_argument("--epochs", type=int, default=None, help="training epochs (teacher, HF successor, TracIn model)")
    m.add_argument("--min-steps", type=int, default=None, help="minimum training steps (default 60)")
    m.add_argument("--max-steps", type=int, default=None, help="maximum training steps (0 = none)")
    m.add_argument("--lr", type=float, default=None, help="learning rate of the HF models")
    m.add_argument("--batch-size", type=int, default=None, help="training batch size of the HF models")
    m.add_argument("--tracin-model", default=None, help="auto (successor's encoder if HF, else the teacher's) or a model")
    m.add_argument("--tracin-checkpoints", type=int, default=None)
    m.add_argument("--tracin-params", default=None, choices=("head", "head+last", "all"))
    m.add_argument("--config", help="JSON file of PlasmConfig options (flags win), e.g. {\"classical\": {\"epochs\": 5}}")
    o = p.add_argument_group("execution")
    o.add_argument("--sync", action="store_true", help="run in this process with progress bars")
    o.add_argument("--out", help="run directory (default: MODEL_DIR/plasm/<run id>); must not hold a complete run")
    o.add_argument("--model-dir", help="default: MODEL_DIR or ./data/models")
    o.add_argument("--redis-url", help="default: REDIS_URL")
    o.add_argument("--queue", help="RQ queue (default: RQ_QUEUE or albackend)")
    o.add_argument("--timeout", type=int, default=6 * 3600, help="RQ job timeout in seconds (default 6 h)")
    o.add_argument("--push", action="store_true", help="push the successor's predictions to the LS project as a "
                                                      "new model version (the run id)")
    o.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="stage, progress, timings and errors of a job")
    p.add_argument("job", help="job id (= run id) printed by 'run'")
    p.add_argument("--redis-url", help="default: REDIS_URL")
    p.add_argument("--model-dir", help="default: MODEL_DIR (run dirs are read when Redis does not know the job)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--wait", action="store_true", help="poll until the job finishes or fails")
    p.add_argument("--interval", type=float, default=2.0)


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="recent PLASM jobs with their state")
    p.add_argument("--redis-url", help="default: REDIS_URL")
    p.add_argument("--queue", help="default: RQ_QUEUE or albackend")
    p.add_argument("--model-dir", help="default: MODEL_DIR")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")


def _add_distil_source(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("unlabeled text (one source)")
    g.add_argument("--text-file", help="UTF-8 text file, one text per line")
    g.add_argument("--export", help="Label Studio JSON export; the texts are task data[--field]")
    g.add_argument("--field", help="task data field holding the text (default: from the label config, or 'text')")
    g.add_argument("--csv", help="CSV file; the texts are column --text-col")
    g.add_argument("--text-col", default="text", help="text column of --csv and --eval-csv")
    g.add_argument("--ls-project", help="Label Studio project id (URL and key from --ls-url/--ls-key or env)")
    g.add_argument("--ls-url", default=None, help="default: LABEL_STUDIO_URL")
    g.add_argument("--ls-key", default=None, help="default: LABEL_STUDIO_API_KEY (never logged)")
    g.add_argument("--max-texts", type=int, default=0, help="use a seeded random sample of this many texts")


def _add_distil_quality(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("quality report")
    q.add_argument("--eval-csv", help="labeled CSV (--text-col, --label-col) for the quality report")
    q.add_argument("--label-col", default="label")
    q.add_argument("--eval-fraction", type=float, default=0.01, help="labeled share used for fine-tuning")
    q.add_argument("--eval-size", type=int, default=0, help="labeled examples for fine-tuning (overrides fraction)")
    q.add_argument("--pool-size", type=int, default=2000, help="pool sample scored by every model")
    q.add_argument("--unrelated", default="mpnet", help="the unrelated comparison model ('none' to skip)")
    q.add_argument("--eval-epochs", type=int, default=5)
    q.add_argument("--eval-min-steps", type=int, default=60)
    q.add_argument("--eval-lr", type=float, default=None, help="default: the backend's fine-tuning lr")
    q.add_argument("--score-batch-size", type=int, default=64)
    q.add_argument("--noise-baseline", action="store_true",
                   help="also fine-tune the teacher with another seed: the teacher~teacher ceiling")
    q.add_argument("--no-quality", action="store_true", help="skip the quality report")
    q.add_argument("--quality-only", action="store_true", help="only (re)write the report of the student in --out")


def _add_distil(sub) -> None:
    p = sub.add_parser("distil", help="distil a student acquisition model from a teacher",
                       description="Distil a student acquisition model from any teacher on unlabeled text "
                                   "(albackend.models.distil), then report its quality.")
    p.add_argument("--teacher", default="minilm-l6", help="teacher: packaged name, local HF directory or hub id")
    p.add_argument("--out", required=True, help="output directory of the student")
    p.add_argument("--layers", default="", help="teacher layers to keep, e.g. 0,2,4 (default: --keep-every)")
    p.add_argument("--keep-every", type=int, default=2, help="keep teacher layers 0, k, 2k, ... (default 2)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (paper A.1: 5e-4)")
    p.add_argument("--warmup", type=float, default=0.05, help="linear warm-up, fraction of the steps")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=0, help="optimizer steps (overrides --epochs when > 0)")
    p.add_argument("--temperature", type=float, default=2.0, help="soft-target temperature (MLM teachers)")
    p.add_argument("--mlm-prob", type=float, default=0.15, help="masking rate (MLM teachers)")
    p.add_argument("--loss-weights", default="ce=1,mlm=1,cos=1,mse=1")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (0 = none)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep out/checkpoints after success")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out/checkpoints")
    p.add_argument("--stop-after", type=int, default=0, help="stop (checkpointed) after this many steps")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default=settings.env("DEVICE"), choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default; 1 is much "
                   "faster than 2 on a CPU shared with other busy processes)")
    p.add_argument("--sync", action="store_true", help="run here with a progress bar instead of enqueuing on RQ")
    _add_distil_source(p)
    _add_distil_quality(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m plasm", description="PLASM: pseudo-labeling for "
                                     "acquisition-successor mismatch (teacher -> pseudo-labels -> successor)")
    parser.add_argument("--log-level", default="WARNING", help="log level of this process (default WARNING: the "
                                                                "progress bars show the progress)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_status, _add_list, _add_distil):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        precheck(args)  # model names, from the options alone
        # The command's module (torch, transformers for run and distil) is imported only now, after parsing and
        # the name checks: --help and a mistyped option or model name answer at once. The one lazy import of the
        # CLI (tests/test_architecture.py allows it).
        command = importlib.import_module(COMMANDS[args.command])
        return int(command.main(args) or 0)
    except USER_ERRORS as exc:  # anything else is a bug: its traceback propagates
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_USER_ERROR
