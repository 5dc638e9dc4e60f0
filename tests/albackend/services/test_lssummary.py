"""albackend.services.lssummary: the title and description that carry the summary line, and failures that never fail
the job. Against a real Label Studio: tests/e2e/test_dashboard_e2e.py."""
from __future__ import annotations

import dataclasses

from albackend.adapters.lsclient import LabelStudioClient
from albackend.services.lssummary import base_title, summary_fields, summary_round
from albackend.services.store import ModelStore
from albackend.settings import Settings
from tests.support.services import free_port

LINE = "it 2 · agreement 0.81 (n=50) · stop: not yet"


def test_an_earlier_summary_is_replaced_and_the_users_title_and_lines_kept():
    record = {"id": 3, "url": "http://b:9090", "project": 7, "title": "my model · it 1 · agreement 0.5 · stop: not yet",
              "description": "notes\nSummary: it 1 · agreement 0.5\nTraining: finished", "model_version": "x"}
    assert base_title(record["title"]) == "my model" and base_title("my · model") == "my · model"
    assert summary_fields(record, LINE) == {"title": f"my model · {LINE}",
                                            "description": f"notes\nTraining: finished\nSummary: {LINE}"}
    assert summary_fields({**record, "title": "", "description": None}, LINE) == {
        "title": f"al-backend · {LINE}", "description": f"Summary: {LINE}"}


def test_an_unreachable_label_studio_is_reported_not_raised(tmp_path):
    settings = dataclasses.replace(Settings.from_env(), model_dir=tmp_path)
    client = LabelStudioClient(f"http://127.0.0.1:{free_port()}", "token-123456")
    out = summary_round(settings, ModelStore(tmp_path), client, "4")
    assert out["line"] == "it – · agreement – · stop: not yet"
    assert "unreachable" in out["error"]
