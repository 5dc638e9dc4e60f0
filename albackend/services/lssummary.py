"""The one-line summary where Label Studio users look: "it 6 · agreement 0.84 (n=50) · stop: not yet".

Label Studio 1.23's model settings show each ML backend as a card with its state, *title* and URL; the record's
``description`` is stored but shown nowhere in its UI. So after each retrain the backend appends the line to the
title after its own marker (" · it "), keeping whatever the user named the backend before it (an older summary is
replaced, not stacked), and writes it as the ``Summary:`` line of the description for API users, next to the
``Training:`` line of `albackend.services.lsstate` (which owns the records' writing: which records are this
backend's, the PATCH read back against LS's concurrent saves). LS renames ``project.model_version`` along with
the title when the project still points at it, so predictions stay attached. Housekeeping after the publish: a
failure is logged and shown in the job's stats, never a failed job.
"""
from __future__ import annotations

import logging

from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError
from albackend.services.insights import project_figures, summary_line
from albackend.services.lsstate import with_line, write_records
from albackend.services.store import ModelStore
from albackend.settings import Settings

log = logging.getLogger(__name__)
MARKER = " · it "
PREFIX = "Summary: "


def base_title(title: str) -> str:
    """The title without an earlier summary of ours."""
    return title.split(MARKER, 1)[0]


def summary_fields(record: dict, line: str) -> dict:
    """The title and description that carry ``line`` on one ML backend record."""
    base = base_title(str(record.get("title") or "")).strip() or "al-backend"
    return {"title": f"{base} · {line}", "description": with_line(record.get("description"), PREFIX + line, PREFIX)}


def summary_round(settings: Settings, store: ModelStore, client: LabelStudioClient, project: str) -> dict:
    """The training job's last step: the summary of the version it just published, into Label Studio."""
    line = summary_line(project_figures(settings, store, project))
    try:
        updated = write_records(client, project, lambda record: summary_fields(record, line))
    except LabelStudioError as exc:
        log.warning("project %s: summary not written to Label Studio: %s", project, exc)
        return {"line": line, "error": str(exc)}
    log.info("project %s: Label Studio summary %r on %d ML backend record(s)", project, line, updated)
    return {"line": line, "ml_backends": updated}
