"""``python -m plasm distil`` and its job (plasm.distil_job): text sources, the labeled split of the quality
report, a --sync run writing student and quality report, enqueueing on a real Redis for a real RQ worker, and
a one-line failure on an unreachable Redis (an unknown teacher: tests/plasm/test_job_cli.py).
"""
from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job

from albackend.models.acquisition import META_FILE
from plasm import cli
from plasm import distil_job as Q
from plasm.errors import SourceError
from tests.albackend.models.test_distil import TEXTS, teachers  # noqa: F401 - the teachers fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sources(tmp_path):
    (tmp_path / "t.txt").write_text("one\n\ntwo\nthree\n")
    (tmp_path / "e.json").write_text(json.dumps([{"id": 1, "data": {"body": "x y"}}, {"id": 2, "data": {"body": "z"}}]))
    (tmp_path / "c.csv").write_text("text,label\nalpha,a\nbeta,b\ngamma,a\n")
    texts, src, _ = Q.load_unlabeled({"text_file": str(tmp_path / "t.txt"), "seed": 1})
    assert sorted(texts) == ["one", "three", "two"] and "text file" in src
    texts, src, _ = Q.load_unlabeled({"export": str(tmp_path / "e.json")})
    assert sorted(texts) == ["x y", "z"] and "field body" in src
    texts, _, _ = Q.load_unlabeled({"csv": str(tmp_path / "c.csv"), "text_col": "text", "max_texts": 2})
    assert len(texts) == 2 and set(texts) <= {"alpha", "beta", "gamma"}
    with pytest.raises(SourceError, match="exactly one"):
        Q.load_unlabeled({"csv": "a", "text_file": "b"})
    rows = "text,label_name\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(300))
    (tmp_path / "l.csv").write_text(rows)
    data, _ = Q.labeled_split({"eval_csv": str(tmp_path / "l.csv"), "label_col": "label_name",
                               "eval_fraction": 0.01, "pool_size": 50, "seed": 0}, {})
    assert data.spec.labels == ("a", "b") and len(data.train) == 3 and len(data.pool) == len(data.pool_labels) == 50
    assert not {e.text for e in data.train} & set(data.pool)


def test_cli_sync_writes_student_and_quality(teachers, tmp_path, capsys):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\n" + "".join(f"\"{t}\",{t.split()[0]}\n" for t in TEXTS))
    args = ["distil", "--teacher", teachers["plain"], "--out", str(tmp_path / "st"), "--csv", str(csv_path),
            "--max-steps", "2", "--batch-size", "8", "--max-length", "16", "--sync",
            "--eval-csv", str(csv_path), "--eval-size", "10", "--pool-size", "20",
            "--unrelated", "none", "--eval-min-steps", "2", "--eval-epochs", "1",
            "--device", "cpu"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "LC Spearman student~teacher" in out and "speed-up" in out and "only hidden-state cos + MSE" in out
    quality = json.loads((tmp_path / "st" / "quality.json").read_text())
    assert -1 <= quality["spearman_lc"]["student~teacher"] <= 1 and quality["speed"]["speedup"] > 0
    assert quality["pair_wins"] is None and "unavailable" in quality["verdict"]
    assert json.loads((tmp_path / "st" / META_FILE).read_text())["quality"]["spearman_lc"]


@pytest.mark.redis
def test_enqueue_and_rq_job(redis_server, teachers, tmp_path, capsys, monkeypatch):
    (tmp_path / "t.txt").write_text("\n".join(TEXTS))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("RQ_QUEUE", "distil-test")
    args = ["distil", "--teacher", teachers["plain"], "--out", str(tmp_path / "st"), "--text-file",
            str(tmp_path / "t.txt"), "--max-steps", "2", "--max-length", "16", "--no-quality",
            "--device", "cpu"]
    assert cli.main(args) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id.startswith("distil-")
    conn = Redis.from_url(redis_server.url)
    SimpleWorker([Queue("distil-test", connection=conn)], connection=conn).work(burst=True)
    job = Job.fetch(job_id, connection=conn)
    assert job.get_status(refresh=True) == "finished", job.latest_result().exc_string
    assert job.return_value()["steps"] == 2 and job.get_meta()["progress"]["step"] == 2
    assert (tmp_path / "st" / "model.safetensors").exists()


def test_enqueue_reports_unreachable_redis(teachers, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    args = ["distil", "--teacher", teachers["plain"], "--out", str(tmp_path / "st"), "--text-file", "x"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach Redis at redis://127.0.0.1:1/0") and len(err.splitlines()) == 1
