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
    "LABEL_STUDIO_API_KEY": ("", "Label Studio personal access token or legacy token; falls back to the access_token sent in /setup. Never logged."),
    "TRAIN_EPOCHS": ("5", "Fine-tuning epochs of the acquisition model."),
    "TRAIN_MIN_STEPS": ("60", "Minimum number of gradient steps, so tiny seed sets still train (the paper uses 1000 on GPU)."),
    "TRAIN_MAX_STEPS": ("0", "Upper bound on gradient steps (0 = none): caps a retrain's time on large label sets."),
    "TRAIN_BATCH_SIZE": ("16", "Training batch size."),
    "TRAIN_LR": ("0", "Encoder learning rate; 0 = the recipe's default, 1e-4 for both task kinds (albackend/models/train.py says why)."),
    "TRAIN_HEAD_LR": ("0", "Learning rate of the freshly initialised head; 0 = 3e-3 for tagging (a tiny label set does not collapse to all-O), the encoder's for classification."),
    "WARM_START": ("false", "Retrain by fine-tuning the previous model version on all gold labels (fewer steps) instead of from scratch."),
    "WARM_START_STEPS_FRACTION": ("0.5", "Warm start: fraction of a from-scratch retrain's gradient steps, in (0, 1]."),
    "SCRATCH_EVERY": ("4", "Warm start: retrain from scratch on every k-th iteration anyway (0 = never)."),
    "MAX_LENGTH": ("256", "Maximum sub-word length; longer texts are truncated (NER spans beyond it are not predicted)."),
    "INFER_BATCH_SIZE": ("64", "Batch size for pool scoring and /predict."),
    "SCORING_PRECISION": ("auto", "CPU scoring (pool, /predict): fp32, or int8 = a dynamically quantized copy of the trained model (2.1-2.6x faster, ranking less stable: docs/results.md); auto = fp32 (int8 missed the ranking criteria); the GPU always uses bf16 autocast."),
    "MAX_TEXT_CHARS": ("100000", "Texts longer than this are truncated before tokenization (several-MB tasks stay cheap)."),
    "TEXT_URL_HOSTS": ("", "Task texts given as a link are fetched from Label Studio (with the token) and, without it, from these other hosts only (comma-separated host or host:port, e.g. a bucket's presigned-URL host)."),
    "TEXT_URL_MAX_KB": ("1024", "Largest text fetched from a link (KB); a larger one is skipped with the reason."),
    "TEXT_URL_TIMEOUT_S": ("10", "Seconds a link fetch may take; an unreachable or slow link is skipped with the reason."),
    "UPS_ENABLED": ("true", "Unlabeled pool subsampling on; false = rescore the full pool after every retrain."),
    "UPS_GAMMA": ("0.1", "UPS: fraction of previously most uncertain tasks always rescored."),
    "UPS_T": ("0.01", "UPS: temperature of the keep probability for the rest of the pool."),
    "UPS_FULL_ITERATIONS": ("0,1,4,8", "0-based iterations on which the full pool is scored."),
    "UPS_FULL_EVERY": ("0", "Also score the full pool every k iterations (0 = never)."),
    "PREDICT_UPS_MIN_TASKS": ("200", "A /predict batch at least this large is served from the score cache where it is current; before the first model, this many tasks without a cold-start score are not embedded in the request (see README)."),
    "PUSH_PREDICTIONS": ("true", "After each retrain, write the rescored predictions to Label Studio and PATCH model_version."),
    "PUBLISH_FIRST_CHUNK": ("256", "Tasks scored, pushed and made current (PATCH model_version) first after a retrain: the previous most uncertain ones."),
    "PUBLISH_CHUNK": ("2000", "Size of each later chunk of the rescoring, pushed to Label Studio as it completes."),
    "SCORE_SHARD_SIZE": ("1000", "With REDIS_URL: a rescoring chunk of at least two shards of this many tasks is scored by every free RQ worker (0 = never shard)."),
    "PUSH_BATCH": ("2000", "Predictions per POST to Label Studio's import/predictions (bench/ls_push.py: 2000 per request stores 12x faster than 100; parallel requests are slower on LS's SQLite)."),
    "KEEP_PREDICTION_VERSIONS": ("1", "Earlier model versions whose predictions stay in Label Studio besides the current one; older ones of this backend are deleted."),
    "COLD_START": ("true", "Before the first model: rank the pool by representativeness and diversity (k-means on the acquisition model's pretrained encoder, mean-pooled) and push it as predictions of version coldstart-<project>, so Label Studio serves typical, distinct tasks first (see README)."),
    "COLD_START_SAMPLE": ("2000", "Cold start: tasks embedded, ranked and pushed first; the rest of the pool is embedded chunk by chunk (PUBLISH_CHUNK) and placed into that ranking."),
    "NEAR_DUPLICATE_THRESHOLD": ("0.92", "Cosine similarity (centred encoder embeddings) from which a task in the top NEAR_DUPLICATE_TOP of a published ranking counts as a near-duplicate of a better one and is served after every distinct task; 0 = off."),
    "NEAR_DUPLICATE_TOP": ("100", "How many best-ranked tasks of the cold start and of every retrain's ranking are kept free of near-duplicates."),
    "RETRAIN_EVERY": ("10", "Queue a retrain after this many annotation events (START_TRAINING always queues one); a project's own min_annotations_to_start_training overrides it."),
    "MIN_TAGGED_SENTENCES": ("5", "Tagging: a retrain needs at least this many annotated sentences with an entity span (else the job is skipped with the reason), so the first job does not train on one sentence."),
    "SET_SAMPLING": ("true", "Switch the project to Uncertainty sampling on the first publish (the Community Edition UI cannot)."),
    "QUALITY_WINDOW": ("50", "Prequential agreement (dashboard, /metrics, LS summary): the sliding window, in annotations of tasks that carried a prediction."),
    "STOP_SAMPLE_SIZE": ("1000", "Stop set: a fixed seeded sample of the pool that every new model version scores, for the stopping criteria (0 = off)."),
    "STOP_KAPPA": ("0.99", "Stabilizing predictions: the mean Cohen's kappa between consecutive versions on the stop set at which to stop."),
    "STOP_WINDOW": ("3", "Stopping criteria: how many versions the kappa mean and the prequential plateau look back over."),
    "STOP_UNCERTAINTY": ("0.05", "Overall uncertainty: stop when the mean normalized entropy of the predictions on the stop set (NER: per sentence, its most uncertain word) is below this."),
    "STOP_MIN_GAIN": ("0.01", "Prequential plateau: an agreement gain below this over the last STOP_WINDOW versions counts as a plateau."),
    "LS_SUMMARY": ("true", "After each retrain, append a one-line summary (iteration, agreement, stopping advice) to this backend's ML backend title in Label Studio and write it as a line of its description."),
    "LS_TRAINING_STATE": ("true", "Show the training state (running and its phase, finished with the current model, or failed and why) as a line of this backend's ML backend description in Label Studio."),
    "MAX_REQUEST_MB": ("32", "Largest request body accepted (MB); larger ones get 413 before being read. 32 MB holds a 1,000-task /predict of 30 KB texts."),
    "BODY_READ_TIMEOUT_S": ("10", "A client silent this long while sending its request body is dropped (408), so slow clients cannot hold threads; 0 = never."),
    "REDIS_TIMEOUT": ("2", "Seconds any single Redis call may take (connect and read); past it the web answers 503, /status shows the stored record."),
    "PROMETHEUS_MULTIPROC_DIR": ("", "Directory where gunicorn workers share Prometheus metrics (emptied at start); empty = a fresh temporary one."),
    "JOB_HISTORY": ("50", "Job records kept per project (older ones are deleted when a job is queued)."),
    "BASIC_AUTH_USER": ("", "If set with BASIC_AUTH_PASS, every endpoint requires HTTP basic auth."),
    "BASIC_AUTH_PASS": ("", "Password for BASIC_AUTH_USER."),
    "SEED": ("42", "Seed for training, subsampling and splits."),
    "LOG_LEVEL": ("INFO", "Python log level."),
    "DEVICE": ("auto", "auto, cpu or cuda: auto uses the GPU (with bf16 autocast) when present."),
    "AL_BACKEND_CACHE": ("~/.cache/al-backend", "Where packaged models that ship as archives (MPNet) are unpacked once."),
    "HF_HUB_OFFLINE": ("", "1 = never contact the Hugging Face hub: a model name that is not packaged or a local directory is refused (make sets it)."),
}


