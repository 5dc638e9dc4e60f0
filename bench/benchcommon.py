"""Helpers shared by bench/scoring.py, bench/endpoints.py and bench/iteration.py (not a benchmark itself).

AG News loading (seeded shuffle: the CSV is sorted by label), the classification TaskSpec the product builds
from the AG News label config, Example / LS-task construction, a table printer, JSON output and the machine
description that goes into every JSON file. No scoring or UPS logic lives here: the benchmarks call the
product's own code for that.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from anywhere without installing
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_POOL = Path(os.environ.get("SHARED_DATA") or REPO_ROOT.parent / "shared" / "data") / "ag_news" / "train_pool.csv"
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
CLASSIFICATION_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    + "".join(f'<Choice value="{v}"/>' for v in AGNEWS_LABELS)
    + "</Choices></View>"
)

# Paper, Table 2 (AG News, seconds, V100): ELECTRA (standard) vs DistilBERT with UPS (PLASM + UPS).
PAPER_TABLE2 = {
    "iter_2": {"standard": 798.6, "plasm_ups": 571.1},
    "iter_6": {"standard": 943.4, "plasm_ups": 222.9},
    "iter_10": {"standard": 1077.6, "plasm_ups": 297.7},
    "iter_15": {"standard": 1250.5, "plasm_ups": 398.6},
    "overall": {"standard": 15122.9, "plasm_ups": 5536.7},
}


@dataclass
class Row:
    text: str
    label: int  # index into AGNEWS_LABELS


def load_pool(path: Path | str = DEFAULT_POOL, *, seed: int = 0, limit: int | None = None) -> list[Row]:
    """The AG News pool (text,label,label_name), shuffled with ``seed`` (the file is sorted by label)."""
    import numpy as np

    with open(path, newline="", encoding="utf-8") as fh:
        rows = [Row(r["text"], AGNEWS_LABELS.index(r["label_name"])) for r in csv.DictReader(fh)]
    order = np.random.default_rng(seed).permutation(len(rows))
    rows = [rows[i] for i in order]
    return rows[:limit] if limit else rows


def seed_split(rows: Sequence[Row], n_seed: int) -> tuple[list[Row], list[Row]]:
    """First ``n_seed`` rows of the (shuffled) pool as the labeled seed, the rest unlabeled. Raises when the
    seed holds fewer than 2 classes (the product refuses to train a classifier on one class)."""
    seed, rest = list(rows[:n_seed]), list(rows[n_seed:])
    if len({r.label for r in seed}) < 2:
        raise SystemExit(f"the seed set of {n_seed} holds fewer than 2 classes: use a larger seed or another --seed")
    return seed, rest


def agnews_spec():
    """The TaskSpec the product derives from the AG News label config (its own parser)."""
    from albackend.domain.labelconfig import parse_label_config

    return parse_label_config(CLASSIFICATION_CONFIG)


def examples(rows: Sequence[Row]):
    from albackend.domain.examples import Example

    return [Example(task_id=i, text=r.text, label_ids=[r.label]) for i, r in enumerate(rows)]


def labeled_task(task_id: int, row: Row) -> dict:
    """An LS task dict with one annotation, as the training job fetches it from Label Studio."""
    result = [{"from_name": "label", "to_name": "text", "type": "choices",
               "value": {"choices": [AGNEWS_LABELS[row.label]]}}]
    return {"id": task_id, "data": {"text": row.text},
            "annotations": [{"id": 100000 + task_id, "result": result, "was_cancelled": False,
                             "created_at": "2024-01-01T00:00:00Z"}]}


def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def machine_info() -> dict:
    import torch

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        pass
    return info


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for j, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def write_json(path: Path | str, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
