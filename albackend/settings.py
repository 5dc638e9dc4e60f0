"""Configuration from environment variables (Label Studio's convention).

Every knob lives here so the README table and the code cannot drift apart: `ENV_VARS` is the single
list of names, defaults and meanings, and the README is checked against it in the tests.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# name -> (default, meaning). Order is the README's order.
ENV_VARS: dict[str, tuple[str, str]] = {
    "MODEL_DIR": ("./data/models", "Model store root: per-project versioned models, score caches, job records."),
    "ACQUISITION_MODEL": ("minilm-l6", "Acquisition model: a packaged name (minilm-l6, splade-tiny, mpnet), a local HF directory, or a hub name."),
    "QUERY_STRATEGY": ("auto", "least_confident, margin, entropy, mnlp, mahalanobis or random; auto = LC for classification, MNLP for tagging."),
    "REDIS_URL": ("", "If set, training jobs go to an RQ queue served by `rq worker`; otherwise an in-process worker runs them."),
    "RQ_QUEUE": ("albackend", "RQ queue name for training and PLASM jobs."),
    "LABEL_STUDIO_URL": ("", "Label Studio base URL; falls back to the hostname sent in /setup."),
    "LABEL_STUDIO_API_KEY": ("", "Label Studio legacy API token; falls back to the access_token sent in /setup. Never logged."),
    "TRAIN_EPOCHS": ("5", "Fine-tuning epochs of the acquisition model."),
    "TRAIN_MIN_STEPS": ("60", "Minimum number of gradient steps, so tiny seed sets still train (the paper uses 1000 on GPU)."),
    "TRAIN_MAX_STEPS": ("0", "Upper bound on gradient steps (0 = none): caps a retrain's time on large label sets."),
    "TRAIN_BATCH_SIZE": ("16", "Training batch size."),
    "TRAIN_LR": ("0", "Learning rate; 0 = 5e-5 for tagging, 1e-4 for classification with small models."),
    "MAX_LENGTH": ("256", "Maximum sub-word length; longer texts are truncated (NER spans beyond it are not predicted)."),
    "INFER_BATCH_SIZE": ("64", "Batch size for pool scoring and /predict."),
    "SCORING_PRECISION": ("auto", "CPU scoring (pool, /predict): fp32, or int8 = a dynamically quantized copy of the trained model (2.1-2.6x faster, ranking less stable: docs/results.md); auto = fp32 (int8 missed the ranking criteria); the GPU always uses bf16 autocast."),
    "MAX_TEXT_CHARS": ("100000", "Texts longer than this are truncated before tokenization (several-MB tasks stay cheap)."),
    "UPS_ENABLED": ("true", "Unlabeled pool subsampling on; false = rescore the full pool after every retrain."),
    "UPS_GAMMA": ("0.1", "UPS: fraction of previously most uncertain tasks always rescored."),
    "UPS_T": ("0.01", "UPS: temperature of the keep probability for the rest of the pool."),
    "UPS_FULL_ITERATIONS": ("0,1,4,8", "0-based iterations on which the full pool is scored."),
    "UPS_FULL_EVERY": ("0", "Also score the full pool every k iterations (0 = never)."),
    "PREDICT_UPS_MIN_TASKS": ("200", "A /predict batch at least this large is served from the score cache where it is current (see README)."),
    "PUSH_PREDICTIONS": ("true", "After each retrain, write the rescored predictions to Label Studio and PATCH model_version."),
    "BASIC_AUTH_USER": ("", "If set with BASIC_AUTH_PASS, every endpoint requires HTTP basic auth."),
    "BASIC_AUTH_PASS": ("", "Password for BASIC_AUTH_USER."),
    "SEED": ("42", "Seed for training, subsampling and splits."),
    "LOG_LEVEL": ("INFO", "Python log level."),
    "DEVICE": ("auto", "auto, cpu or cuda: auto uses the GPU (with bf16 autocast) when present."),
}


SCORING_PRECISIONS = ("auto", "fp32", "int8")


def parse_scoring_precision(value: str) -> str:
    """A valid SCORING_PRECISION value (case and surrounding blanks ignored), or a ValueError naming the choices."""
    norm = str(value).strip().lower()
    if norm not in SCORING_PRECISIONS:
        raise ValueError(f"SCORING_PRECISION={value!r} is not one of {', '.join(SCORING_PRECISIONS)}")
    return norm


def scoring_precision_from_env() -> str:
    """SCORING_PRECISION alone: models read it at create/load so that every caller scores the same way."""
    return parse_scoring_precision(_get("SCORING_PRECISION"))


def _get(name: str) -> str:
    return os.environ.get(name, ENV_VARS[name][0])


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment; build with `Settings.from_env()`."""

    model_dir: Path
    acquisition_model: str
    query_strategy: str
    redis_url: str
    rq_queue: str
    label_studio_url: str
    label_studio_api_key: str = field(repr=False)
    train_epochs: int
    train_min_steps: int
    train_max_steps: int
    train_batch_size: int
    train_lr: float
    max_length: int
    infer_batch_size: int
    scoring_precision: str
    max_text_chars: int
    ups_enabled: bool
    ups_gamma: float
    ups_t: float
    ups_full_iterations: str
    ups_full_every: int
    predict_ups_min_tasks: int
    push_predictions: bool
    basic_auth_user: str
    basic_auth_pass: str = field(repr=False)
    seed: int
    log_level: str
    device: str

    @classmethod
    def from_env(cls) -> "Settings":
        """Read every variable, failing fast with the variable's name on a malformed number."""
        def num(name: str, kind: type) -> int | float:
            raw = _get(name)
            try:
                return kind(raw)
            except ValueError as exc:
                raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from exc

        return cls(
            model_dir=Path(_get("MODEL_DIR")).expanduser().resolve(),
            acquisition_model=_get("ACQUISITION_MODEL"),
            query_strategy=_get("QUERY_STRATEGY"),
            redis_url=_get("REDIS_URL"),
            rq_queue=_get("RQ_QUEUE"),
            label_studio_url=_get("LABEL_STUDIO_URL").rstrip("/"),
            label_studio_api_key=_get("LABEL_STUDIO_API_KEY"),
            train_epochs=int(num("TRAIN_EPOCHS", int)),
            train_min_steps=int(num("TRAIN_MIN_STEPS", int)),
            train_max_steps=int(num("TRAIN_MAX_STEPS", int)),
            train_batch_size=int(num("TRAIN_BATCH_SIZE", int)),
            train_lr=float(num("TRAIN_LR", float)),
            max_length=int(num("MAX_LENGTH", int)),
            infer_batch_size=int(num("INFER_BATCH_SIZE", int)),
            scoring_precision=scoring_precision_from_env(),
            max_text_chars=int(num("MAX_TEXT_CHARS", int)),
            ups_enabled=_bool(_get("UPS_ENABLED")),
            ups_gamma=float(num("UPS_GAMMA", float)),
            ups_t=float(num("UPS_T", float)),
            ups_full_iterations=_get("UPS_FULL_ITERATIONS"),
            ups_full_every=int(num("UPS_FULL_EVERY", int)),
            predict_ups_min_tasks=int(num("PREDICT_UPS_MIN_TASKS", int)),
            push_predictions=_bool(_get("PUSH_PREDICTIONS")),
            basic_auth_user=_get("BASIC_AUTH_USER"),
            basic_auth_pass=_get("BASIC_AUTH_PASS"),
            seed=int(num("SEED", int)),
            log_level=_get("LOG_LEVEL").upper(),
            device=_get("DEVICE"),
        )
