"""Emulation settings, named configurations and the two profiles (2-core CPU default, full-scale GPU).

A *configuration* is one learning curve: how instances are acquired (acquisition model, query strategy,
UPS) and which successor is trained on them (the acquisition model itself, another model on the gold labels
only, or PLASM: teacher + pseudo-labels + filter + successor). Configurations that acquire identically share
one AL run per seed (:meth:`ConfigSpec.acquisition_key`), so e.g. ``standard``, ``mismatch`` and ``plasm``
are paired comparisons on the very same labeled sets, and the acquisition work is done once.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from albackend.algorithms.warmstart import retrain_mode, warm_steps
from bench.emulation.learners import TrainOpts

ACQ = "acquisition"  # successor = the acquisition model itself
STUDENT = "student"  # model name: the student distilled from the teacher on this run's pool (Settings.distil)
SEED_SETS = ("random", "coldstart")


@dataclass
class ConfigSpec:
    name: str
    acquisition: str = "splade-tiny"
    strategy: str = "auto"  # auto = LC for classification, MNLP for tagging
    ups: bool = False
    gamma: float = 0.1
    temperature: float = 0.01
    full_iterations: str = "0,1,4,8"  # 0-based iterations that score the whole pool (UPS warm-up)
    full_every: int = 0
    successor: str = ACQ  # "acquisition" | HF model name/dir | "cnn" | "bilstm"
    plasm: bool = False
    teacher: str = "minilm-l6"
    plasm_filter: str = "uncertainty"  # uncertainty | tracin | both | none
    plasm_pool: int = 0  # pseudo-label at most this many unlabeled items (0 = the whole unlabeled pool)
    warm_start: bool = False  # acquisition model warm-started from its previous iteration's weights
    scratch_every: int = 0  # with warm_start: from scratch on every k-th iteration (0 = never)
    warm_steps_fraction: float = 0.5  # with warm_start: fraction of the from-scratch steps
    seed_set: str = "random"  # random | coldstart: the product's cold-start ranking (albackend.algorithms.coldstart)
    label: str = ""  # legend / table text

    def __post_init__(self):
        if not self.name or any(c in self.name for c in " ,/"):
            raise ValueError(f"configuration name {self.name!r} must be non-empty without spaces, commas, slashes")
        if self.plasm and self.successor == ACQ:
            raise ValueError(f"{self.name}: PLASM needs a successor model (successor={ACQ!r} is the acquisition one)")
        if self.seed_set not in SEED_SETS:
            raise ValueError(f"{self.name}: seed_set {self.seed_set!r} is not one of {', '.join(SEED_SETS)}")
        retrain_mode(1, self.scratch_every)  # validates scratch_every
        warm_steps(1, self.warm_steps_fraction)  # validates the fraction

    def acquisition_key(self) -> tuple:
        ups = (self.gamma, self.temperature, self.full_iterations, self.full_every) if self.ups else None
        warm = (self.scratch_every, self.warm_steps_fraction) if self.warm_start else None
        cold = ("coldstart",) if self.seed_set == "coldstart" else ()
        return (self.acquisition, self.strategy, ups) + ((warm,) if warm else ()) + cold

    def acquisition_opts(self, opts: TrainOpts) -> TrainOpts:
        """The acquisition model's training options with this configuration's warm-start choice."""
        return dataclasses.replace(opts, warm_start=self.warm_start, scratch_every=self.scratch_every,
                                   warm_steps_fraction=self.warm_steps_fraction)

    def describe(self) -> str:
        if self.label:
            return self.label
        acq = f"{self.acquisition} {self.strategy}" + (
            f" + UPS(γ={self.gamma:g}, T={self.temperature:g})" if self.ups else "") + (
            f" + warm start ({self.warm_steps_fraction:g} of the steps, scratch every {self.scratch_every})"
            if self.warm_start else "") + (" from a cold-start seed set" if self.seed_set == "coldstart" else "")
        if self.plasm:
            return f"acq {acq} → PLASM(teacher {self.teacher}, {self.plasm_filter}) → {self.successor}"
        succ = "itself" if self.successor == ACQ else f"{self.successor} (gold only)"
        return f"acq {acq} → successor {succ}"

    @classmethod
    def from_dict(cls, data: dict) -> "ConfigSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration key(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)


@dataclass
class Settings:
    profile: str = "cpu"  # the profile the defaults came from (apply_profile); names the default output directory
    # data
    dataset: str | None = None
    train: str | None = None
    test: str | None = None
    task: str | None = None
    text_column: str = "text"
    label_column: str | None = None
    pool_size: int = 0
    test_size: int = 0
    data_seed: int = 0
    # protocol
    seed_fraction: float = 0.0  # 0 = paper default: 1% of instances (classification), 2% of words (tagging)
    query_fraction: float = 0.0
    iterations: int = 5
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    measure_overlap: bool = True  # UPS runs: full-pool scoring (not timed) for Table 1 and UPS recall
    # stopping criteria (the backend's STOP_* defaults): stop-set size, window, thresholds
    stop_sample: int = 1000
    stop_window: int = 3
    stop_kappa: float = 0.99
    stop_uncertainty: float = 0.05
    stop_min_gain: float = 0.01
    # models
    acquisition: str = "splade-tiny"
    successor: str = "cnn"
    teacher: str = "minilm-l6"
    device: str = "auto"
    acquisition_train: TrainOpts = field(default_factory=TrainOpts)
    successor_train: TrainOpts = field(default_factory=TrainOpts)
    teacher_train: TrainOpts = field(default_factory=TrainOpts)
    classical: dict = field(default_factory=dict)  # CNN/BiLSTM hyperparameter overrides (TrainHParams fields)
    plasm: dict = field(default_factory=dict)  # extra PlasmConfig fields
    ups_gamma: float = 0.1
    ups_temperature: float = 0.01
    ups_full_iterations: str = "0,1,4,8"
    scratch_every: int = 4  # the "warm" preset: from-scratch retrain every k iterations
    warm_steps_fraction: float = 0.5  # the "warm" preset: fraction of the from-scratch steps
    plasm_filter: str = "uncertainty"
    plasm_pool: int = 0
    # model name "student": distilled once per run on the pool's texts by the product's `python -m plasm distil`
    # (keys: its options, e.g. teacher (default: the settings' teacher), epochs, max_steps, max_length, batch_size)
    distil: dict = field(default_factory=dict)
    configs: list[ConfigSpec] = field(default_factory=list)

    def kind_default(self, kind: str) -> tuple[float, float]:
        default = 0.02 if kind == "tagging" else 0.01
        return (self.seed_fraction or default, self.query_fraction or default)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def presets(st: Settings) -> dict[str, ConfigSpec]:
    """The named configurations, built from the settings' acquisition (A), successor (S) and teacher (T)."""
    a, s, t = st.acquisition, st.successor, st.teacher
    ups = dict(ups=True, gamma=st.ups_gamma, temperature=st.ups_temperature, full_iterations=st.ups_full_iterations)
    plasm = dict(plasm=True, teacher=t, successor=s, plasm_filter=st.plasm_filter, plasm_pool=st.plasm_pool)
    warm = dict(warm_start=True, scratch_every=st.scratch_every, warm_steps_fraction=st.warm_steps_fraction)
    out = [
        ConfigSpec("standard", a, label=f"{a} acquisition, full pool (successor = {a})"),
        ConfigSpec("ups", a, label=f"{a} acquisition, UPS γ={st.ups_gamma:g} T={st.ups_temperature:g} "
                                   f"(successor = {a})", **ups),
        ConfigSpec("ups-topk", a, label=f"{a} acquisition, UPS top-γ only (T=0) (successor = {a})",
                   **{**ups, "temperature": 0.0}),
        ConfigSpec("random", a, strategy="random", label=f"random sampling (successor = {a})"),
        ConfigSpec("coldstart", a, seed_set="coldstart",
                   label=f"{a} acquisition, full pool, cold-start seed set (successor = {a})"),
        ConfigSpec("warm", a, label=f"{a} acquisition, warm start ({st.warm_steps_fraction:g} of the steps, "
                                    f"scratch every {st.scratch_every}) (successor = {a})", **warm),
        ConfigSpec("mismatch", a, successor=s, label=f"{a} acquisition → {s} on gold only (ASM)"),
        ConfigSpec("teacher", a, successor=t, label=f"{a} acquisition → {t} on gold only"),
        ConfigSpec("same", s, label=f"{s} acquisition → {s} (same model)"),
        ConfigSpec("plasm", a, label=f"{a} acquisition → PLASM({t} teacher, {st.plasm_filter}) → {s}", **plasm),
        ConfigSpec("random-succ", a, strategy="random", successor=s, label=f"random sampling → {s}"),
        ConfigSpec("ups-plasm", a, label=f"{a} + UPS → PLASM({t} teacher) → {s}", **ups, **plasm),
    ]
    return {c.name: c for c in out}


