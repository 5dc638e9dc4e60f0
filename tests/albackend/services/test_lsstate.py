"""albackend.services.lsstate: the ``Training:`` line, how it replaces only its own line, which ML backend records are this
backend's, and the reporter writing through the real client over HTTP (a stdlib server playing LS's /api/ml).
Against a real Label Studio: tests/e2e/test_ls_first_run.py."""
from __future__ import annotations

import calendar
import time

from albackend.adapters.lsclient import LabelStudioClient
from albackend.services.lsstate import StateReporter, own_records, show, state_line, with_line
from tests.support.fakes import _Server

T0 = calendar.timegm((2026, 1, 2, 10, 4, 0))
CURRENT = {"model_version": "al-3-it1-20260102100400-abcdef", "iteration": 1, "gold": 40}


def test_state_lines():
    running = {"state": "running", "started_at": T0, "progress": {"phase": "publishing", "scored": 256,
                                                                   "to_score": 1200, "pushed": 256}}
    assert state_line(running, None) == ("Training: running since 10:04 UTC: publishing, 256 of 1200 tasks "
                                         "scored, 256 pushed")
    assert state_line({"state": "running", "started_at": T0}, None) == "Training: running since 10:04 UTC: starting"
    assert state_line({"state": "finished", "finished_at": T0}, CURRENT) == (
        "Training: finished 2026-01-02 10:04 UTC: model al-3-it1-20260102100400-abcdef (iteration 1, 40 gold) "
        "is current")
    failed = {"state": "failed", "finished_at": T0, "reason": "TrainingSkipped: only 1 class annotated\n(Sports)"}
    assert state_line(failed, None) == ("Training: failed 2026-01-02 10:04 UTC: TrainingSkipped: only 1 class "
                                        "annotated (Sports); no model yet")
    assert state_line({**failed, "reason": "x" * 5000}, None).count("x") == 400
    assert state_line({"state": "queued"}, None) is None


def test_with_line_keeps_every_other_line():
    assert with_line(None, "Training: a") == "Training: a"
    assert with_line("", "Training: a") == "Training: a"
    assert with_line("my model\nTraining: old\nSummary: 3 iterations", "Training: new") == \
        "my model\nSummary: 3 iterations\nTraining: new"


def test_own_records_are_the_ones_reporting_this_backends_versions():
    records = [{"id": 1, "model_version": "untrained-3"}, {"id": 2, "model_version": "al-3-it0-20260101-aaaaaa"},
               {"id": 3, "model_version": "other-model-v2"}, {"id": 4, "model_version": "al-30-it0-2026-bbbbbb"},
               {"id": 5, "model_version": None}, {"model_version": "untrained-3"}]
    assert [r["id"] for r in own_records(records, "3")] == [1, 2]


class MLRecords(_Server):
    """GET /api/ml?project=3 lists two records (one ours); PATCH /api/ml/<id> stores the body like LS does."""

    def __init__(self, clobber: int = 0):
        super().__init__()
        self.clobber = clobber  # this many reads of one record put its old description back (LS's read-save race)
        self.records = {1: {"id": 1, "project": 3, "url": "http://backend:9090", "model_version": "untrained-3",
                            "description": "our card", "auth_method": "BASIC_AUTH", "basic_auth_user": "al"},
                        2: {"id": 2, "project": 3, "url": "http://other:9090", "model_version": "other-v1",
                            "description": "", "auth_method": "NONE"}}
        self.start()

    def handle(self, h, rec):
        if rec["method"] == "GET" and rec["path"].startswith("/api/ml?project=3"):
            return h.reply(list(self.records.values()))
        if rec["method"] == "GET" and rec["path"].startswith("/api/ml/"):
            record = self.records[int(rec["path"].rsplit("/", 1)[1])]
            if self.clobber > 0:
                self.clobber -= 1
                record["description"] = record.pop("previous", record["description"])
            return h.reply(record)
        if rec["method"] == "PATCH" and rec["path"].startswith("/api/ml/"):
            ml_id = int(rec["path"].rsplit("/", 1)[1])
            body = rec["body"]
            if "url" not in body or "project" not in body:  # what LS 1.23 does
                return h.reply({"detail": "MLBackend.healthcheck_() missing 1 required positional argument"}, 500)
            self.records[ml_id]["previous"] = self.records[ml_id]["description"]
            self.records[ml_id].update({k: v for k, v in body.items() if k != "basic_auth_pass"})
            return h.reply(self.records[ml_id])
        return h.reply({"detail": "not found"}, 404)


