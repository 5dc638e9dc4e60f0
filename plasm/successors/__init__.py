"""Successor models of any type: HF encoders and classical models trained from scratch.

- :class:`plasm.successors.hf.HFSuccessor`: any Hugging Face encoder (saved as an HF directory that
  ``transformers.pipeline`` loads);
- :class:`plasm.successors.cnn.CNNClassifierSuccessor`, :class:`plasm.successors.bilstm.BiLSTMTaggerSuccessor`:
  the paper's classical successors, trained from scratch.

:func:`load_successor` loads any of them from its directory. A saved HF directory's ``config.json`` names its
architecture (``"bert"``, ``"mpnet"``, ...), so the common encoder types are registered here and any other HF
directory is recognised by its files.
"""

from __future__ import annotations

from pathlib import Path

from .base import Successor, read_config, register_successor
from .base import load_successor as _load_registered
from .bilstm import BiLSTMTaggerSuccessor
from .cnn import CNNClassifierSuccessor
from .hf import HFSuccessor, is_hf_directory

# config.json "model_type" values of encoders a successor is likely to use (any other HF type still loads
# through load_successor below, which recognises HF directories by their files).
HF_MODEL_TYPES = ("hf", "bert", "mpnet", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2",
                  "albert", "camembert", "xlnet", "modernbert", "mobilebert", "funnel", "longformer", "ernie")
register_successor("cnn_classifier", CNNClassifierSuccessor)
register_successor("bilstm_tagger", BiLSTMTaggerSuccessor)
for _t in HF_MODEL_TYPES:
    register_successor(_t, HFSuccessor)

__all__ = ["Successor", "load_successor", "read_config", "register_successor", "HF_MODEL_TYPES"]


def load_successor(directory: str | Path, *, device=None) -> Successor:
    """Load any saved successor: registered ``model_type`` first, else any HF classifier directory."""
    try:
        return _load_registered(directory, device=device)
    except ValueError as exc:
        if "unknown successor model_type" not in str(exc):
            raise
        if not is_hf_directory(directory):
            raise
        return HFSuccessor.load(Path(directory), device=device)