# Classical successors from scratch: batch 32 so a 60-example seed set still gets a few dozen steps.
_CNN_CPU = {"epochs": 10, "batch_size": 32}
_BILSTM_CPU = {"epochs": 8, "batch_size": 32}


# Profiles: the 2-core CPU default (< 30 min per dataset, 3 seeds), the documented full-scale GPU run, and the
# reduced cold-start comparison (cold-start vs random seed set, 3 seeds; a few minutes per dataset on 2 cores).
PROFILES: dict[str, dict[str, dict]] = {
    "cpu": {
        "classification": dict(
            pool_size=10000, test_size=1000, seed_fraction=0.01, query_fraction=0.01, iterations=5,
            acquisition="splade-tiny", successor="cnn", teacher="minilm-l6",
            acquisition_train=dict(epochs=10, min_steps=60, lr=5e-4, max_length=128),
            teacher_train=dict(epochs=4, min_steps=40, max_steps=60, lr=1e-4, max_length=128),
            successor_train=dict(epochs=4, min_steps=40, max_steps=60, lr=1e-4, max_length=128),
            classical=dict(_CNN_CPU), ups_full_iterations="0,1", plasm_pool=1500,
            configs="standard,ups,random,mismatch,same,plasm"),
        "tagging": dict(
            pool_size=4000, test_size=600, seed_fraction=0.02, query_fraction=0.02, iterations=5,
            acquisition="splade-tiny", successor="bilstm", teacher="minilm-l6",
            acquisition_train=dict(epochs=10, min_steps=60, lr=5e-4, max_length=128),
            teacher_train=dict(epochs=8, min_steps=60, max_steps=100, lr=2e-4, max_length=128),
            successor_train=dict(epochs=8, min_steps=60, max_steps=100, lr=2e-4, max_length=128),
            classical=dict(_BILSTM_CPU), ups_full_iterations="0,1", plasm_pool=1500,
            configs="standard,ups,random,mismatch,same,plasm"),
    },
    "gpu": {
        "classification": dict(
            pool_size=0, test_size=0, seed_fraction=0.01, query_fraction=0.01, iterations=15,
            seeds=[0, 1, 2, 3, 4], acquisition="splade-tiny", successor="mpnet", teacher="minilm-l6",
            acquisition_train=dict(epochs=5, min_steps=300, lr=1e-4, max_length=256, infer_batch_size=256),
            teacher_train=dict(epochs=5, min_steps=300, lr=5e-5, max_length=256, infer_batch_size=256),
            successor_train=dict(epochs=5, min_steps=300, lr=2e-5, max_length=256, infer_batch_size=256),
            classical={}, ups_full_iterations="0,1,4,8", plasm_pool=0,
            configs="standard,ups,random,mismatch,same,plasm,ups-plasm"),
        "tagging": dict(
            pool_size=0, test_size=0, seed_fraction=0.02, query_fraction=0.02, iterations=15,
            seeds=[0, 1, 2, 3, 4], acquisition="splade-tiny", successor="mpnet", teacher="minilm-l6",
            acquisition_train=dict(epochs=15, min_steps=300, lr=1e-4, max_length=256, infer_batch_size=256),
            teacher_train=dict(epochs=15, min_steps=300, lr=5e-5, max_length=256, infer_batch_size=256),
            successor_train=dict(epochs=15, min_steps=300, lr=5e-5, max_length=256, infer_batch_size=256),
            classical={}, ups_full_iterations="0,1,4,8", plasm_pool=0,
            configs="standard,ups,random,mismatch,same,plasm,ups-plasm"),
    },
    "coldstart": {
        "classification": dict(
            pool_size=2000, test_size=500, seed_fraction=0.01, query_fraction=0.01, iterations=3,
            acquisition="splade-tiny", successor="cnn", teacher="minilm-l6",
            acquisition_train=dict(epochs=10, min_steps=60, lr=5e-4, max_length=128),
            classical=dict(_CNN_CPU), configs="standard,coldstart"),
        "tagging": dict(
            pool_size=2000, test_size=300, seed_fraction=0.02, query_fraction=0.02, iterations=3,
            acquisition="splade-tiny", successor="bilstm", teacher="minilm-l6",
            acquisition_train=dict(epochs=10, min_steps=60, lr=5e-4, max_length=128),
            classical=dict(_BILSTM_CPU), configs="standard,coldstart"),
    },
}

