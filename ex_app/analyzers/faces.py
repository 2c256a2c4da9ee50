"""Faces in a photo: YuNet finds them, an embedder turns each into 128 numbers.

Two embedders, chosen by the ``faces.embedder`` setting (:data:`EMBEDDERS`); both work from a
face's box and YuNet's five landmarks, so stored faces can be embedded again without being
detected again (:meth:`FaceEmbedder.embed`):

- **sface** (the default): OpenCV Zoo's SFace, a margin-trained network. Each face is warped
  by a similarity transform of its five landmarks onto the ArcFace 112×112 template; the
  vector is L2-normalised, so Euclidean distances between faces are sqrt(2 − 2·cosine). It runs
  in OpenCV's dnn module on CPUs (faster here than onnxruntime, and on every processor), and
  through onnxruntime on the float32 graph (``ex_app.models.sface_onnx``) where onnxruntime
  has a GPU.
- **dlib**: dlib's 5-point landmarks align a 150×150 chip for dlib's ResNet, run as our ONNX
  port (``ex_app.models.dlib_onnx``, same output within 1e-6) or, given dlib's ``.dat``, in
  dlib's own code. Its raw descriptors are not normalised (norm 1.3–1.7).

Each face also gets a quality score. The analyzer is a pure function of decoded RGB pixels;
model files are opened once, in the constructors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np

from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.analyzers.results import Face, StoredFace
from ex_app.models.dlib_onnx import chips_to_batch
from ex_app.models.runtime import OnnxSession, onnx_providers, open_session, resolve_engine

SFACE, DLIB = "sface", "dlib"
EMBEDDERS = (SFACE, DLIB)
PEOPLE_TAG = "People"  # given to every photo with a face

# YuNet misses faces that fill a tiny image (ORL's 23×28 crops) and, more and more often,
# faces over about 250 detector pixels (LFW crops scaled so the face is 300 px: 86% found;
# 450 px: 74%). So small images are upscaled until their shorter side is FINE_MIN_SIDE, and
# bigger images are searched a second time scaled down to a longer side of COARSE_SIDE;
# detections of both passes are merged by non-maximum suppression.
FINE_MIN_SIDE = 256
COARSE_SIDE = 320
COARSE_FROM_SIDE = 480  # the coarse pass runs when the fine pass's longer side reaches this
FINE_MAX_SIDE = 1920  # upscaling stops here, so a thin strip cannot grow without bound
NMS_IOU = 0.3

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # around the landmarks of dlib's 150×150 chips, as dlib was trained
SHARPNESS_SIDE = 64  # the face box is resized to this square before measuring sharpness

# Constants of face_quality's components.
SCORE_FLOOR, SCORE_FULL = 0.5, 0.95
SIZE_FULL = 100.0  # shorter box side in pixels at which a face is "big enough"
SHARPNESS_HALF = 100.0  # box_sharpness that maps to 0.5


# The ArcFace 112×112 template SFace was trained on, in YuNet's landmark order: the eye and
# mouth corner on the image's left first (the person's right), then the other, nose between.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]],
    dtype=np.float64)
SFACE_SIZE = 112
SFACE_BATCH = 16  # faces per network call: more faces in one photo go in several calls


@dataclass
class Detection:
    """What YuNet reports for one face, before alignment and embedding."""

    box: tuple[float, float, float, float]  # x, y, w, h in input pixels, clipped to the image
    score: float
    landmarks: np.ndarray  # 5×2 float32, same order as Face.landmarks


class FaceEmbedder(Protocol):
    """Aligns and embeds the faces of one RGB image, from their boxes and YuNet landmarks."""

    name: str  # one of EMBEDDERS: what each stored face records

    def embed(self, rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        """An N×128 float32 array, one row per detection."""
        ...


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 rotation, uniform scale and shift that best maps source points onto target
    points in the least-squares sense (Umeyama 1991)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    s, t = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(t.T @ s / len(source))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    variance = (s**2).sum() / len(source)
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_sface(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112×112 RGB face SFace expects: the landmarks warped onto the ArcFace template."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    return cv2.warpAffine(rgb, matrix, (SFACE_SIZE, SFACE_SIZE), flags=cv2.INTER_LINEAR)


class SFaceEmbedder:
    """SFace on aligned 112×112 faces, in OpenCV's dnn unless given an onnxruntime session."""

    name = SFACE

    def __init__(self, path: Path, session=None):
        self._session = session
        self._net = None if session is not None else cv2.dnn.readNet(str(path))

    def embed(self, rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        if not detections:
            return np.zeros((0, 128), dtype=np.float32)
        faces = np.stack([align_sface(rgb, d.landmarks) for d in detections])
        batch = faces.transpose(0, 3, 1, 2).astype(np.float32)  # RGB 0..255, NCHW
        rows = [self._run(batch[i : i + SFACE_BATCH]) for i in range(0, len(batch), SFACE_BATCH)]
        vectors = np.concatenate(rows).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run({"data": batch})[0]
        self._net.setInput(batch, "data")
        return self._net.forward().reshape(len(batch), -1)


class DlibEmbedder:
    """dlib's 5-point landmarks, 150×150 chips and ResNet (our ONNX port, or dlib's .dat)."""

    name = DLIB

    def __init__(self, landmarks_path: Path, embedder_path: Path, threads: int = 1):
        self._shape_predictor = dlib.shape_predictor(str(landmarks_path))
        self._embed = load_dlib_embedder(Path(embedder_path), threads)

    def embed(self, rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        if not detections:
            return np.zeros((0, 128), dtype=np.float32)
        shapes = dlib.full_object_detections()
        for detection in detections:
            x, y, w, h = detection.box
            rect = dlib.rectangle(round(x), round(y), round(x + w), round(y + h))
            shapes.append(self._shape_predictor(rgb, rect))
        chips = dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.asarray(self._embed([np.asarray(chip) for chip in chips]), dtype=np.float32)


class FaceAnalyzer:
    """Detects, aligns, embeds and rates the faces in an RGB image."""

    def __init__(self, detector_path: Path, embedder: FaceEmbedder, min_score: float = 0.8,
                 min_size: int = 16, threads: int = 1):
        self.min_score, self.min_size, self.embedder = min_score, min_size, embedder
        # OpenCV's thread count is process-wide; YuNet runs on OpenCV's DNN module, whose
        # OpenCV 5 graph engine warns at every detector creation about targets it ignores.
        cv2.setNumThreads(threads)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        self._detector = cv2.FaceDetectorYN.create(
            str(detector_path), "", (320, 320), min_score, NMS_IOU, 5000)

    def analyze(self, rgb: np.ndarray) -> list[Face]:
        """All faces of at least min_score and min_size in an H×W×3 uint8 RGB image."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        detections = self.detect(rgb)
        if not detections:
            return []
        embeddings = self.embedder.embed(rgb, detections)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = []
        for detection, embedding in zip(detections, embeddings):
            sharpness = box_sharpness(grey, detection.box)
            pose = frontality(detection.landmarks)
            quality = face_quality(detection.score, min(detection.box[2:]), sharpness, pose)
            faces.append(Face(detection.box, detection.score, detection.landmarks, quality,
                              sharpness, pose, np.asarray(embedding, dtype=np.float32)))
        return faces

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The faces YuNet finds at min_score and min_size, without alignment or embedding."""
        height, width = rgb.shape[:2]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        rows = [self._detect_at(bgr, scale) for scale in detection_scales(width, height)]
        found = np.concatenate(rows)
        if not len(found):
            return []
        boxes, scores = found[:, :4].tolist(), found[:, 14].tolist()
        keep = cv2.dnn.NMSBoxes(boxes, scores, self.min_score, NMS_IOU)
        results = []
        for row in found[np.asarray(keep, dtype=int).reshape(-1)]:
            x0, y0 = max(row[0], 0.0), max(row[1], 0.0)
            x1, y1 = min(row[0] + row[2], width), min(row[1] + row[3], height)
            if min(x1 - x0, y1 - y0) < self.min_size:
                continue
            box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
            landmarks = row[4:14].reshape(5, 2).astype(np.float32)
            results.append(Detection(box, float(row[14]), landmarks))
        return results

    def _detect_at(self, bgr: np.ndarray, scale: float) -> np.ndarray:
        """YuNet's rows (x, y, w, h, 5 landmarks, score) at one scale, in input pixels."""
        if scale != 1.0:
            size = (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            bgr = cv2.resize(bgr, size, interpolation=interpolation)
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._detector.detect(bgr)
        if rows is None:
            return np.zeros((0, 15), dtype=np.float32)
        rows = rows.copy()
        rows[:, :14] /= scale
        return rows


Embedder = Callable[[Sequence[np.ndarray]], np.ndarray]


def load_dlib_embedder(path: Path, threads: int) -> Embedder:
    """150×150 RGB chips → N×128 embeddings, by the ONNX port (.onnx) or dlib itself (.dat)."""
    if path.suffix == ".onnx":
        session = open_session(path, threads=threads)
        return lambda chips: session.run({"chips": chips_to_batch(chips)})[0]
    model = dlib.face_recognition_model_v1(str(path))
    return lambda chips: np.asarray(model.compute_face_descriptor(list(chips)), dtype=np.float32)


def detection_scales(width: int, height: int) -> list[float]:
    """The scales YuNet looks at an image at: a fine pass, plus a coarse one for big images."""
    upscale = min(FINE_MIN_SIDE / min(width, height), FINE_MAX_SIDE / max(width, height))
    fine = max(1.0, upscale)
    scales = [fine]
    if max(width, height) * fine >= COARSE_FROM_SIDE:
        scales.append(COARSE_SIDE / max(width, height))
    return scales


def box_sharpness(grey: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Variance of the Laplacian of the face box resized to 64×64: low for blurred faces.

    Measured at a fixed size so that values compare across face sizes; tiny faces, upscaled
    smoothly, come out soft, as they are.
    """
    x, y, w, h = (round(v) for v in box)
    crop = grey[y : y + max(h, 1), x : x + max(w, 1)]
    interpolation = cv2.INTER_AREA if crop.shape[1] > SHARPNESS_SIDE else cv2.INTER_LINEAR
    square = cv2.resize(crop, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=interpolation)
    return float(cv2.Laplacian(square, cv2.CV_64F).var())


def frontality(landmarks: np.ndarray) -> float:
    """1 for a frontal face, towards 0 as it turns: symmetry of the nose between eyes and mouth."""
    right_eye, left_eye, nose, right_mouth, left_mouth = landmarks.astype(np.float64)

    def ratio(a: np.ndarray, b: np.ndarray) -> float:
        da, db = np.linalg.norm(a - nose), np.linalg.norm(b - nose)
        return float(min(da, db) / max(da, db, 1e-6))

    return ratio(right_eye, left_eye) * ratio(right_mouth, left_mouth)


def face_quality(score: float, size: float, sharpness: float, pose: float) -> float:
    """A face's fitness for recognition, 0..1: the geometric mean of four components.

    - detection: (score − 0.5) / 0.45, clipped to 0..1 (YuNet's 0.95 and above count as 1)
    - size: shorter box side / 100 px, clipped to 0..1
    - sharpness: s / (s + 100), s = :func:`box_sharpness` (LFW's news photos: median about
      390; 100 after a Gaussian blur of σ = face width / 60; 30 after σ = width / 30)
    - pose: :func:`frontality`
    Any component at 0 makes the quality 0.
    """
    components = (
        np.clip((score - SCORE_FLOOR) / (SCORE_FULL - SCORE_FLOOR), 0.0, 1.0),
        np.clip(size / SIZE_FULL, 0.0, 1.0),
        sharpness / (sharpness + SHARPNESS_HALF),
        np.clip(pose, 0.0, 1.0))
    return float(np.prod(components) ** (1 / len(components)))


def embedder(pipeline: Pipeline) -> FaceEmbedder:
    """The configured face embedder on this machine's best engine (see the module text)."""
    settings, models = pipeline.settings, pipeline.models
    onnx = resolve_engine(settings.inference.engine) == "onnx"
    threads = settings.inference.threads
    if settings.faces.embedder == SFACE:
        session = None
        if onnx and onnx_providers()[0] != "CPUExecutionProvider":
            session = OnnxSession(models.path("face_recognition_sface_float32"), threads)
        return SFaceEmbedder(models.path("face_recognition_sface"), session=session)
    return DlibEmbedder(models.path("dlib_face_landmarks_5"),
                        models.path("dlib_face_embedder_onnx" if onnx else "dlib_face_embedder"),
                        threads)


def face_analyzer(pipeline: Pipeline) -> FaceAnalyzer:
    """The pipeline's face analyzer (shared with the video analyzer)."""
    s = pipeline.settings
    return FaceAnalyzer(pipeline.models.path("face_detection_yunet"), pipeline.part(embedder),
                        s.faces.min_score, s.faces.min_size, s.inference.threads)


def to_original_pixels(face: Face, scale: float) -> Face:
    """The face with box and landmarks mapped from decoded to original image pixels."""
    if scale == 1.0:
        return face
    x, y, w, h = face.box
    face.box = (x / scale, y / scale, w / scale, h / scale)
    face.landmarks = np.asarray(face.landmarks, dtype=np.float32) / scale
    return face


def build(pipeline: Pipeline) -> Callable:
    analyzer = pipeline.part(face_analyzer)

    def analyze(media: Media, result) -> list[str]:
        image = media.image
        result.faces = [to_original_pixels(f, image.scale) for f in analyzer.analyze(image.pixels)]
        result.embedder = analyzer.embedder.name
        return [PEOPLE_TAG] if result.faces else []

    return analyze


def embed_again(media: Media, stored: Sequence[StoredFace]) -> tuple[dict[int, np.ndarray], str]:
    """New vectors for a photo's stored faces (box and landmarks in the file's pixels), by
    stored face id, and the embedder's name."""
    embed = media.pipeline.part(embedder)
    if not stored:
        return {}, embed.name
    image = media.image
    detections = [Detection(tuple(float(v) * image.scale for v in face.box), face.score,
                            np.asarray(face.landmarks, dtype=np.float32) * image.scale)
                  for face in stored]
    vectors = embed.embed(np.ascontiguousarray(image.pixels), detections)
    return {face.id: vector for face, vector in zip(stored, vectors)}, embed.name
