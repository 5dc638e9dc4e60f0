"""Model name resolution decides from the name and the disk alone: packaged names, local directories, hub ids
``owner/name`` (unless HF_HUB_OFFLINE), and a clear refusal of anything else, without touching the network."""
from __future__ import annotations

import pytest

from albackend import settings
from albackend.models.registry import ModelNotFound, resolve_model


@pytest.fixture
def hub_allowed(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("name", ["foo", "no-such-model-xyz", "bert base", "-x/y", "a--b/c", "org/", "/org"])
def test_a_name_that_is_no_hub_id_is_refused_with_the_choices(hub_allowed, name):
    with pytest.raises(ModelNotFound) as exc:
        resolve_model(name)
    assert "minilm-l6, mpnet, splade-tiny" in str(exc.value) or "does not exist" in str(exc.value)


@pytest.mark.parametrize("name", ["sentence-transformers/all-MiniLM-L12-v2", "google-bert/bert-base-uncased",
                                  "org_1/model.v2"])
def test_hub_ids_pass_through_when_the_hub_is_allowed(hub_allowed, name):
    assert resolve_model(name) == name


def test_nested_paths_are_missing_directories_not_hub_ids(hub_allowed):
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model("models/students/minilm-l3")


@pytest.mark.parametrize("value", ["1", "true", "ON"])
def test_offline_refuses_hub_ids(monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE forbids the hub"):
        resolve_model("org/model")


def test_packaged_and_local_names_resolve(tmp_path, hub_allowed):
    assert resolve_model("minilm-l6").endswith("model")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())


def test_settings_env_knows_only_listed_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("AL_BACKEND_CACHE", str(tmp_path / "cache"))
    assert settings.cache_dir() == tmp_path / "cache"
    with pytest.raises(KeyError):
        settings.env("NOT_A_SETTING")
