"""The Label Studio model class: LS JSON in, domain objects out; everything else is delegated.

It stays a `LabelStudioMLBase` subclass so tooling built around label-studio-ml recognises it, but one
instance lives per project per process (label-studio-ml 1.0.9 builds one per request) and training is
queued, never run inside a request.
"""
from __future__ import annotations

import json
import logging
import threading

try:
    from label_studio_ml.model import LabelStudioMLBase
except ImportError:  # pragma: no cover - `make install` adds label-studio-ml (--no-deps: see the README)
    class LabelStudioMLBase:  # type: ignore[no-redef]
        """Stand-in base when label-studio-ml is absent: the app needs nothing from it."""

        def __init__(self, **kwargs) -> None:
            pass

from albackend.domain.labelconfig import TaskSpec
from albackend.services.serving import ModelCache, predict_tasks
from albackend.services.coldstart import active_version
from albackend.settings import Settings
from albackend.services.store import ModelStore, atomic_write_text
from albackend.services.training import save_connection

log = logging.getLogger(__name__)


class ActiveLearningModel(LabelStudioMLBase):
    """One Label Studio project's acquisition model."""

    def __init__(self, project: str, settings: Settings, store: ModelStore, cache: ModelCache, **kwargs):
        super().__init__(**kwargs)
        self.project, self.settings, self.store, self.cache = project, settings, store, cache

    @classmethod
    def registry(cls, settings: Settings, store: ModelStore) -> "ModelRegistry":
        return ModelRegistry(cls, settings, store)

    @property
    def model_version(self) -> str:
        """What /setup reports and every prediction carries (LS skips or duplicates on a mismatch)."""
        return (self.store.current_version(self.project) or active_version(self.settings, self.store, self.project)
                or f"untrained-{self.project}")

    def setup(self, spec: TaskSpec, hostname: str, access_token: str) -> None:
        """Cheap by contract (LS waits 3 s): remember the spec and how to call LS back; load nothing."""
        pdir = self.store.project_dir(self.project)
        pdir.mkdir(parents=True, exist_ok=True)
        spec_path = pdir / "spec.json"
        text = json.dumps(spec.to_dict())
        if not spec_path.exists() or spec_path.read_text() != text:
            atomic_write_text(spec_path, text)
        if hostname or access_token:
            save_connection(self.store, self.project, hostname, access_token)

    def predict(self, tasks, **kwargs):
        results, stats = predict_tasks(self.settings, self.store, self.cache, self.project, tasks)
        log.debug("project %s predict: %s", self.project, stats)
        return results

    def fit(self, tasks, workdir=None, **kwargs):
        """Training runs as a queued job (albackend.services.training.training_job), not here."""
        raise NotImplementedError("training is queued through /webhook or /train; see albackend.services.training")


class ModelRegistry:
    """Per-process map project -> ActiveLearningModel, sharing one loaded-model cache."""

    def __init__(self, cls: type[ActiveLearningModel], settings: Settings, store: ModelStore):
        self.cls, self.settings, self.store = cls, settings, store
        self.cache = ModelCache(store, settings.device, settings.scoring_precision)
        self._models: dict[str, ActiveLearningModel] = {}
        self._lock = threading.Lock()

    def get(self, project: str) -> ActiveLearningModel:
        with self._lock:
            if project not in self._models:
                self._models[project] = self.cls(project, self.settings, self.store, self.cache)
            return self._models[project]
