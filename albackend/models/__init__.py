"""torch/transformers layer: model loading, training, scoring.

transformers 5 prints a load report and progress bars for every from_pretrained/save_pretrained; in a
server and its job logs that noise hides the lines that matter, so it is turned down here once.
"""
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.set_verbosity_error()
_hf_logging.disable_progress_bar()
