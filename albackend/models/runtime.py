"""Process-wide settings of the torch/transformers stack, applied once by each entry point, never at import.

transformers 5 prints a load report and progress bars for every from_pretrained/save_pretrained; in a server and
its job logs that noise hides the lines that matter. Tokenizers' own thread pool fights gunicorn's and RQ's forks.
Entry points (``_wsgi.py``, the RQ job functions, ``python -m plasm``, the bench drivers, the test session) call
:func:`configure_runtime`; a library import leaves the process as it found it.
"""
from __future__ import annotations

import os

from transformers.utils import logging as hf_logging


def configure_runtime() -> None:
    """Quiet transformers' logs and progress bars; no tokenizers thread pool unless the user asked for one."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
