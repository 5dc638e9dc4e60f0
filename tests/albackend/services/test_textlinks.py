"""albackend.services.textlinks over real HTTP: a stdlib server playing Label Studio (token required, /data/upload files,
the storage resolver redirecting to a presigned URL) and another one playing a storage host. Against a real Label
Studio: tests/e2e/test_ls_first_run.py."""
from __future__ import annotations

import base64

import pytest

from albackend.domain.examples import Skip
from albackend.adapters.lsclient import LabelStudioClient, LabelStudioError
from albackend.services.textlinks import LinkPolicy, TextLinks, link_kind
from tests.support.fakes import FileServer as Host
from tests.support.services import free_port

TOKEN = "legacy-token-abcdef"
TEXT = "The striker scored twice in the final."


def resolver(ls: Host, hosts: str = "", max_kb: float = 64, cache=None) -> TextLinks:
    return TextLinks("text", LinkPolicy.parse(hosts, max_kb, 5), lambda: LabelStudioClient(ls.url, TOKEN), cache)


def task(tid: int, text: str) -> dict:
    return {"id": tid, "data": {"text": text, "other": 1}}


@pytest.mark.parametrize("value, kind", [
    ("http://ls:8080/data/upload/1/a.txt", "url"), ("HTTPS://example.org/x", "url"), ("/data/upload/3/f.txt", "ls"),
    ("/data/local-files/?d=texts/a.txt", "ls"), ("/tasks/7/resolve/?fileuri=czM6Ly9i", "ls"),
    ("s3://bucket/key.txt", "cloud"), ("gs://b/k", "cloud"), ("azure-blob://c/k", "cloud"),
    ("  /data/upload/3/f.txt\n", "ls"), ("see http://example.org", None), ("/data/other", None),
    ("plain text", None), ("", None), (None, None), (42, None), ("ftp://x/y", None)])
def test_link_kind(value, kind):
    assert link_kind(value) == kind


def test_ls_links_are_read_with_the_token_and_other_hosts_only_when_allowed():
    other = Host({"/doc.txt": (200, "Elsewhere text".encode(), {})})
    ls = Host({"/data/upload/1/a.txt": (200, ("\ufeff" + TEXT).encode(), {})}, token=TOKEN)
    try:
        plain = task(5, "just text")
        tasks = [task(1, "/data/upload/1/a.txt"), task(2, f"{ls.url}/data/upload/1/a.txt"), plain,
                 task(3, f"{other.url}/doc.txt")]
        links = resolver(ls)
        out = links.resolve(tasks)
        assert out[0]["data"] == {"text": TEXT, "other": 1} and out[1]["data"]["text"] == TEXT  # BOM dropped
        assert out[2] is plain and tasks[0]["data"]["text"] == "/data/upload/1/a.txt"  # inputs untouched
        assert isinstance(out[3], Skip) and out[3].task_id == 3
        assert "is neither Label Studio's (LABEL_STUDIO_URL) nor listed in TEXT_URL_HOSTS" in out[3].reason
        assert not other.requests
        allowed = resolver(ls, hosts=f"127.0.0.1:{other.port}").resolve([tasks[3]])
        assert allowed[0]["data"]["text"] == "Elsewhere text"
        assert "Authorization" not in other.requests[0]["headers"]  # the token never leaves Label Studio
        assert links.figures == {"links": 3, "fetched": 2, "cached": 0, "skipped": 1, "bytes": 2 * len(TEXT) + 6}
    finally:
        other.stop()
        ls.stop()