SCORING_PRECISIONS = ("auto", "fp32", "int8")


def parse_scoring_precision(value: str) -> str:
    """A valid SCORING_PRECISION value (case and surrounding blanks ignored), or a ValueError naming the choices."""
    norm = str(value).strip().lower()
    if norm not in SCORING_PRECISIONS:
        raise ValueError(f"SCORING_PRECISION={value!r} is not one of {', '.join(SCORING_PRECISIONS)}")
    return norm


def env(name: str) -> str:
    """One variable of ENV_VARS (its default when unset); a KeyError for a name that is not listed there."""
    return os.environ.get(name, ENV_VARS[name][0])


def cache_dir() -> Path:
    """AL_BACKEND_CACHE, for code that needs no full Settings snapshot (model name resolution)."""
    return Path(env("AL_BACKEND_CACHE")).expanduser()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as the hub library reads it: any of 1/true/yes/on."""
    return _bool(env("HF_HUB_OFFLINE"))


def prometheus_multiproc_dir() -> str:
    """Read by gunicorn.conf.py in the master, before any worker exists (not part of Settings)."""
    return env("PROMETHEUS_MULTIPROC_DIR")


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _fraction(name: str, value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"environment variable {name}={value!r} must be in (0, 1]")
    return value


def _non_negative(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"environment variable {name}={value!r} must be >= 0")
    return value


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
    train_head_lr: float
    warm_start: bool
    warm_start_steps_fraction: float
    scratch_every: int
    max_length: int
    infer_batch_size: int
    scoring_precision: str
    max_text_chars: int
    text_url_hosts: str
    text_url_max_kb: float
    text_url_timeout_s: float
    ups_enabled: bool
    ups_gamma: float
    ups_t: float
    ups_full_iterations: str
    ups_full_every: int
    predict_ups_min_tasks: int
    push_predictions: bool
    publish_first_chunk: int
    publish_chunk: int
    score_shard_size: int
    push_batch: int
    keep_prediction_versions: int
    cold_start: bool
    cold_start_sample: int
    near_duplicate_threshold: float
    near_duplicate_top: int
    retrain_every: int
    min_tagged_sentences: int
    set_sampling: bool
    quality_window: int
    stop_sample_size: int
    stop_kappa: float
    stop_window: int
    stop_uncertainty: float
    stop_min_gain: float
    ls_summary: bool
    ls_training_state: bool
    max_request_mb: float
    body_read_timeout_s: float
    redis_timeout: float
    job_history: int
    basic_auth_user: str
    basic_auth_pass: str = field(repr=False)
    seed: int
    log_level: str
    device: str

    @classmethod
    def from_env(cls) -> "Settings":
        """Read every variable, failing fast with the variable's name on a malformed number."""
        return cls(**_model_and_training(), **_loop_and_publish(), **_stopping(), **_service())


