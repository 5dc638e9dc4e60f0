"""The Label Studio client over real HTTP (a stdlib server on 127.0.0.1 playing LS's answers): retries of LS's
transient 500s, personal-access-token refresh, byte accounting."""
from __future__ import annotations

import pytest

from albackend.adapters import lsclient
from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError, is_personal_access_token
from tests.support.fakes import _Server

PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"


class LS(_Server):
    """Answers GET /api/projects/1 with ``plan`` statuses in turn; /api/token/refresh/ hands out access tokens."""

    def __init__(self, plan: list[int], valid_access: set[str] | None = None):
        super().__init__()
        self.plan, self.valid_access, self.seen_auth, self.issued = list(plan), valid_access, [], 0
        self.start()

    def handle(self, h, rec):
        if rec["method"] == "POST":
            if rec["path"] == "/api/token/refresh/" and (rec["body"] or {}).get("refresh") == PAT:
                self.issued += 1
                self.valid_access = {f"access-{self.issued}"}
                return h.reply({"access": f"access-{self.issued}"})
            return h.reply({"detail": "bad refresh token"}, 401)
        auth = rec["headers"].get("Authorization", "")
        self.seen_auth.append(auth)
        if self.valid_access is not None and auth.removeprefix("Bearer ") not in self.valid_access:
            return h.reply({"detail": "Token is expired"}, 401)
        status = self.plan.pop(0) if self.plan else 200
        return h.reply({"id": 1, "status": status}, status)

    def close(self) -> None:
        self.stop()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(lsclient, "RETRY_PAUSES_S", (0.01, 0.01, 0.01))


def test_transient_500s_are_retried():
    ls = LS([500, 503, 200])
    try:
        client = LabelStudioClient(ls.url, "legacy-token")
        assert client.get_project(1)["status"] == 200
        assert len(ls.seen_auth) == 3 and client.bytes_received > 0
    finally:
        ls.close()


def test_a_persistent_500_fails_clearly():
    ls = LS([500] * 10)
    try:
        with pytest.raises(LabelStudioError, match="answered 500"):
            LabelStudioClient(ls.url, "legacy-token").get_project(1)
        assert len(ls.seen_auth) == 4
    finally:
        ls.close()


def test_personal_access_token_is_exchanged_and_refreshed():
    assert is_personal_access_token(PAT) and not is_personal_access_token("0123456789abcdef")
    ls = LS([], valid_access=set())
    try:
        client = LabelStudioClient(ls.url, PAT)
        assert client.get_project(1)["id"] == 1
        assert ls.seen_auth[-1] == "Bearer access-1"
        ls.valid_access = {"something-else"}  # the access token expired
        assert client.get_project(1)["id"] == 1
        assert ls.seen_auth[-2:] == ["Bearer access-1", "Bearer access-2"]
        assert PAT not in "".join(ls.seen_auth)  # the refresh token itself is never sent as a credential
    finally:
        ls.close()


def test_a_refused_personal_access_token_fails_clearly():
    ls = LS([], valid_access=set())
    try:
        with pytest.raises(LabelStudioError, match="personal access token"):
            LabelStudioClient(ls.url, PAT[:-2] + "xx").get_project(1)
    finally:
        ls.close()