def test_cloud_uris_go_through_the_ls_resolver_and_its_redirect_under_the_host_rule():
    fileuri = base64.urlsafe_b64encode(b"s3://bucket/key.txt").decode()
    bucket = Host({"/key.txt?X-Amz-Signature=secret": (200, b"From the bucket", {})})
    presigned = f"{bucket.url}/key.txt?X-Amz-Signature=secret"
    ls = Host({f"/tasks/9/resolve/?fileuri={fileuri}": (303, b"", {"Location": presigned})}, token=TOKEN)
    try:
        denied = resolver(ls).resolve([task(9, "s3://bucket/key.txt")])[0]
        assert isinstance(denied, Skip) and "TEXT_URL_HOSTS" in denied.reason and "secret" not in denied.reason
        ok = resolver(ls, hosts=f"127.0.0.1:{bucket.port}").resolve([task(9, "s3://bucket/key.txt")])[0]
        assert ok["data"]["text"] == "From the bucket"
        assert "Authorization" not in bucket.requests[-1]["headers"]
        no_id = resolver(ls).resolve([{"data": {"text": "gs://b/k.txt"}}])[0]
        assert isinstance(no_id, Skip) and "needs the task id" in no_id.reason
        missing = resolver(ls).resolve([task(10, "s3://bucket/other.txt")])[0]  # LS: no storage for it -> 404
        assert isinstance(missing, Skip) and "answered 404" in missing.reason
    finally:
        bucket.stop()
        ls.stop()


def test_bad_links_are_skips_with_their_reason():
    dead = f"http://127.0.0.1:{free_port()}"
    ls = Host({"/data/upload/1/big.txt": (200, b"x" * 3000, {}), "/data/upload/1/img.png": (200, b"\x89PNG\x00\x01", {}),
               "/data/upload/1/loop.txt": (302, b"", {"Location": "/data/upload/1/loop.txt"})}, token=TOKEN)
    try:
        links = TextLinks("text", LinkPolicy.parse("127.0.0.1", 1, 2), lambda: LabelStudioClient(ls.url, TOKEN))
        out = links.resolve([task(1, "/data/upload/1/big.txt"), task(2, "/data/upload/1/img.png"),
                             task(3, "/data/upload/1/gone.txt"), task(4, "/data/upload/1/loop.txt")]
                            + [task(10 + i, f"{dead}/f{i}.txt") for i in range(12)])
        reasons = [s.reason for s in out]
        assert "too large: 3000 bytes, over the 1024-byte limit (TEXT_URL_MAX_KB)" in reasons[0]
        assert "not text" in reasons[1] and "answered 404" in reasons[2] and "more than 3 redirects" in reasons[3]
        assert all("unreachable" in r for r in reasons[4:])
        assert sum("not asked again" in r for r in reasons[4:]) >= 1  # given up after 3 failures (8 run at once)
        wrong = TextLinks("text", LinkPolicy.parse("", 64, 2), lambda: LabelStudioClient(ls.url, "wrong-token-1"))
        assert "answered 401" in wrong.resolve([task(1, "/data/upload/1/big.txt")])[0].reason
        nowhere = TextLinks("text", LinkPolicy.parse("", 64, 2), _no_ls)
        assert "no Label Studio connection" in nowhere.resolve([task(1, "/data/upload/1/a.txt")])[0].reason
    finally:
        ls.stop()


def _no_ls() -> LabelStudioClient:
    raise LabelStudioError("no Label Studio URL: set LABEL_STUDIO_URL")


def test_fetched_texts_and_recent_failures_are_cached_per_project(tmp_path):
    ls = Host({"/data/upload/1/a.txt": (200, TEXT.encode(), {})}, token=TOKEN)
    try:
        cache = tmp_path / "texts.sqlite"
        first = resolver(ls, cache=cache)
        first.resolve([task(1, "/data/upload/1/a.txt"), task(2, "/data/upload/1/b.txt")])
        assert first.figures["fetched"] == 1 and first.figures["skipped"] == 1
        again = resolver(ls, cache=cache)
        out = again.resolve([task(1, "/data/upload/1/a.txt"), task(2, "/data/upload/1/b.txt")])
        assert out[0]["data"]["text"] == TEXT and isinstance(out[1], Skip) and "404" in out[1].reason
        assert again.figures["fetched"] == 0 and again.figures["cached"] == 2 and len(ls.requests) == 2
        short = TextLinks("text", LinkPolicy.parse("", 64, 2), lambda: LabelStudioClient(ls.url, TOKEN), cache,
                          max_chars=10)  # MAX_TEXT_CHARS: the cache keeps the whole text, the task gets the cut
        assert short.resolve([task(1, "/data/upload/1/a.txt")])[0]["data"]["text"] == TEXT[:10]
    finally:
        ls.stop()
