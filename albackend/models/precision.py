"""Scoring precision: which module scores texts on the CPU, the trained fp32 model or an int8 copy of it.

Pool scoring and /predict are matmul-bound on the CPU (fp32 reaches ~86% of the machine's matmul peak, see
docs/results.md), so the remaining lever is cheaper arithmetic: torch's dynamic int8 quantization of the
encoder's Linear layers (int8 weights per tensor, activations quantized per batch on the fly; fbgemm / oneDNN
VNNI kernels). The int8 copy is *derived* from the fp32 model when it is first needed and cached per loaded
model and weight version: it is never saved, training always runs on the fp32 weights, and a retrain (which
updates the weights in place) invalidates the copy.

The classifier head stays fp32: its input is the embedding Mahalanobis reads (a forward hook on that Linear),
and it is tiny. Token classification works the same way. On CUDA the fp32 model runs under bf16 autocast as
before: quantized kernels are a CPU path only.

``auto`` picks, per task kind, the variant that kept the uncertainty ranking in the benchmark
(bench/quantized_scoring.py: Spearman >= 0.99 of least-confident uncertainty against fp32, >= 95% overlap of the
top-10% most uncertain, >= 1.8x fp32 tokens/s); today that is fp32 everywhere (int8 is opt-in).

int8 activations are quantized with one scale per batch, so a text's int8 score depends slightly on the other
texts of its (length-sorted) batch; fp32 scores do not.
"""
from __future__ import annotations

import copy
import logging
import threading
import warnings

import torch

from albackend.models.infer import classifier_linear
from albackend.settings import SCORING_PRECISIONS, parse_scoring_precision

log = logging.getLogger(__name__)

# What `auto` means on a CPU, per TaskSpec.kind. Measured on AG News with MiniLM-L6 (docs/results.md,
# "CPU scoring: int8 / ONNX"): int8 was 2.1-2.6x faster but kept the ranking less well than required
# (Spearman 0.977 < 0.99, top-10% overlap 0.72 < 0.95), so every kind stays fp32 until a variant passes.
AUTO_CPU: dict[str, str] = {"classification": "fp32", "multi_label": "fp32", "tagging": "fp32"}

__all__ = ["AUTO_CPU", "SCORING_PRECISIONS", "ScoringPrecision", "parse_scoring_precision", "quantize_int8",
           "resolve_precision"]


def resolve_precision(requested: str, device: torch.device, kind: str) -> tuple[str, str]:
    """(effective precision, why) for a requested setting on a device: "fp32" (bf16 autocast on CUDA) or "int8"."""
    requested = parse_scoring_precision(requested)
    if device.type != "cpu":
        why = "quantized scoring is CPU-only; the GPU uses bf16 autocast" if requested == "int8" else "GPU"
        return "fp32", why
    if requested == "auto":
        chosen = AUTO_CPU.get(kind, "fp32")
        return chosen, f"auto for {kind} on CPU"
    return requested, "setting"


def _weight_stamp(model: torch.nn.Module) -> tuple[int, int]:
    """Changes whenever a parameter is modified in place (optimizer steps, load_state_dict) or replaced."""
    params = list(model.parameters())
    return sum(p._version for p in params), hash(tuple(id(p) for p in params))


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode int8 copy of `model`: every Linear but the classifier head dynamically quantized.

    Parameters that are not quantized (embeddings, LayerNorms, the head) are shared with the fp32 model, not
    copied, so the copy costs only its int8 weights (~1/4 of the Linear weights' fp32 size)."""
    head = classifier_linear(model)
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    if not names:
        raise ValueError("the model has no Linear layers to quantize")
    quantized = {id(p) for n, m in model.named_modules() if n in names for p in m.parameters()}
    memo = {id(p): p for p in model.parameters() if id(p) not in quantized}
    memo.update({id(b): b for b in model.buffers()})
    clone = copy.deepcopy(model, memo).eval()
    with warnings.catch_warnings():  # torch >= 2.10 points eager quantization users to torchao; it still works
        warnings.simplefilter("ignore")
        qmodel = torch.ao.quantization.quantize_dynamic(clone, names, dtype=torch.qint8, inplace=True)
    _smoke_forward(qmodel)
    return qmodel


@torch.inference_mode()
def _smoke_forward(model: torch.nn.Module) -> None:
    """Fail at derivation, not mid-pool, where the quantized engine cannot run on this CPU."""
    ids = torch.tensor([[1, 2, 3, 4]], dtype=torch.long)
    model(input_ids=ids, attention_mask=torch.ones_like(ids))


class ScoringPrecision:
    """The requested precision of one loaded model plus its cached derived module (thread-safe)."""

    def __init__(self, requested: str = "fp32"):
        self.requested = parse_scoring_precision(requested)
        self._lock = threading.Lock()
        self._cache: tuple[int, tuple[int, int], torch.nn.Module] | None = None
        self._failed: tuple[int, tuple[int, int], str] | None = None
        self._told = False  # the "int8 ignored on this device" notice is logged once

    def module(self, model: torch.nn.Module, device: torch.device, kind: str) -> tuple[torch.nn.Module, str]:
        """(module to score with, effective precision). Falls back to fp32, logging why, if int8 fails."""
        precision, why = resolve_precision(self.requested, device, kind)
        if precision == "fp32":
            if self.requested == "int8" and not self._told:
                log.info("SCORING_PRECISION=int8 ignored: %s", why)
                self._told = True
            return model, "fp32"
        key = (id(model), _weight_stamp(model))
        with self._lock:
            if self._cache is not None and self._cache[:2] == key:
                return self._cache[2], "int8"
            if self._failed is not None and self._failed[:2] == key:
                return model, "fp32"
            try:
                qmodel = quantize_int8(model)
            except Exception as exc:  # noqa: BLE001 - any engine/model problem means: score in fp32
                log.warning("int8 scoring unavailable (%s: %s), scoring in fp32", type(exc).__name__, exc)
                self._failed, self._cache = (*key, f"{type(exc).__name__}: {exc}"), None
                return model, "fp32"
            log.info("derived the int8 scoring module (%s)", why)
            self._cache, self._failed = (*key, qmodel), None
            return qmodel, "int8"

    @property
    def fallback_reason(self) -> str | None:
        """Why the last int8 derivation failed, if it did (for status and tests)."""
        return self._failed[2] if self._failed else None
