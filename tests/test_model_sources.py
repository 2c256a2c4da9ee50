"""Models from their real sources, with no mirror: the registry packages installed here and the
converters that run on their files; the converted models compute what the mirror's do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from ex_app.analyzers.objects import preprocess
from ex_app.models.manifest import load_manifest
from ex_app.models.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> ModelStore:
    """A store with no mirror: every file from a package or made by a converter."""
    return ModelStore(tmp_path_factory.mktemp("models"), load_manifest())


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_converted_efficientnet_gives_the_mirror_models_logits(converted, shared_data):
    photos = sorted((shared_data / "images").iterdir())[:8]
    rgb = [cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB) for photo in photos]
    batch = np.stack([preprocess(image) for image in rgb])
    ours = _session(converted.path("efficientnet_lite0")).run(None, {"x": batch})[0]
    mirror = _session(SHARED_MODELS / "efficientnet_lite0.onnx").run(None, {"x": batch})[0]

    assert ours.shape == mirror.shape == (len(photos), 1000)
    assert np.abs(ours - mirror).max() < 1e-3
    assert (ours.argmax(1) == mirror.argmax(1)).all()


@pytest.mark.parametrize("name", ["musicnn_msd", "musicnn_mtt"])
def test_converted_musicnn_gives_the_mirror_models_tags(converted, name):
    patches = np.abs(np.random.default_rng(7).normal(size=(4, 187, 96))).astype(np.float32) * 2
    ours = _session(converted.path(name)).run(None, {"melspec:0": patches})[0]
    mirror = _session(SHARED_MODELS / f"{name}.onnx").run(None, {"melspec:0": patches})[0]

    assert ours.shape == mirror.shape == (4, 50)
    assert np.abs(ours - mirror).max() < 1e-5


def test_the_packaged_yunet_finds_the_faces_the_mirror_yunet_finds(converted, shared_data):
    people = sorted((shared_data / "faces").iterdir())[:20]
    photos = [photo for person in people for photo in sorted(person.iterdir())[:2]]

    def detect(model: Path) -> list[np.ndarray]:
        detector = cv2.FaceDetectorYN.create(str(model), "", (320, 320), 0.6, 0.3, 5000)
        found = []
        for photo in photos:
            image = cv2.imread(str(photo))
            detector.setInputSize((image.shape[1], image.shape[0]))
            found.append(detector.detect(image)[1])
        return found

    ours = detect(converted.path("face_detection_yunet_int8bq"))
    mirror = detect(SHARED_MODELS / "face_detection_yunet.onnx")
    agree = [a is not None and b is not None and len(a) == len(b) for a, b in zip(ours, mirror)]
    assert sum(agree) >= 0.95 * len(photos)
    shifts = [np.abs(a[0, :4] - b[0, :4]).max() for a, b, ok in zip(ours, mirror, agree) if ok]
    assert np.median(shifts) < 3  # pixels, for faces about 100 px wide


def _recognize(data_dir: Path, mirror: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    env.pop("APP_PERSISTENT_STORAGE", None)
    command = [sys.executable, "-m", "ex_app", "--data-dir", str(data_dir),
               "--model-mirror", str(mirror), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=REPO)


def test_without_a_mirror_models_fetch_then_scan_gives_faces_persons_and_tags(
    tmp_path, shared_data
):
    """A fresh machine: no model file anywhere but in the installed registry packages."""
    empty_mirror = (tmp_path / "no-mirror").resolve()
    empty_mirror.mkdir()
    tree = tmp_path / "photos"
    tree.mkdir()
    for person in ("Colin_Powell", "Bill_Gates"):
        for photo in sorted((shared_data / "faces" / person).iterdir())[:4]:
            shutil.copy(photo, tree / photo.name)
    shark = shared_data / "images" / "n01491361_tiger_shark.JPEG"
    shutil.copy(shark, tree / shark.name)
    data_dir = tmp_path / "state"

    fetched = _recognize(data_dir, empty_mirror, "models", "fetch")
    paths = dict(line.split(": ", 1) for line in fetched.stdout.splitlines() if ": " in line)
    for name in ("face_detection_yunet", "face_recognition_sface", "efficientnet_lite0",
                 "imagenet_labels", "musicnn_msd", "musicnn_mtt_labels"):  # fmt: skip
        assert "shared" not in Path(paths[name]).parts, name
    assert str(data_dir / "models") in paths["efficientnet_lite0"]  # converted here
    # No network here: OpenCV Zoo's float32 YuNet cannot be had, its packaged fallback is used.
    assert "site-packages" in paths["face_detection_yunet"]
    assert Path(paths["face_detection_yunet"]).name == "face_detection_yunet_2023mar_int8bq.onnx"

    scanned = _recognize(data_dir, empty_mirror, "scan", str(tree))
    assert "9 files analyzed" in scanned.stdout
    stats = json.loads(_recognize(data_dir, empty_mirror, "stats", "--json").stdout)
    assert stats["faces"] >= 8 and stats["persons"] >= 2
    export = json.loads(_recognize(data_dir, empty_mirror, "export", "--json").stdout)
    files = {f["path"]: f for f in export["files"]}
    assert "shark" in json.dumps(files[shark.name]).lower()
