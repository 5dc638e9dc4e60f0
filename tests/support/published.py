"""A model store with small trained models (project 12: classifier, project 13: NER tagger), shared by the
protocol tests (Flask test client) and the fuzz test (real gunicorn)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from albackend.domain.labelconfig import parse_label_config
from albackend.settings import Settings
from albackend.services.store import ModelStore
from albackend.services.training import train_and_publish

CLS_CONFIG = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
              '<Choice value="Sports"/><Choice value="Politics"/></Choices></View>')
NER_CONFIG = ('<View><Labels name="ner" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>'
              '<Text name="text" value="$text"/></View>')


def labeled(i: int, label: str) -> dict:
    words = {"Sports": "match goal striker league", "Politics": "vote senate minister budget"}[label]
    return {"id": i, "data": {"text": f"{words} {i}"}, "annotations": [{"id": i, "result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}]}


def ner_task(i: int) -> dict:
    return {"id": 100 + i, "data": {"text": "Bob visited Paris"}, "annotations": [{"id": i, "result": [
        {"from_name": "ner", "to_name": "text", "type": "labels", "value": {"start": 0, "end": 3, "labels": ["PER"]}},
        {"from_name": "ner", "to_name": "text", "type": "labels",
         "value": {"start": 12, "end": 17, "labels": ["LOC"]}}]}]}


def publish_tiny_models(settings: Settings, root: Path) -> tuple[dict, dict]:
    """Train and publish project 12 (classification) and 13 (NER) into `root`; returns both publish infos."""
    store = ModelStore(root)
    tasks = [labeled(i, "Sports" if i % 2 else "Politics") for i in range(1, 11)]
    _, cls_info = train_and_publish(settings, store, "12", parse_label_config(CLS_CONFIG), tasks, {"seconds": {}})
    ner_settings = dataclasses.replace(settings, train_min_steps=60, train_lr=5e-3)
    _, ner_info = train_and_publish(ner_settings, store, "13", parse_label_config(NER_CONFIG),
                                    [ner_task(i) for i in range(8)], {"seconds": {}})
    return cls_info, ner_info
