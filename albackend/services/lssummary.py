"""The one-line summary where Label Studio users look: "it 6 · agreement 0.84 (n=50) · stop: not yet".

Label Studio 1.23's model settings show each ML backend as a card with its state, *title* and URL; the record's
``description`` is stored but shown nowhere in the UI. So after each retrain the backend writes the line into the
description (for API users) and appends it to the title after its own marker (" · it "), keeping whatever the
user named the backend before it; an older summary is replaced, not stacked. LS renames ``project.model_version``
along with the title when the project still points at it, so predictions stay attached.

Which records are this backend's: those of the project whose ``model_version`` (what our /setup answered) is
one of this backend's versions (`publish.own_version_key`); another backend connected to the same project is
left alone. Housekeeping after the publish: a failure is logged and shown in the job's stats, never a failed job.
"""
from __future__ import annotations

import logging

from albackend.services.insights import project_figures, summary_line
from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError, ml_backend_fields
from albackend.services.publish import own_version_key
from albackend.settings import Settings
from albackend.services.store import ModelStore

log = logging.getLogger(__name__)
MARKER = " · it "


def base_title(title: str) -> str:
    """The title without an earlier summary of ours."""
    return title.split(MARKER, 1)[0]


def summary_patch(record: dict, line: str) -> dict:
    """The PATCH body that puts ``line`` into one ML backend record (title suffix and description)."""
    base = base_title(str(record.get("title") or "")).strip() or "al-backend"
    return {**ml_backend_fields(record), "title": f"{base} · {line}", "description": line}


def publish_summary(client: LabelStudioClient, project: str, line: str) -> dict:
    """Write ``line`` into every ML backend record of the project that is this backend's."""
    updated = []
    for record in client.ml_backends(project):
        if own_version_key(project, str(record.get("model_version") or "")) is None:
            continue
        client.update_ml_backend(record["id"], summary_patch(record, line))
        updated.append(record["id"])
    return {"line": line, "ml_backends": updated}


def summary_round(settings: Settings, store: ModelStore, client: LabelStudioClient, project: str) -> dict:
    """The training job's last step: the summary of the version it just published, into Label Studio."""
    line = summary_line(project_figures(settings, store, project))
    try:
        out = publish_summary(client, project, line)
    except LabelStudioError as exc:
        log.warning("project %s: summary not written to Label Studio: %s", project, exc)
        return {"line": line, "error": str(exc)}
    log.info("project %s: Label Studio summary %r on ML backend(s) %s", project, line, out["ml_backends"])
    return out
