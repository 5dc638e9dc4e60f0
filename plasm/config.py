"""PLASM run options: :class:`PlasmConfig`, the successor choice and fail-fast validation.

No training and no data here: the CLI checks every option (model names first, :mod:`plasm.names`) before any
slow step. Bad options raise :class:`plasm.errors.PlasmConfigError`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from albackend.domain.labelconfig import TaskSpec
from albackend.models.train import TrainConfig
from plasm.errors import PlasmConfigError, PlasmError
from albackend.algorithms.plasm_filters import FILTER_MODES
from plasm.names import SUCCESSOR_KEYWORDS, SuccessorChoice, parse_successor, resolve_names
from plasm.successors.bilstm import BiLSTMConfig
from plasm.successors.cnn import CNNConfig
from plasm.successors.hf import default_train_config
from plasm.tracin import PARAM_MODES

__all__ = ["PlasmConfig", "PlasmConfigError", "PlasmError", "SuccessorChoice", "SUCCESSOR_KEYWORDS", "parse_successor",
           "tracin_base", "validate_config"]



def _check_options(given, cls, what: str) -> None:
    """PlasmConfigError naming the keys of ``given`` that are no field of the dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(given) - known
    if unknown:
        raise PlasmConfigError(f"unknown {what} option(s) {sorted(unknown)}; known: {sorted(known)}")


def _train_config(value: Any):
    if value is None or isinstance(value, TrainConfig):
        return value
    if isinstance(value, dict):
        _check_options(value, TrainConfig, "training")
        return TrainConfig(**value)
    raise PlasmConfigError(f"a training config must be a dict or TrainConfig, got {type(value).__name__}")


@dataclass
class PlasmConfig:
    """Everything a PLASM run needs besides the data. JSON round trip: :meth:`to_dict` / :meth:`from_dict`.

    Training configs left ``None`` use the product's recipe (``albackend.models.train.default_train_config``: 5
    epochs, >= 60 steps, batch 16, lr 1e-4, plus a head lr of 3e-3 for tagging; early stopping on the dev split
    with patience 2, counted only once the 60 steps are done); the run's ``seed`` always replaces their seed.
    """

    teacher: str = "minilm-l6"
    successor: str = "same-as-teacher"  # "hf:<model>" | "cnn" | "bilstm" | "classical" | "same-as-teacher"
    filter: str = "uncertainty"  # uncertainty | tracin | both | none
    uncertainty_share: float = 0.5  # "both": share of the 1 - q budget the uncertainty filter takes first
    dev_fraction: float = 0.1
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    max_length: int = 256
    teacher_train: Any = None  # TrainConfig | dict | None
    successor_train: Any = None  # HF successors
    classical: dict = field(default_factory=dict)  # CNN / BiLSTM hyperparameter overrides (see their configs)
    tracin_model: str = "auto"  # auto: the successor's encoder if HF, else the teacher's; or a model name
    tracin_checkpoints: int = 3
    tracin_params: str = "head+last"  # head | head+last | all
    tracin_train: Any = None  # default: the successor's (HF) or teacher's training config, no early stopping
    tracin_batch_size: int = 16
    tracin_method: str = "vmap"  # vmap: batched torch.func per-example gradients; loop: one backward per example
    infer_batch_size: int = 64
    q_override: float | None = None  # replace the measured teacher dev score (ablations, tests)

    def __post_init__(self):
        self.teacher_train = _train_config(self.teacher_train)
        self.successor_train = _train_config(self.successor_train)
        self.tracin_train = _train_config(self.tracin_train)
        self.classical = dict(self.classical or {})

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PlasmConfig":
        _check_options(data, cls, "PLASM")
        return cls(**data)

    def train_config(self, which: str, kind: str):
        """The TrainConfig of ``which`` in teacher | successor | tracin, with the run's seed."""

        value = {"teacher": self.teacher_train, "successor": self.successor_train, "tracin": self.tracin_train}[which]
        if value is None and which == "tracin":
            value = self.successor_train if parse_successor(self.successor, kind).kind == "hf" else self.teacher_train
        if value is None:
            value = default_train_config(kind)
        return dataclasses.replace(value, seed=self.seed)


def tracin_base(cfg: PlasmConfig, task_kind: str) -> str:
    if cfg.tracin_model and cfg.tracin_model != "auto":
        return cfg.tracin_model
    choice = parse_successor(cfg.successor, task_kind, cfg.teacher)
    return choice.model if choice.kind == "hf" else cfg.teacher


def validate_config(cfg: PlasmConfig, spec: TaskSpec, *, check_models: bool = True) -> None:
    """Fail fast, with a one-line reason, on options that would fail later (also unknown model names)."""

    if spec.multi_label:
        raise PlasmConfigError("PLASM supports single-label classification and NER; this project is multi-label")
    if cfg.filter not in FILTER_MODES:
        raise PlasmConfigError(f"unknown filter {cfg.filter!r}; valid: {', '.join(FILTER_MODES)}")
    if not 0.0 < float(cfg.dev_fraction) < 1.0:
        raise PlasmConfigError(f"dev_fraction must be in (0, 1), got {cfg.dev_fraction}")
    if not 0.0 <= float(cfg.uncertainty_share) <= 1.0:
        raise PlasmConfigError(f"uncertainty_share must be in [0, 1], got {cfg.uncertainty_share}")
    if cfg.q_override is not None and not 0.0 <= float(cfg.q_override) <= 1.0:
        raise PlasmConfigError(f"q_override must be in [0, 1], got {cfg.q_override}")
    if cfg.tracin_checkpoints < 1:
        raise PlasmConfigError("tracin_checkpoints must be >= 1")

    if cfg.tracin_params not in PARAM_MODES:
        raise PlasmConfigError(f"unknown tracin_params {cfg.tracin_params!r}; valid: {', '.join(PARAM_MODES)}")
    if cfg.tracin_method not in ("vmap", "loop"):
        raise PlasmConfigError(f"tracin_method must be 'vmap' or 'loop', got {cfg.tracin_method!r}")
    choice = parse_successor(cfg.successor, spec.kind, cfg.teacher)
    if choice.kind != "hf" and cfg.classical:
        _check_options(cfg.classical, CNNConfig if choice.kind == "cnn" else BiLSTMConfig, choice.kind)
    if check_models:
        names = {"teacher": cfg.teacher}
        if choice.kind == "hf":
            names["successor"] = choice.model
        if cfg.filter in ("tracin", "both"):
            names["tracin model"] = tracin_base(cfg, spec.kind)
        resolve_names(names)
