"""The face analyzer on real models and real, identity-labelled photos."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ex_app.analyzers.faces import (
    ARCFACE_TEMPLATE,
    Detection,
    DlibEmbedder,
    FaceAnalyzer,
    SFaceEmbedder,
    align_sface,
    frontality,
    similarity_transform,
)
from ex_app.analyzers.results import Face
from ex_app.models.runtime import OnnxSession
from ex_app.people.distances import EMBEDDER_DISTANCES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "faces"


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def labelled_faces() -> list[tuple[str, Path]]:
    """(identity, path) of every labelled face photo; group and no-face photos left out."""
    with open(FACES / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(r["identity"], FACES / r["path"]) for r in rows if not r["identity"].startswith("__")]


@pytest.fixture(scope="module")
def analyzer(model_store) -> FaceAnalyzer:
    """The production analyzer: YuNet and SFace in OpenCV's dnn module."""
    return FaceAnalyzer(
        model_store.path("face_detection_yunet"),
        SFaceEmbedder(model_store.path("face_recognition_sface")),
    )


def dlib_analyzer(model_store, embedder: str) -> FaceAnalyzer:
    return FaceAnalyzer(
        model_store.path("face_detection_yunet"),
        DlibEmbedder(model_store.path("dlib_face_landmarks_5"), model_store.path(embedder)),
    )


def test_the_onnx_embedder_gives_dlibs_own_embeddings(model_store):
    ours = dlib_analyzer(model_store, "dlib_face_embedder_onnx")
    theirs = dlib_analyzer(model_store, "dlib_face_embedder")
    image = load_rgb(FACES / "group" / "faceapi_bbt1.jpg")
    ours, theirs = ours.analyze(image), theirs.analyze(image)
    assert len(ours) == len(theirs) >= 3
    for a, b in zip(ours, theirs):
        assert np.abs(a.embedding - b.embedding).max() < 1e-4


def test_sface_alignment_is_opencvs(analyzer: FaceAnalyzer, model_store) -> None:
    """Our warp onto the ArcFace template equals OpenCV's FaceRecognizerSF.alignCrop."""
    recognizer = cv2.FaceRecognizerSF.create(str(model_store.path("face_recognition_sface")), "")
    image = load_rgb(FACES / "group" / "faceapi_bbt1.jpg")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    detections = analyzer.detect(image)
    assert len(detections) >= 3
    for detection in detections:
        row = np.concatenate([detection.box, detection.landmarks.ravel(), [detection.score]])
        theirs = cv2.cvtColor(recognizer.alignCrop(bgr, row.astype(np.float32)), cv2.COLOR_BGR2RGB)
        ours = align_sface(image, detection.landmarks)
        assert ours.shape == (112, 112, 3)
        assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 0.05


def test_similarity_transform_recovers_a_known_one() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = (ARCFACE_TEMPLATE - shift) @ np.linalg.inv(rotation).T
    matrix = similarity_transform(source, ARCFACE_TEMPLATE)
    assert np.allclose(matrix[:, :2], rotation) and np.allclose(source @ matrix[:, :2].T + matrix[:, 2], ARCFACE_TEMPLATE)


def test_sface_on_onnxruntime_gives_the_published_networks_vectors(analyzer, model_store) -> None:
    """The converted float32 graph (onnxruntime, batched) against the published file in
    OpenCV's dnn module, on the same aligned faces."""
    session = OnnxSession(model_store.path("face_recognition_sface_float32"))
    assert session.input_names == ["data"]  # the 29 unused inputs are gone
    batched = SFaceEmbedder(model_store.path("face_recognition_sface"), session=session)
    image = load_rgb(FACES / "group" / "faceapi_bbt1.jpg")
    detections = analyzer.detect(image)
    ours, published = batched.embed(image, detections), analyzer.embedder.embed(image, detections)
    assert ours.shape == published.shape == (len(detections), 128)
    assert np.abs(ours - published).max() < 1e-4
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_stored_box_and_landmarks_give_the_same_vector_again(analyzer) -> None:
    """Re-embedding works from what the store keeps: the box and YuNet's landmarks."""
    image = load_rgb(FACES / "group" / "faceapi_bbt1.jpg")
    faces = analyzer.analyze(image)
    stored = [Detection(f.box, f.score, np.asarray(f.landmarks, np.float32)) for f in faces]
    again = analyzer.embedder.embed(image, stored[::-1])[::-1]
    assert np.abs(again - np.stack([f.embedding for f in faces])).max() < 1e-5


