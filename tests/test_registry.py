"""The analyzer registry and the nested settings: one table that everything reads."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import pytest
from nc_py_api.ex_app.ui.settings import SettingsFieldType

from ex_app import config
from ex_app.analyzers.registry import ANALYZERS, BY_NAME, needed_models
from ex_app.config import AnalyzerSection, Settings
from ex_app.models.manifest import load_manifest
from ex_app.web.admin_settings import settings_form
from ex_app.service.worker_pool import worker_environment

ANALYZER_MODULES = Path(__file__).resolve().parents[1] / "ex_app" / "analyzers"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("RECOGNIZE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(config, "_WARNED", set())  # each test sees its deprecation lines


def test_every_analyzer_module_is_registered_with_a_build_and_a_settings_section():
    modules = {p.stem for p in ANALYZER_MODULES.glob("*.py")} - {"__init__", "registry", "pipeline", "results"}
    assert set(BY_NAME) == modules
    assert {"faces", "objects", "places", "music", "video", "actions", "landmarks"} <= modules
    settings = Settings()
    for analyzer in ANALYZERS:
        assert callable(importlib.import_module(f"ex_app.analyzers.{analyzer.name}").build), analyzer.name
        assert isinstance(getattr(settings, analyzer.name), AnalyzerSection)
    # Optional analyzers are off until the admin turns them on; so is the sensitive filter,
    # whose model is fetched like any other once it is on.
    off = {"actions", "landmarks", "sensitive"}
    assert {a.name for a in ANALYZERS if a.enabled(settings)} == set(BY_NAME) - off
    assert all(BY_NAME[name].optional for name in ("actions", "landmarks"))
    assert not BY_NAME["sensitive"].optional


@pytest.mark.parametrize("embedder", ["sface", "dlib"])
def test_every_model_an_analyzer_needs_is_in_the_manifest(embedder):
    manifest = load_manifest()
    settings = Settings(faces={"embedder": embedder})
    for analyzer in ANALYZERS:
        assert set(analyzer.models(settings)) <= set(manifest), analyzer.name
    required, optional = needed_models(settings, ANALYZERS)
    assert "landmarks_europe_labels" in optional and "movinet_a0_stream" in optional
    assert "efficientnet_lite0" in required  # landmarks need it, but objects do too
    assert ("dlib_face_embedder_onnx" in required) == (embedder == "dlib")


def test_init_fetches_the_models_of_the_enabled_analyzers_only():
    required, optional = needed_models(Settings(objects={"enabled": False}, music_enabled=False,
                                                 video_enabled=False))
    assert required == ["face_detection_yunet", "face_recognition_sface"] and optional == []
    required, optional = needed_models(Settings(landmarks={"enabled": True}))
    assert "imagenet_labels" in required and "landmarks_asia" in optional


def test_the_admin_form_has_one_switch_per_analyzer_showing_its_setting():
    form = settings_form(Settings(faces={"enabled": False}))
    switches = {f.id: f.default for f in form.fields if f.type == SettingsFieldType.CHECKBOX
                and f.id.endswith("_enabled")}
    assert list(switches) == [f"{a.name}_enabled" for a in ANALYZERS]
    assert switches["faces_enabled"] is False and switches["objects_enabled"] is True
    assert switches["landmarks_enabled"] is False


def test_an_old_flat_variable_still_works_and_the_log_names_the_new_one(monkeypatch, caplog):
    monkeypatch.setenv("RECOGNIZE_WORKER_MEMORY_MB", "300")
    monkeypatch.setenv("RECOGNIZE_LANDMARK_REGIONS", '["asia"]')
    with caplog.at_level(logging.WARNING, logger="ex_app.config"):
        settings = Settings()
        Settings()
    assert settings.worker.memory_mb == 300 and settings.landmarks.regions == ["asia"]
    lines = [r.getMessage() for r in caplog.records]
    assert sum("RECOGNIZE_WORKER_MEMORY_MB" in line for line in lines) == 1  # once a process
    assert any("RECOGNIZE_WORKER__MEMORY_MB" in line for line in lines), lines
    assert any("RECOGNIZE_LANDMARKS__REGIONS" in line for line in lines), lines


def test_nested_variables_are_read_and_win_over_the_flat_ones(monkeypatch):
    monkeypatch.setenv("RECOGNIZE_FACES__ENABLED", "false")
    monkeypatch.setenv("RECOGNIZE_FACES__EMBEDDER", "dlib")
    monkeypatch.setenv("RECOGNIZE_FACE_EMBEDDER", "sface")
    monkeypatch.setenv("RECOGNIZE_QUEUE__LEASE_SECONDS", "700")
    settings = Settings()
    assert settings.faces.enabled is False and settings.faces.embedder == "dlib"
    assert settings.queue.lease_seconds == 700
    with pytest.raises(ValueError, match="lease_seconds must exceed"):
        Settings(queue={"lease_seconds": 10, "file_time_limit_seconds": 20})


def test_flat_keywords_map_to_their_sections_and_win_over_the_sections():
    settings = Settings(face_embedder="dlib", max_image_side=800, faces={"min_score": 0.9},
                        threads=3, quiet_hours="22-6")
    assert settings.faces.embedder == "dlib" and settings.faces.min_score == 0.9
    assert settings.images.max_side == 800 and settings.inference.threads == 3
    assert settings.worker.quiet_hours == "22-6"
    assert Settings(**(settings.model_dump() | {"faces_enabled": "0"})).faces.enabled is False
    every = {name: getattr(getattr(Settings(), section), field)
             for name, (section, field) in config.FLAT_NAMES.items()}
    assert len(every) == 73 + 3  # every flat setting of the release before has a home; and the
    # sensitive filter's, whose flat names are its admin form's field ids


def test_a_worker_process_gets_the_settings_in_force(monkeypatch):
    monkeypatch.setenv("RECOGNIZE_FACES_ENABLED", "1")  # the ExApp's own, overridden below
    monkeypatch.setenv("RECOGNIZE_OBJECTS__TOP_K", "9")
    chosen = Settings(faces_enabled=False, landmarks={"enabled": True, "regions": ["europe"]},
                      worker={"memory_mb": 900})
    environment = worker_environment(chosen)
    for name in [n for n in os.environ if n.startswith("RECOGNIZE_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        if name.startswith("RECOGNIZE_"):
            monkeypatch.setenv(name, value)
    assert Settings() == chosen
    assert chosen.objects.top_k == 9