# The paper's main result (Figures 2 / 12, Table 2): a distilled student of minilm-l6 acquires, minilm-l6 is the
# PLASM teacher, MPNet (12L/768, another architecture) the successor, (a) mismatch, (b) plasm, (c) same,
# (d) random-succ (+ the student's own curve, standard, which shares the AL run). See docs/results.md.
SUCCESSOR_CONFIGS = "standard,mismatch,plasm,same,random-succ"
_STUDENT = dict(acquisition="student", successor="mpnet", teacher="minilm-l6", configs=SUCCESSOR_CONFIGS,
                plasm_filter="uncertainty", measure_overlap=False, classical={})


def _student_profile(common: dict, train: dict, **roles: dict) -> dict:
    """One task kind of an mpnet profile: shared settings, and each role's training options on top of ``train``."""
    return dict(_STUDENT, **common, **{f"{role}_train": {**train, **opts} for role, opts in roles.items()})


_CPU = dict(pool_size=2000, test_size=500, seed_fraction=0.05, query_fraction=0.05, iterations=4, seeds=[0, 1],
            distil=dict(epochs=1, max_length=64, batch_size=32), plasm_pool=1000)
_CPU_TRAIN = dict(min_steps=40, max_steps=60, lr=1e-4, max_length=64)
_GPU = dict(pool_size=0, test_size=0, iterations=8, seeds=[0, 1, 2],
            distil=dict(epochs=1, max_length=128, batch_size=64), plasm_pool=4000)
