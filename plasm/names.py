"""The successor choice and the model names of a PLASM run, checked from the options alone: no torch, no data, no
network, so a mistyped name fails before anything slow starts (the CLI checks them before it loads torch)."""

from __future__ import annotations

from dataclasses import dataclass

from albackend.models.registry import ModelNotFound, resolve_model
from plasm.errors import PlasmConfigError

__all__ = ["SUCCESSOR_KEYWORDS", "SuccessorChoice", "check_model_names", "parse_successor", "resolve_names"]

SUCCESSOR_KEYWORDS = ("same-as-teacher", "cnn", "bilstm", "classical")


@dataclass(frozen=True)
class SuccessorChoice:
    kind: str  # "hf" | "cnn" | "bilstm"
    model: str | None = None  # the HF model name for kind "hf"

    def describe(self) -> str:
        return f"hf:{self.model}" if self.kind == "hf" else self.kind


def parse_successor(name: str, task_kind: str, teacher: str | None = None) -> SuccessorChoice:
    """"hf:<model>" | "cnn" | "bilstm" | "classical" (CNN or BiLSTM by task) | "same-as-teacher" | "<model>"."""
    if not isinstance(name, str) or not name.strip():
        raise PlasmConfigError("empty successor name")
    name = name.strip()
    low = name.lower()
    if low == "classical":
        low = "bilstm" if task_kind == "tagging" else "cnn"
    if low == "cnn":
        if task_kind != "classification":
            raise PlasmConfigError("the CNN successor is a text classifier; use 'bilstm' (or 'classical') for NER")
        return SuccessorChoice("cnn")
    if low == "bilstm":
        if task_kind != "tagging":
            raise PlasmConfigError("the BiLSTM successor is a tagger; use 'cnn' (or 'classical') for classification")
        return SuccessorChoice("bilstm")
    if low == "same-as-teacher":
        return SuccessorChoice("hf", teacher)
    if low.startswith("hf:"):
        model = name[3:].strip()
        if not model:
            raise PlasmConfigError("'hf:' needs a model name, e.g. hf:mpnet")
        return SuccessorChoice("hf", model)
    return SuccessorChoice("hf", name)  # a bare model name: an HF encoder


def check_model_names(teacher: str, successor: str = "same-as-teacher", tracin_model: str | None = None) -> None:
    """The model names of the options alone (before the data says the task kind): fails in well under a second."""
    names = {"teacher": teacher}
    successor = successor.strip() if isinstance(successor, str) else ""
    if successor.lower() not in SUCCESSOR_KEYWORDS:
        names["successor"] = successor[3:].strip() if successor.lower().startswith("hf:") else successor
    if tracin_model and tracin_model != "auto":
        names["tracin model"] = tracin_model
    resolve_names(names)


def resolve_names(names: dict[str, str]) -> None:
    for role, name in names.items():
        try:
            resolve_model(name)
        except ModelNotFound as exc:
            raise PlasmConfigError(f"{role}: {exc}") from None
