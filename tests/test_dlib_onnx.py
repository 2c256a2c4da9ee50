"""The ONNX port of dlib's face-recognition ResNet gives dlib's own embeddings, faster."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
import onnx
import pytest
from PIL import Image

from ex_app.models.dlib_onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    DlibFormatError,
    chips_to_batch,
    convert_dlib_face_embedder,
    main,
    read_face_resnet,
)
from ex_app.models.runtime import InferenceSession, open_session

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DLIB_MODELS = Path(face_recognition_models.__file__).parent / "models"
EMBEDDER_DAT = DLIB_MODELS / "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_DAT = DLIB_MODELS / "shape_predictor_5_face_landmarks.dat"
# The sha256 of the ONNX file converted from face-recognition-models' .dat
# (sha256 55533b28…19da30); a model manifest entry for the derived file pins the same bytes.
ONNX_SHA256 = "428471a7f8d9672cd19f57dbefc2176c231f6f4e5d07f6d013f9b53edd73afba"
FACES_WANTED = 40  # LFW photos, one per identity; at least MIN_CHIPS must yield one face
MIN_CHIPS = 30
MAX_ABS_DIFFERENCE = 1e-3


def lfw_photos(faces_dir: Path, count: int) -> list[Path]:
    """The first LFW photo of each of the first ``count`` identities, in name order."""
    with open(faces_dir / "labels.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["path"])
    firsts: dict[str, Path] = {}
    for row in rows:
        if Path(row["path"]).name.startswith("lfw_"):
            firsts.setdefault(row["identity"], faces_dir / row["path"])
    return list(firsts.values())[:count]


@pytest.fixture(scope="module")
def chips(shared_data: Path) -> list[np.ndarray]:
    """Aligned 150×150 chips, made exactly as dlib's face-recognition examples make them."""
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(LANDMARKS_DAT))
    made = []
    for path in lfw_photos(shared_data / "faces", FACES_WANTED):
        image = np.asarray(Image.open(path).convert("RGB"))
        boxes = detector(image, 1)
        if len(boxes) == 1:
            made.append(
                dlib.get_face_chip(image, landmarks(image, boxes[0]), size=150, padding=0.25)
            )
    assert len(made) >= MIN_CHIPS
    return made


@pytest.fixture(scope="module")
def dlib_embedder() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(EMBEDDER_DAT))


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dlib_onnx") / "dlib_face_recognition_resnet_model_v1.onnx"
    convert_dlib_face_embedder(EMBEDDER_DAT, path)
    return path


@pytest.fixture(scope="module")
def session(onnx_path: Path) -> InferenceSession:
    return open_session(onnx_path, threads=1)


def test_embeddings_match_dlibs_own(chips, dlib_embedder, session):
    reference = np.array([np.array(dlib_embedder.compute_face_descriptor(chip)) for chip in chips])
    (embeddings,) = session.run({INPUT_NAME: chips_to_batch(chips)})

    assert embeddings.shape == (len(chips), 128) and embeddings.dtype == np.float32
    difference = float(np.abs(embeddings - reference).max())
    print(f"{len(chips)} chips: max |onnx - dlib| = {difference:.3g}")
    assert difference < MAX_ABS_DIFFERENCE
    # The chips are different faces, so agreeing on all of them is no accident.
    distances = np.linalg.norm(reference[:, None] - reference[None], axis=-1)
    assert distances[np.triu_indices(len(chips), 1)].min() > 0.2


def test_a_chip_gets_the_same_embedding_alone_or_in_a_batch(chips, session):
    batch = chips_to_batch(chips[:8])
    (together,) = session.run({INPUT_NAME: batch})
    alone = np.concatenate([session.run({INPUT_NAME: batch[i : i + 1]})[0] for i in range(8)])
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_graph_takes_raw_rgb_chips_with_a_free_batch(onnx_path):
    graph = onnx.load(str(onnx_path)).graph

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in graph.input] == [(INPUT_NAME, ["batch", 3, 150, 150])]
    assert [(v.name, dims(v)) for v in graph.output] == [(OUTPUT_NAME, ["batch", 128])]


def test_the_command_line_writes_the_same_pinned_bytes(onnx_path, tmp_path):
    again = tmp_path / "again.onnx"
    subprocess.run(
        [sys.executable, "-m", "ex_app.models.dlib_onnx", str(EMBEDDER_DAT), str(again)],
        check=True, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert again.read_bytes() == onnx_path.read_bytes()
    assert hashlib.sha256(again.read_bytes()).hexdigest() == ONNX_SHA256


def test_other_dlib_networks_are_refused(tmp_path, capsys):
    detector = DLIB_MODELS / "mmod_human_face_detector.dat"
    with pytest.raises(DlibFormatError, match="loss_mmod"):
        read_face_resnet(detector.read_bytes())

    with pytest.raises(SystemExit) as exit_info:
        main([str(detector), str(tmp_path / "detector.onnx")])
    assert exit_info.value.code == 1
    assert "loss_mmod" in capsys.readouterr().err
    assert not (tmp_path / "detector.onnx").exists()


def test_damaged_files_are_refused():
    data = EMBEDDER_DAT.read_bytes()
    with pytest.raises(DlibFormatError, match="ends at byte"):
        read_face_resnet(data[:-100])
    with pytest.raises(DlibFormatError, match="1 bytes left"):
        read_face_resnet(data + b"\0")


def test_one_thread_is_several_times_faster_than_dlib(chips, dlib_embedder, session):
    sample = chips[:4]
    batch = chips_to_batch(sample)
    session.run({INPUT_NAME: batch[:1]})  # warm-up
    start = time.perf_counter()
    for chip in sample:
        dlib_embedder.compute_face_descriptor(chip)
    dlib_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(len(sample)):
        session.run({INPUT_NAME: batch[i : i + 1]})
    onnx_seconds = time.perf_counter() - start
    assert onnx_seconds * 3 < dlib_seconds