_GPU_TRAIN = dict(min_steps=50, max_steps=200, batch_size=32, max_length=128, infer_batch_size=512)
PROFILES["mpnet-cpu"] = {  # reduced: 2-core CPU; its measured cost is in docs/results.md
    "classification": _student_profile(_CPU, dict(_CPU_TRAIN, epochs=4), acquisition={}, teacher={},
                                       successor={}),
    "tagging": _student_profile(_CPU, dict(_CPU_TRAIN, epochs=8), acquisition={"lr": 2e-4}, teacher={"lr": 2e-4},
                                successor={}),
}
PROFILES["mpnet-gpu"] = {  # the whole pool and test set, one GPU in bf16: bench/emulation/mpnet_gpu.sh
    "classification": _student_profile(dict(_GPU, seed_fraction=0.01, query_fraction=0.01),
                                       dict(_GPU_TRAIN, epochs=5), acquisition={"lr": 1e-4}, teacher={"lr": 1e-4},
                                       successor={"lr": 5e-5}),
    "tagging": _student_profile(dict(_GPU, seed_fraction=0.02, query_fraction=0.02),
                                dict(_GPU_TRAIN, epochs=15), acquisition={"lr": 1e-4}, teacher={"lr": 1e-4},
                                successor={"lr": 5e-5}),
}