def _model_and_training() -> dict:
    """Where models live, which one, how it trains and scores; task texts."""
    return dict(
        model_dir=Path(env("MODEL_DIR")).expanduser().resolve(),
        acquisition_model=env("ACQUISITION_MODEL"),
        query_strategy=env("QUERY_STRATEGY"),
        redis_url=env("REDIS_URL"),
        rq_queue=env("RQ_QUEUE"),
        label_studio_url=env("LABEL_STUDIO_URL").rstrip("/"),
        label_studio_api_key=env("LABEL_STUDIO_API_KEY"),
        train_epochs=int(_num("TRAIN_EPOCHS", int)),
        train_min_steps=int(_num("TRAIN_MIN_STEPS", int)),
        train_max_steps=int(_num("TRAIN_MAX_STEPS", int)),
        train_batch_size=int(_num("TRAIN_BATCH_SIZE", int)),
        train_lr=float(_num("TRAIN_LR", float)),
        train_head_lr=float(_num("TRAIN_HEAD_LR", float)),
        warm_start=_bool(env("WARM_START")),
        warm_start_steps_fraction=_fraction("WARM_START_STEPS_FRACTION",
                                            float(_num("WARM_START_STEPS_FRACTION", float))),
        scratch_every=_non_negative("SCRATCH_EVERY", int(_num("SCRATCH_EVERY", int))),
        max_length=int(_num("MAX_LENGTH", int)),
        infer_batch_size=int(_num("INFER_BATCH_SIZE", int)),
        scoring_precision=parse_scoring_precision(env("SCORING_PRECISION")),
        max_text_chars=int(_num("MAX_TEXT_CHARS", int)),
        text_url_hosts=env("TEXT_URL_HOSTS"),
        text_url_max_kb=float(_num("TEXT_URL_MAX_KB", float)),
        text_url_timeout_s=float(_num("TEXT_URL_TIMEOUT_S", float)),
    )


