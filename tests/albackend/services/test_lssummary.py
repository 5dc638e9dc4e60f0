"""albackend.services.lssummary: the PATCH body that carries the summary line, and failures that never fail the job.
Against a real Label Studio: tests/e2e/test_dashboard_e2e.py."""
from __future__ import annotations

import dataclasses

from albackend.adapters.lsclient import LabelStudioClient, ml_backend_fields
from albackend.services.lssummary import base_title, summary_patch, summary_round
from albackend.settings import Settings
from albackend.services.store import ModelStore
from tests.support.services import free_port

LINE = "it 2 · agreement 0.81 (n=50) · stop: not yet"


def test_an_earlier_summary_is_replaced_and_the_users_title_kept():
    record = {"id": 3, "url": "http://b:9090", "project": 7, "title": "my model · it 1 · agreement 0.5 · stop: not yet",
              "auth_method": "NONE", "model_version": "al-7-it1-20250101000000-abcdef"}
    assert base_title(record["title"]) == "my model" and base_title("my · model") == "my · model"
    assert summary_patch(record, LINE) == {"url": "http://b:9090", "project": 7, "title": f"my model · {LINE}",
                                           "description": LINE}
    assert summary_patch({**record, "title": ""}, LINE)["title"] == f"al-backend · {LINE}"


def test_basic_auth_records_repeat_the_user_and_keep_the_password():
    record = {"url": "http://b", "project": 1, "auth_method": "BASIC_AUTH", "basic_auth_user": "u"}
    assert ml_backend_fields(record) == {"url": "http://b", "project": 1, "auth_method": "BASIC_AUTH",
                                         "basic_auth_user": "u", "basic_auth_pass": ""}


def test_an_unreachable_label_studio_is_reported_not_raised(tmp_path):
    settings = dataclasses.replace(Settings.from_env(), model_dir=tmp_path)
    client = LabelStudioClient(f"http://127.0.0.1:{free_port()}", "token-123456")
    out = summary_round(settings, ModelStore(tmp_path), client, "4")
    assert out["line"] == "it – · agreement – · stop: not yet"
    assert "unreachable" in out["error"]