def assert_geometry(face: Face, image: np.ndarray) -> None:
    """Box inside the image, landmarks inside the box, a 128-float embedding."""
    x, y, w, h = face.box
    height, width = image.shape[:2]
    assert 0 <= x and 0 <= y and w > 0 and h > 0
    assert x + w <= width and y + h <= height
    lx, ly = face.landmarks[:, 0], face.landmarks[:, 1]
    assert face.landmarks.shape == (5, 2)
    assert np.all((lx >= x) & (lx <= x + w) & (ly >= y) & (ly <= y + h))
    assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
    assert 0 <= face.quality <= 1 and 0 <= face.pose <= 1 and face.sharpness > 0


def test_detects_a_face_in_nearly_every_labelled_photo(analyzer: FaceAnalyzer) -> None:
    photos = labelled_faces()
    assert len(photos) > 1200
    found = [bool(analyzer.detect(load_rgb(path))) for _, path in photos]
    assert np.mean(found) >= 0.98


@pytest.mark.parametrize("name", sorted(p.name for p in (FACES / "noface").iterdir()))
def test_no_face_in_photos_without_people(analyzer: FaceAnalyzer, name: str) -> None:
    assert analyzer.analyze(load_rgb(FACES / "noface" / name)) == []


def test_group_photo_yields_several_distinct_faces(analyzer: FaceAnalyzer) -> None:
    image = load_rgb(FACES / "group" / "faceapi_bbt1.jpg")
    faces = analyzer.analyze(image)
    assert len(faces) >= 3
    for face in faces:
        assert_geometry(face, image)
    vectors = np.stack([face.embedding for face in faces])
    pairs = np.triu_indices(len(faces), 1)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)[pairs]
    assert min(distances) > EMBEDDER_DISTANCES["sface"].link  # different people: never linked


def test_close_up_portrait_filling_a_big_photo_is_found(analyzer: FaceAnalyzer) -> None:
    _, path = labelled_faces()[0]
    crop = Image.open(path).convert("RGB")
    image = np.asarray(crop.resize((1600, 1600), Image.Resampling.BICUBIC))
    faces = analyzer.analyze(image)
    assert len(faces) == 1
    assert_geometry(faces[0], image)
    assert faces[0].box[2] > 400  # the face, not a detail of it


def test_embeddings_group_by_identity(analyzer: FaceAnalyzer) -> None:
    by_identity: dict[str, list[Path]] = defaultdict(list)
    for identity, path in labelled_faces():
        by_identity[identity].append(path)
    eligible = sorted(i for i, paths in by_identity.items() if len(paths) >= 3)
    chosen = eligible[:: len(eligible) // 10][:10]  # spread over sources and names
    embeddings, labels = [], []
    for identity in chosen:
        for path in by_identity[identity][:3]:
            image = load_rgb(path)
            faces = analyzer.analyze(image)
            assert faces, path
            best = max(faces, key=lambda f: f.score)
            assert_geometry(best, image)
            embeddings.append(best.embedding)
            labels.append(identity)
    vectors, labels = np.stack(embeddings), np.array(labels)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    same = labels[:, None] == labels[None]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert distances[same & off_diagonal].mean() < distances[~same].mean()
    np.fill_diagonal(distances, np.inf)
    assert np.mean(labels[distances.argmin(axis=1)] == labels) >= 0.9


def test_blurred_face_has_lower_quality(analyzer: FaceAnalyzer) -> None:
    for _, path in labelled_faces()[::150]:
        image = load_rgb(path)
        (sharp,) = analyzer.analyze(image)
        sigma = sharp.box[2] / 30  # heavy for the face: a 3 px blur on a 90 px wide face
        (soft,) = analyzer.analyze(cv2.GaussianBlur(image, (0, 0), sigma))
        assert soft.sharpness < sharp.sharpness / 2, path
        assert soft.quality < sharp.quality, path


def test_pose_drops_as_the_nose_leaves_the_middle(analyzer: FaceAnalyzer) -> None:
    image = load_rgb(FACES / "yale_subject02" / "yale_subject02_normal.png")  # frontal by design
    (detection,) = analyzer.detect(image)
    assert frontality(detection.landmarks) > 0.8
    turned = detection.landmarks.copy()
    eye_distance = np.linalg.norm(turned[0] - turned[1])
    turned[2, 0] += 0.3 * eye_distance  # the nose tip moves towards one side, as in a turn
    assert frontality(turned) < frontality(detection.landmarks) - 0.3
