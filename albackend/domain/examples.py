"""Label Studio tasks and annotations -> training examples, with explained skips.

Bad input from Label Studio (missing fields, labels not in the config, spans out of range) must never
crash a job: each problem becomes a `Skip` with a reason that the job logs and counts.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from albackend.domain.labelconfig import TaskSpec

log = logging.getLogger(__name__)
# JSON may carry lone UTF-16 surrogates ("a\\ud800b" is valid JSON); tokenizers and UTF-8 encoders refuse them.
_SURROGATE = re.compile("[\ud800-\udfff]")


class TaskError(ValueError):
    """A task cannot be used (no text, wrong type); the message is safe to show to a user."""


@dataclass
class Example:
    """One gold example: the text and either class ids or character spans."""

    task_id: int | None
    text: str
    label_ids: list[int] = field(default_factory=list)
    spans: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass
class Skip:
    task_id: Any
    reason: str


def task_text(task: Any, spec: TaskSpec, max_chars: int) -> str:
    """The text a task carries in the configured field, truncated to max_chars."""
    if not isinstance(task, dict):
        raise TaskError("task is not a JSON object")
    data = task.get("data")
    if not isinstance(data, dict):
        raise TaskError("task has no 'data' object")
    if spec.value_key not in data:
        raise TaskError(f"task data has no field {spec.value_key!r}")
    text = data[spec.value_key]
    if not isinstance(text, str):
        raise TaskError(f"task field {spec.value_key!r} is {type(text).__name__}, not text")
    return clean_text(text[:max_chars] if max_chars > 0 else text)


def clean_text(text: str) -> str:
    """Replace lone surrogates by U+FFFD one for one, so character offsets (NER spans) stay valid."""
    return _SURROGATE.sub("\ufffd", text)


def int64_id(value: Any) -> int | None:
    """The task id if it is an integer that fits the stores (SQLite, int64 arrays); else None.

    A task without such an id is still answered, but not cached: LS never sends one, a fuzzer does.
    """
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None


def latest_annotation(task: dict) -> dict | None:
    """The most recent non-cancelled annotation: what the annotator meant last."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    anns = [a for a in anns if not a.get("was_cancelled") and isinstance(a.get("result"), list)]
    if not anns:
        return None
    return max(anns, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def is_labeled(task: dict) -> bool:
    return latest_annotation(task) is not None


def _classification(task_id: Any, text: str, result: list, spec: TaskSpec) -> Example | Skip:
    names: list[str] = []
    for item in result:
        if isinstance(item, dict) and item.get("from_name") == spec.from_name:
            value = item.get("value") or {}
            names.extend(c for c in value.get("choices") or [] if isinstance(c, str))
    if not names:
        return Skip(task_id, f"annotation has no choice for {spec.from_name!r}")
    unknown = [n for n in names if n not in spec.labels]
    known = [spec.labels.index(n) for n in names if n in spec.labels]
    if not known:
        return Skip(task_id, f"labels {unknown} are not in the label config")
    if not spec.multi_label:
        known = known[:1]
    return Example(task_id, text, label_ids=sorted(set(known)))


def _tagging(task_id: Any, text: str, result: list, spec: TaskSpec) -> tuple[Example, list[str]]:
    spans: list[tuple[int, int, str]] = []
    problems: list[str] = []
    for item in result:
        if not isinstance(item, dict) or item.get("from_name") != spec.from_name:
            continue
        value = item.get("value") or {}
        start, end, labels = value.get("start"), value.get("end"), value.get("labels") or []
        if not isinstance(start, int) or not isinstance(end, int) or not labels:
            problems.append("region without integer start/end or labels")
            continue
        if not 0 <= start < end <= len(text):
            problems.append(f"span {start}-{end} outside the text (length {len(text)})")
            continue
        if labels[0] not in spec.labels:
            problems.append(f"label {labels[0]!r} not in the label config")
            continue
        spans.append((start, end, labels[0]))
    kept: list[tuple[int, int, str]] = []
    for span in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):
        if kept and span[0] < kept[-1][1]:
            problems.append(f"span {span[0]}-{span[1]} overlaps {kept[-1][0]}-{kept[-1][1]}; kept the first")
            continue
        kept.append(span)
    return Example(task_id, text, spans=kept), problems


def gold_example(task: dict, spec: TaskSpec, max_chars: int) -> Example | Skip:
    """The training example of one annotated task, or the reason it cannot be used."""
    task_id = task.get("id") if isinstance(task, dict) else None
    try:
        text = task_text(task, spec, max_chars)
    except TaskError as exc:
        return Skip(task_id, str(exc))
    if not text.strip():
        return Skip(task_id, "empty text")
    ann = latest_annotation(task)
    if ann is None:
        return Skip(task_id, "no non-cancelled annotation")
    if spec.kind == "classification":
        return _classification(task_id, text, ann["result"], spec)
    example, problems = _tagging(task_id, text, ann["result"], spec)
    for p in problems:
        log.info("task %s: skipped a region: %s", task_id, p)
    return example


def gold_examples(tasks: Iterable[dict], spec: TaskSpec, max_chars: int) -> tuple[list[Example], list[Skip]]:
    examples, skips = [], []
    for task in tasks:
        out = gold_example(task, spec, max_chars)
        (skips if isinstance(out, Skip) else examples).append(out)
    return examples, skips
