"""The RQ worker class the backend's workers run:
``rq worker --worker-class albackend.adapters.rqworker.PreloadedWorker``.

RQ forks a fresh work-horse per job. With the stock worker each horse imports the job functions itself (torch,
transformers, the backend: ~4-10 s on a 2-core CPU) before it can start training or scoring, and that is paid on
every retrain and every pool shard, on the path from Start Training to the first re-ranked task. Importing the job
module here, in the worker's main process, loads them once; every horse is forked with them already imported.
Importing torch starts no threads, so forking afterwards is safe.
"""
from __future__ import annotations

from rq.worker import Worker

import albackend.adapters.rqjobs  # noqa: F401  (the preload: the job functions and the torch stack they import)


class PreloadedWorker(Worker):
    """RQ's forking worker, run from a process that has already imported the backend's job functions."""
