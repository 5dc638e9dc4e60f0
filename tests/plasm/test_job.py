"""plasm.job.Reporter: the RQ timeout holds at every progress report, even where a library swallowed RQ's signal."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from rq import Queue
from rq.timeouts import JobTimeoutException

from plasm.job import Reporter


@pytest.mark.redis
def test_progress_raises_rq_timeout_once_the_job_time_is_up(redis_server, tmp_path):
    """CI once saw a job enqueued with a 2 s timeout finish: the alarm can land inside code that catches
    Exception. The reporter's own deadline makes the next progress report raise RQ's timeout instead."""
    job = Queue("reporter-test", connection=Redis.from_url(redis_server.url)).enqueue_call(
        "plasm.job.plasm_job", args=({},), timeout=1)
    reporter = Reporter("run-1", tmp_path / "run", job)
    reporter.progress("teacher", 0.1, {"step": 1})  # inside the limit: no error
    assert job.get_meta(refresh=True)["stage"] == "teacher"
    time.sleep(1.1)
    with pytest.raises(JobTimeoutException, match="1 seconds"):
        reporter.progress("teacher", 0.2, {"step": 2})


def test_no_deadline_outside_rq(tmp_path):
    """`plasm run --sync` has no RQ job, hence no time limit."""
    reporter = Reporter("run-1", tmp_path / "run", None)
    assert reporter.deadline is None
    reporter.progress("teacher", 0.5, {})
    assert reporter.state["stage"] == "teacher"
