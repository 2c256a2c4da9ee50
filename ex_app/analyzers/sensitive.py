"""Sensitive photos: NudeNet's 320n body-part detector and the threshold that flags a photo.

The detector is a YOLOv8 network (``nudenet`` 3.4.2's ``320n.onnx``): one input ``images``
[batch, 3, 320, 320], RGB scaled to [0, 1], the photo letterboxed into the square (its longer
side fills it, black below and to the right, as NudeNet pads before resizing); one output
``output0`` [batch, 22, 2100]: per anchor a box (centre x, centre y, width, height in input
pixels) and 18 class scores already in [0, 1]. A photo is sensitive when one of the exposed
intimate-body classes scores at least the threshold after non-maximum suppression.
Pure: decoded RGB pixels and an opened model session in, a result out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.models.runtime import InferenceSession

INPUT_SIDE = 320
# The detector's classes, in its output order (after the four box values).
CLASSES = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)  # fmt: skip
# The classes that make a photo sensitive: exposed intimate parts. Bare feet, bellies,
# armpits and male chests (a beach, a swimming pool) do not.
EXPOSED_CLASSES = frozenset({
    "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
})  # fmt: skip
CANDIDATE_SCORE = 0.2  # anchors below this are not boxes at all (NudeNet's own cut)
NMS_IOU = 0.45  # boxes overlapping more than this keep only the best (class-agnostic)
# Above the highest exposed-class score of any ordinary photo measured (0.557: bench/README.md).
DEFAULT_MIN_SCORE = 0.6


@dataclass(frozen=True)
class BodyPart:
    """One detection, its box in the photo's own pixels (x, y, width, height)."""

    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass
class SensitiveResult:
    """Whether a photo is sensitive, its best exposed-class score, and every detection."""

    sensitive: bool
    score: float  # the highest score of an exposed class, 0 when none was found
    parts: list[BodyPart] = field(default_factory=list)


def letterbox(rgb: np.ndarray, side: int = INPUT_SIDE) -> tuple[np.ndarray, float]:
    """H×W×3 uint8 RGB → (1×3×side×side float32 in [0, 1], scale from photo to input pixels).

    The longer side is resized to ``side`` and the rest is padded with black below and to
    the right, so input coordinates are photo coordinates times the scale.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected H×W×3 RGB pixels, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = np.zeros((side, side, 3), dtype=np.float32)
    canvas[: size[1], : size[0]] = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    return (canvas / 255).transpose(2, 0, 1)[np.newaxis], scale


def decode(output: np.ndarray, scale: float, min_score: float = CANDIDATE_SCORE) -> list[BodyPart]:
    """One image's raw output (22 × anchors) → body parts after NMS, in photo pixels."""
    rows = np.asarray(output, dtype=np.float32).T
    if rows.ndim != 2 or rows.shape[1] != 4 + len(CLASSES):
        raise ValueError(f"unexpected detector output shape {np.shape(output)}")
    scores = rows[:, 4:]
    best = scores.argmax(axis=1)
    best_score = scores[np.arange(len(rows)), best]
    keep = best_score >= min_score
    centres, sizes = rows[keep, 0:2], rows[keep, 2:4]
    boxes = np.concatenate([centres - sizes / 2, sizes], axis=1) / scale
    kept_scores = best_score[keep]
    chosen = cv2.dnn.NMSBoxes(boxes.tolist(), kept_scores.tolist(), min_score, NMS_IOU)
    parts = [BodyPart(CLASSES[best[keep][i]], float(kept_scores[i]), tuple(map(float, boxes[i])))
             for i in np.asarray(chosen, dtype=int).reshape(-1)]
    return sorted(parts, key=lambda part: -part.score)


class SensitiveDetector:
    """Flags photos whose exposed-body detections reach a threshold."""

    def __init__(self, session: InferenceSession, threshold: float = DEFAULT_MIN_SCORE):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self._session, self._input, self.threshold = session, session.input_names[0], threshold

    def detect(self, rgb: np.ndarray) -> list[BodyPart]:
        """Every body part the detector finds (covered ones and faces too), best first."""
        blob, scale = letterbox(rgb)
        return decode(self._session.run({self._input: blob})[0][0], scale)

    def judge(self, rgb: np.ndarray) -> SensitiveResult:
        """Whether the photo is sensitive, with the score that decided it."""
        parts = self.detect(rgb)
        score = max((p.score for p in parts if p.label in EXPOSED_CLASSES), default=0.0)
        return SensitiveResult(sensitive=score >= self.threshold, score=score, parts=parts)


def build(pipeline: Pipeline) -> Callable:
    """The registry's analyzer: the admin-named tag on a sensitive photo, else none."""
    s = pipeline.settings
    detector = SensitiveDetector(pipeline.session("nudenet_320n"), s.sensitive.min_score)

    def analyze(media: Media, result) -> list[str]:
        return [s.sensitive.tag] if detector.judge(media.image.pixels).sensitive else []

    return analyze
