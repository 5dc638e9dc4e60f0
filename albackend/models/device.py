"""Device, precision and seeding: the GPU with bf16 autocast when present (and supported), else the CPU in fp32.

The one place every model of the project (acquisition model, distilled student, PLASM teacher and successors)
picks its device and seeds its random generators, so they all behave alike.
"""
from __future__ import annotations

import contextlib
import random
from typing import ContextManager

import numpy as np
import torch


def pick_device(preference: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None: CUDA when available, else CPU; ``cpu``; ``cuda`` or ``cuda:N`` (an error without a GPU)."""
    if isinstance(preference, torch.device):
        return preference
    preference = (preference or "auto").strip().lower()
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {preference!r} asked for, but no CUDA device is available")
        return torch.device(preference)
    raise ValueError(f"unknown device {preference!r}: auto, cpu, cuda or cuda:N")


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA devices that support it (no loss scaling needed); a no-op elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_active(device: torch.device) -> bool:
    """Whether :func:`autocast` runs this device in bf16 (for reports)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (all devices) generators from one seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