def _loop_and_publish() -> dict:
    """UPS, the progressive publish to Label Studio and cold start."""
    return dict(
        ups_enabled=_bool(env("UPS_ENABLED")),
        ups_gamma=float(_num("UPS_GAMMA", float)),
        ups_t=float(_num("UPS_T", float)),
        ups_full_iterations=env("UPS_FULL_ITERATIONS"),
        ups_full_every=int(_num("UPS_FULL_EVERY", int)),
        predict_ups_min_tasks=int(_num("PREDICT_UPS_MIN_TASKS", int)),
        push_predictions=_bool(env("PUSH_PREDICTIONS")),
        publish_first_chunk=max(1, int(_num("PUBLISH_FIRST_CHUNK", int))),
        publish_chunk=max(1, int(_num("PUBLISH_CHUNK", int))),
        score_shard_size=max(0, int(_num("SCORE_SHARD_SIZE", int))),
        push_batch=max(1, int(_num("PUSH_BATCH", int))),
        keep_prediction_versions=max(0, int(_num("KEEP_PREDICTION_VERSIONS", int))),
        cold_start=_bool(env("COLD_START")),
        cold_start_sample=max(1, int(_num("COLD_START_SAMPLE", int))),
        near_duplicate_threshold=float(_num("NEAR_DUPLICATE_THRESHOLD", float)),
        near_duplicate_top=max(0, int(_num("NEAR_DUPLICATE_TOP", int))),
    )


def _stopping() -> dict:
    """The prequential window, the stop set and the stopping criteria's thresholds, and the LS summary switch."""
    return dict(
        quality_window=max(1, int(_num("QUALITY_WINDOW", int))),
        stop_sample_size=_non_negative("STOP_SAMPLE_SIZE", int(_num("STOP_SAMPLE_SIZE", int))),
        stop_kappa=_fraction("STOP_KAPPA", float(_num("STOP_KAPPA", float))),
        stop_window=max(1, int(_num("STOP_WINDOW", int))),
        stop_uncertainty=_fraction("STOP_UNCERTAINTY", float(_num("STOP_UNCERTAINTY", float))),
        stop_min_gain=float(_num("STOP_MIN_GAIN", float)),
        ls_summary=_bool(env("LS_SUMMARY")),
    )


def _service() -> dict:
    """The retrain policy, what the backend writes into Label Studio, the web service, auth, logging, seed, device."""
    return dict(
        retrain_every=max(1, int(_num("RETRAIN_EVERY", int))),
        min_tagged_sentences=_non_negative("MIN_TAGGED_SENTENCES", int(_num("MIN_TAGGED_SENTENCES", int))),
        set_sampling=_bool(env("SET_SAMPLING")),
        ls_training_state=_bool(env("LS_TRAINING_STATE")),
        max_request_mb=float(_num("MAX_REQUEST_MB", float)),
        body_read_timeout_s=float(_num("BODY_READ_TIMEOUT_S", float)),
        redis_timeout=float(_num("REDIS_TIMEOUT", float)),
        job_history=int(_num("JOB_HISTORY", int)),
        basic_auth_user=env("BASIC_AUTH_USER"),
        basic_auth_pass=env("BASIC_AUTH_PASS"),
        seed=int(_num("SEED", int)),
        log_level=env("LOG_LEVEL").upper(),
        device=env("DEVICE"),
    )


def _num(name: str, kind: type) -> int | float:
    raw = env(name)
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from exc
