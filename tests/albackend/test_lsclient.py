"""The Label Studio client over real HTTP (a stdlib server on 127.0.0.1 playing LS's answers): retries of LS's
transient 500s, personal-access-token refresh, byte accounting."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from albackend import lsclient
from albackend.lsclient import LabelStudioClient, LabelStudioError, is_personal_access_token

PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"


class LS:
    """Answers GET /api/projects/1 with ``plan`` statuses in turn; /api/token/refresh/ hands out access tokens."""

    def __init__(self, plan: list[int], valid_access: set[str] | None = None):
        self.plan, self.valid_access, self.seen, self.issued = list(plan), valid_access, [], 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/token/refresh/" and body.get("refresh") == PAT:
                    outer.issued += 1
                    token = f"access-{outer.issued}"
                    outer.valid_access = {token}
                    return self._reply(200, {"access": token})
                return self._reply(401, {"detail": "bad refresh token"})

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                outer.seen.append(auth)
                if outer.valid_access is not None and auth.removeprefix("Bearer ") not in outer.valid_access:
                    return self._reply(401, {"detail": "Token is expired"})
                status = outer.plan.pop(0) if outer.plan else 200
                return self._reply(status, {"id": 1, "status": status})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(lsclient, "RETRY_PAUSES_S", (0.01, 0.01, 0.01))


def test_transient_500s_are_retried():
    ls = LS([500, 503, 200])
    try:
        client = LabelStudioClient(ls.url, "legacy-token")
        assert client.get_project(1)["status"] == 200
        assert len(ls.seen) == 3 and client.bytes_received > 0
    finally:
        ls.close()


def test_a_persistent_500_fails_clearly():
    ls = LS([500] * 10)
    try:
        with pytest.raises(LabelStudioError, match="answered 500"):
            LabelStudioClient(ls.url, "legacy-token").get_project(1)
        assert len(ls.seen) == 4
    finally:
        ls.close()


def test_personal_access_token_is_exchanged_and_refreshed():
    assert is_personal_access_token(PAT) and not is_personal_access_token("0123456789abcdef")
    ls = LS([], valid_access=set())
    try:
        client = LabelStudioClient(ls.url, PAT)
        assert client.get_project(1)["id"] == 1
        assert ls.seen[-1] == "Bearer access-1"
        ls.valid_access = {"something-else"}  # the access token expired
        assert client.get_project(1)["id"] == 1
        assert ls.seen[-2:] == ["Bearer access-1", "Bearer access-2"]
        assert PAT not in "".join(ls.seen)  # the refresh token itself is never sent as a credential
    finally:
        ls.close()


def test_a_refused_personal_access_token_fails_clearly():
    ls = LS([], valid_access=set())
    try:
        with pytest.raises(LabelStudioError, match="personal access token"):
            LabelStudioClient(ls.url, PAT[:-2] + "xx").get_project(1)
    finally:
        ls.close()
