"""Where PLASM's data comes from: a live Label Studio project, or a Label Studio JSON export file.

Both give a :class:`PlasmData`: the task spec (from the project's label config), the gold examples (tasks
with a non-cancelled annotation, via :func:`albackend.domain.examples.gold_examples`) and the pool (the text of
every task without one). Problems are :class:`SourceError` with a one-line message for the CLI.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from albackend.domain.examples import Example, Skip, TaskError, gold_examples, is_labeled, task_text
from albackend.domain.labelconfig import ConfigError, TaskSpec, parse_label_config
from albackend.adapters.lsclient import LabelStudioError
from albackend.settings import Settings
from albackend.services.textlinks import LinkPolicy, TextLinks, drop_skips
from plasm.errors import SourceError

log = logging.getLogger(__name__)

__all__ = ["PlasmData", "SourceError", "from_tasks", "from_project", "from_export", "find_label_config",
           "DEFAULT_MAX_CHARS"]

DEFAULT_MAX_CHARS = 100_000


@dataclass
class PlasmData:
    spec: TaskSpec
    label_config: str
    gold: list[Example]
    pool_texts: list[str]
    pool_task_ids: list
    skipped: list[Skip] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    def summary(self) -> dict:
        reasons = Counter(s.reason for s in self.skipped)
        return {"gold": len(self.gold), "pool": len(self.pool_texts), "skipped": len(self.skipped),
                "skip_reasons": dict(reasons.most_common(10)), **self.source}


def from_tasks(tasks: Iterable[dict], label_config: str, *, max_chars: int = DEFAULT_MAX_CHARS,
               source: dict | None = None) -> PlasmData:
    """Split LS task dicts into gold examples and pool texts for ``label_config``."""
    try:
        spec = parse_label_config(label_config)
    except ConfigError as exc:
        raise SourceError(f"unsupported label config: {exc}") from None
    labeled, pool_texts, pool_ids, skipped = [], [], [], []
    for task in tasks:
        if not isinstance(task, dict):
            skipped.append(Skip(None, "task is not a JSON object"))
            continue
        if is_labeled(task):
            labeled.append(task)
            continue
        try:
            text = task_text(task, spec, max_chars)
        except TaskError as exc:
            skipped.append(Skip(task.get("id"), str(exc)))
            continue
        if not text.strip():
            skipped.append(Skip(task.get("id"), "empty text"))
            continue
        pool_texts.append(text)
        pool_ids.append(task.get("id"))
    gold, gold_skips = gold_examples(labeled, spec, max_chars)
    skipped += gold_skips
    for s in skipped[:20]:
        log.info("task %s not used: %s", s.task_id, s.reason)
    return PlasmData(spec=spec, label_config=label_config, gold=gold, pool_texts=pool_texts, pool_task_ids=pool_ids,
                     skipped=skipped, source=dict(source or {}))


def from_project(client, project: int | str, *, max_chars: int = DEFAULT_MAX_CHARS) -> PlasmData:
    """Read a live project with an :class:`albackend.adapters.lsclient.LabelStudioClient`."""

    try:
        info = client.get_project(project)
    except LabelStudioError as exc:
        if exc.status == 404:
            raise SourceError(f"project {project} does not exist in Label Studio at {client.url}") from None
        raise SourceError(str(exc)) from None
    config = (info or {}).get("label_config") or ""
    try:
        tasks = list(client.iter_tasks(project))
    except LabelStudioError as exc:
        raise SourceError(f"cannot read the tasks of project {project}: {exc}") from None
    try:  # texts given as links are read like the backend reads them (albackend.services.textlinks)
        links = TextLinks(parse_label_config(config).value_key, LinkPolicy.of(Settings.from_env()), lambda: client)
        tasks = drop_skips(links.resolve(tasks))
    except ConfigError:
        pass  # from_tasks names the config problem
    return from_tasks(tasks, config, max_chars=max_chars,
                      source={"source": "project", "project": str(project), "url": client.url,
                              "title": (info or {}).get("title")})


def find_label_config(export: Path) -> Path | None:
    """A label config next to an export: ``<stem>.xml``, ``<stem>.label_config.xml`` or ``label_config.xml``."""
    export = Path(export)
    for candidate in (export.with_suffix(".xml"), export.parent / f"{export.stem}.label_config.xml",
                      export.parent / "label_config.xml"):
        if candidate.is_file():
            return candidate
    return None


def _read_label_config(label_config: str | Path | None, export: Path) -> tuple[str, str]:
    if label_config is None:
        found = find_label_config(export)
        if found is None:
            raise SourceError(f"no label config for {export}: pass --label-config FILE (or put "
                              f"{export.with_suffix('.xml').name} or label_config.xml next to the export)")
        label_config = found
    text = str(label_config)
    if text.lstrip().startswith("<"):
        return text, "inline"
    path = Path(text)
    if not path.is_file():
        raise SourceError(f"label config file not found: {path}")
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read label config {path}: {exc}") from None


def from_export(export: str | Path, label_config: str | Path | None = None, *,
                max_chars: int = DEFAULT_MAX_CHARS) -> PlasmData:
    """Read an LS JSON export (a list of tasks with ``data`` and ``annotations``).

    ``label_config`` is a file path or the XML itself; without it a sibling file is looked for
    (:func:`find_label_config`). JSON-MIN and CSV exports carry no annotation results and are refused.
    """
    export = Path(export)
    if not export.is_file():
        raise SourceError(f"export file not found: {export}")
    config, config_source = _read_label_config(label_config, export)
    try:
        tasks = json.loads(export.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read export {export}: {exc}") from None
    except ValueError as exc:
        raise SourceError(f"export {export} is not valid JSON: {exc}") from None
    if isinstance(tasks, dict) and isinstance(tasks.get("tasks"), list):
        tasks = tasks["tasks"]
    if not isinstance(tasks, list) or (tasks and not all(isinstance(t, dict) and "data" in t for t in tasks[:50])):
        raise SourceError(f"{export} is not a Label Studio JSON export (a list of tasks with 'data' and "
                          "'annotations'; JSON-MIN and CSV exports are not supported)")
    return from_tasks(tasks, config, max_chars=max_chars,
                      source={"source": "export", "export": str(export), "label_config": config_source})