_TRAIN_KEYS = ("acquisition_train", "successor_train", "teacher_train")


def group_settings(st: Settings, lead: ConfigSpec) -> Settings:
    """The settings one acquisition group runs with: the acquisition options carry its warm-start choice.

    A successor model that acquires for itself (``same``) trains with the successor's options, so it is the
    same model, trained the same way, as in the configurations where it is only the successor.
    """
    opts = st.successor_train if lead.acquisition == st.successor != st.acquisition else st.acquisition_train
    return dataclasses.replace(st, acquisition_train=lead.acquisition_opts(opts))


def apply_profile(st: Settings, profile: str, kind: str) -> str:
    """Fill ``st`` from a profile; returns the profile's default configuration list."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    values = dict(PROFILES[profile][kind])
    configs = values.pop("configs")
    st.profile = profile
    for key, value in values.items():
        if key in _TRAIN_KEYS:
            value = TrainOpts.from_dict(value)
        elif isinstance(value, (dict, list)):
            value = type(value)(value)  # the profile table stays untouched
        setattr(st, key, value)
    return configs


def uses_student(st: Settings) -> bool:
    """Whether a configuration names the run's distilled student (so it must be distilled first)."""
    return any(STUDENT in (c.acquisition, c.successor, c.teacher) for c in st.configs)


def load_config_file(path: str | Path) -> dict:
    """A JSON or YAML file: ``{"settings": {...}, "configs": [ {name, ...} | "preset-name", ... ]}``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping with 'settings' and/or 'configs'")
    unknown = set(data) - {"settings", "configs"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(unknown)}; valid: settings, configs")
    return data


def update_settings(st: Settings, values: dict) -> None:
    """Set settings; training options and ``distil`` are merged into what is there (a profile's), not replaced."""
    known = {f.name for f in dataclasses.fields(Settings)} - {"configs", "profile"}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown setting {key!r}; valid: {sorted(known)}")
        if key in _TRAIN_KEYS:
            merged = {**dataclasses.asdict(getattr(st, key)), **(value or {})}
            value = TrainOpts.from_dict(merged)
        elif key == "distil":
            value = {**st.distil, **(value or {})}
        setattr(st, key, value)


def resolve_configs(st: Settings, items: list) -> list[ConfigSpec]:
    """Names of presets and/or dicts (a dict with ``preset`` starts from that preset and overrides it)."""
    table = presets(st)
    out: list[ConfigSpec] = []
    for item in items:
        if isinstance(item, str):
            for name in [n.strip() for n in item.split(",") if n.strip()]:
                if name not in table:
                    raise ValueError(f"unknown configuration {name!r}; presets: {', '.join(table)}")
                out.append(table[name])
        elif isinstance(item, dict):
            item = dict(item)
            base = item.pop("preset", None)
            if base is not None:
                if base not in table:
                    raise ValueError(f"unknown preset {base!r}; presets: {', '.join(table)}")
                merged = {**dataclasses.asdict(table[base]), "label": "", **item}
                out.append(ConfigSpec.from_dict(merged))
            else:
                out.append(ConfigSpec.from_dict(item))
        else:
            raise ValueError(f"a configuration is a preset name or a mapping, got {item!r}")
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate configuration name(s): {dupes}")
    if not out:
        raise ValueError("no configuration to run")
    return out
