"""Label config XML -> TaskSpec.

Parsing happens at `/setup`, so an unsupported project is refused with a clear message there rather than
failing later inside a training job.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

TaskKind = Literal["classification", "tagging"]

_TEXT_TAGS = {"text", "hypertext"}
_CONTROL_KINDS: dict[str, TaskKind] = {"choices": "classification", "labels": "tagging"}
_OBJECT_TAGS = {"image", "audio", "audioplus", "video", "timeseries", "table", "paragraphs", "pdf"}


class ConfigError(ValueError):
    """The label config cannot be served by this backend; the message says why."""


@dataclass(frozen=True)
class TaskSpec:
    """What the backend learns: which control, over which text field, with which labels."""

    kind: TaskKind
    from_name: str
    to_name: str
    value_key: str
    labels: tuple[str, ...]
    multi_label: bool = False

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "from_name": self.from_name, "to_name": self.to_name,
            "value_key": self.value_key, "labels": list(self.labels), "multi_label": self.multi_label,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        return cls(
            kind=data["kind"], from_name=data["from_name"], to_name=data["to_name"],
            value_key=data["value_key"], labels=tuple(data["labels"]), multi_label=bool(data.get("multi_label")),
        )


def parse_label_config(xml: str) -> TaskSpec:
    """Find the one supported control (Choices or Labels) that targets a Text object."""
    texts, controls = _scan(_parse_xml(xml))
    ctl, target = _the_control(texts, controls)
    return _spec_of(ctl, target, texts[target])


def _parse_xml(xml: str) -> ET.Element:
    if not isinstance(xml, str) or not xml.strip():
        raise ConfigError("label config is empty")
    try:
        data = xml.encode("utf-8")  # expat encodes str input itself and fails on a lone surrogate
    except UnicodeEncodeError as exc:
        raise ConfigError(f"label config is not valid Unicode (lone surrogate at character {exc.start})") from None
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise ConfigError(f"label config is not valid XML: {exc}") from exc


def _scan(root: ET.Element) -> tuple[dict[str, str], list[ET.Element]]:
    """(Text object name -> task field, every Choices/Labels control); no Text object at all is refused."""
    texts: dict[str, str] = {}
    others: list[str] = []
    controls: list[ET.Element] = []
    for el in root.iter():
        tag = el.tag.lower()
        if tag in _TEXT_TAGS and el.get("name"):
            value = el.get("value", "")
            if not value.startswith("$") or len(value) < 2:
                raise ConfigError(f"<{el.tag} name={el.get('name')!r}> must take its value from a task field ($field)")
            texts[el.get("name")] = value[1:]
        elif tag in _OBJECT_TAGS:
            others.append(el.tag)
        elif tag in _CONTROL_KINDS:
            controls.append(el)
    if not texts:
        found = f" (found {', '.join(sorted(set(others)))})" if others else ""
        raise ConfigError(f"label config has no <Text> object: this backend labels text only{found}")
    return texts, controls


def _the_control(texts: dict[str, str], controls: list[ET.Element]) -> tuple[ET.Element, str]:
    """The one control bound to exactly one Text object: one model per project needs one clear target."""
    candidates = []
    for ctl in controls:
        to_names = [n.strip() for n in (ctl.get("toName") or ctl.get("toname") or "").split(",") if n.strip()]
        targets = [n for n in to_names if n in texts]
        if not targets:
            continue
        if len(targets) > 1:
            raise ConfigError(f"<{ctl.tag} name={ctl.get('name')!r}> targets several text fields {targets}: "
                              "the backend needs one clear target")
        candidates.append((ctl, targets[0]))
    if not candidates:
        if len(texts) > 1:
            raise ConfigError(f"several text fields {sorted(texts)} and no <Choices>/<Labels> bound to one of them")
        raise ConfigError("label config has no <Choices> or <Labels> control bound to a <Text> object")
    if len(candidates) > 1:
        names = [c.get("name") for c, _ in candidates]
        raise ConfigError(f"several controls {names}: this backend trains one model per project, keep one control")
    return candidates[0]


def _spec_of(ctl: ET.Element, target: str, value_key: str) -> TaskSpec:
    name = ctl.get("name")
    if not name:
        raise ConfigError(f"<{ctl.tag}> has no name attribute")
    child_tag = "choice" if ctl.tag.lower() == "choices" else "label"
    labels = []
    for child in ctl:
        if child.tag.lower() == child_tag:
            value = child.get("value") or child.get("alias")
            if value and value not in labels:
                labels.append(value)
    kind = _CONTROL_KINDS[ctl.tag.lower()]
    if len(labels) < (2 if kind == "classification" else 1):
        raise ConfigError(f"<{ctl.tag} name={name!r}> needs at least {2 if kind == 'classification' else 1} "
                          f"label values, found {len(labels)}")
    multiple = kind == "classification" and (ctl.get("choice") or "").lower() == "multiple"
    return TaskSpec(kind=kind, from_name=name, to_name=target, value_key=value_key,
                    labels=tuple(labels), multi_label=multiple)