def test_show_writes_only_this_backends_record_with_what_ls_needs():
    ls = MLRecords()
    try:
        client = LabelStudioClient(ls.url, "legacy-token")
        assert show(client, "3", "Training: failed: TrainingSkipped: only 1 class") == 1
        assert ls.records[1]["description"] == "our card\nTraining: failed: TrainingSkipped: only 1 class"
        assert ls.records[2]["description"] == ""
        patch = ls.seen("PATCH")[0]["body"]
        assert patch == {"url": "http://backend:9090", "project": 3, "auth_method": "BASIC_AUTH",
                         "basic_auth_user": "al", "basic_auth_pass": "",  # LS keeps its stored password
                         "description": "our card\nTraining: failed: TrainingSkipped: only 1 class"}
        # the same line again: nothing to write
        show(client, "3", "Training: failed: TrainingSkipped: only 1 class")
        assert len(ls.seen("PATCH")) == 1
        # without the record at hand the client reads it first
        client.update_ml_backend(2, {"title": "renamed"})
        assert ls.records[2]["title"] == "renamed" and ls.seen("GET", "/api/ml/2")
    finally:
        ls.stop()


def test_a_description_put_back_by_a_concurrent_read_is_written_again(monkeypatch):
    monkeypatch.setattr("albackend.services.lsstate.RETRY_S", 0.01)
    ls = MLRecords(clobber=1)
    try:
        assert show(LabelStudioClient(ls.url, "legacy-token"), "3", "Training: finished") == 1
        assert ls.records[1]["description"] == "our card\nTraining: finished" and len(ls.seen("PATCH")) == 2
    finally:
        ls.stop()


def test_reporter_writes_once_per_state_and_phase_and_never_fails_the_job():
    ls = MLRecords()
    try:
        report = StateReporter(True, "3", lambda: LabelStudioClient(ls.url, "legacy-token"))
        record = {"state": "running", "started_at": T0, "progress": {"phase": "training"}}
        report(record, None)
        report(record, None)
        record["progress"] = {"phase": "publishing", "scored": 5, "to_score": 10, "pushed": 5}
        report(record, None)
        record["progress"]["scored"] = 10
        report(record, None)  # same phase: LS is not asked again
        report({**record, "state": "finished", "finished_at": T0}, CURRENT)
        report.close()
        assert len(ls.seen("GET", "/api/ml?")) == 3
        assert ls.records[1]["description"].endswith("(iteration 1, 40 gold) is current")
    finally:
        ls.stop()
    unreachable = StateReporter(True, "3", lambda: LabelStudioClient(ls.url, "legacy-token"))
    unreachable({"state": "failed", "finished_at": T0, "reason": "x"}, None)  # logged, not raised
    unreachable.close()
    disabled = StateReporter(False, "3", lambda: 1 / 0)
    disabled({"state": "running"}, None)
    disabled.close()
    assert disabled._last is None and unreachable._last.exception() is None


def test_the_job_does_not_wait_for_label_studio(monkeypatch):
    """A slow Label Studio delays only the reporter's own thread; close() bounds the wait at the job's end."""
    from tests.support.fakes import SlowHTTPServer

    slow = SlowHTTPServer(delay=3.0, status=200, body=[]).start()
    try:
        report = StateReporter(True, "3", lambda: LabelStudioClient(slow.url, "legacy-token"))
        t0 = time.perf_counter()
        report({"state": "running", "started_at": T0, "progress": {"phase": "training"}}, None)
        report({"state": "running", "started_at": T0, "progress": {"phase": "publishing"}}, None)
        assert time.perf_counter() - t0 < 0.5
        report.close(timeout=0.2)
        assert time.perf_counter() - t0 < 1.5
    finally:
        slow.stop()
