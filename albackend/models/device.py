"""Device and precision choice: the GPU with bf16 autocast when present, else the CPU in fp32."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        raise RuntimeError("DEVICE=cuda but no CUDA device is available")
    return torch.device("cpu")


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
