"""The product's RQ worker class: a forking rq Worker whose process has the job functions (and torch) imported
before the first job, so a forked work-horse does not import them again per job."""
from __future__ import annotations

import subprocess
import sys

from rq.worker import Worker

from albackend.adapters.rqworker import PreloadedWorker


def test_is_rqs_forking_worker() -> None:
    assert issubclass(PreloadedWorker, Worker)


def test_importing_the_worker_class_preloads_the_job_stack() -> None:
    code = ("import sys; import albackend.adapters.rqworker; "
            "print(all(m in sys.modules for m in ('torch', 'transformers', 'albackend.adapters.rqjobs', "
            "'albackend.services.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "True"
