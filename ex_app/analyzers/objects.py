"""Objects and scenes in a photo: an ImageNet-1k classifier (EfficientNet-Lite0) and its labels.

The classifier is a pure function of decoded RGB pixels and an already opened model session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.analyzers.results import Label
from ex_app.config import RULES_PATH
from ex_app.models.quantization import softmax
from ex_app.models.runtime import InferenceSession
from ex_app.tagging.rules import TagRules

RESIZE_SHORTER_SIDE = 256
CROP_SIDE = 224
# EfficientNet-Lite's normalisation, per channel, after scaling pixels to [0, 1].
MEAN, STD = 0.498, 0.502


def load_imagenet_labels(path: Path) -> list[tuple[str, str]]:
    """(WordNet id, name) per class index from a two-column TSV (imagenet.labels.tsv)."""
    rows = (line.split("\t", 1) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip())
    return [(wnid, name.strip()) for wnid, name in rows]


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 RGB → 3×224×224 float32: shorter side 256, centre crop 224, normalised."""
    height, width = rgb.shape[:2]
    scale = RESIZE_SHORTER_SIDE / min(height, width)
    size = (round(width * scale), round(height * scale))  # the shorter side becomes exactly 256
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, size, interpolation=interpolation)
    top, left = (size[1] - CROP_SIDE) // 2, (size[0] - CROP_SIDE) // 2
    crop = resized[top : top + CROP_SIDE, left : left + CROP_SIDE].astype(np.float32) / 255
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


class ObjectClassifier:
    """The top ImageNet classes of photos, best first."""

    def __init__(self, session: InferenceSession, labels: list[tuple[str, str]], top_k: int = 5,
                 min_score: float = 0.05):
        self._session, self._input = session, session.input_names[0]
        self.labels, self.top_k, self.min_score = labels, top_k, min_score

    def classify(self, rgb: np.ndarray) -> list[Label]:
        """Up to top_k labels scoring at least min_score, best first."""
        return self.classify_batch([rgb])[0]

    def classify_batch(self, images: list[np.ndarray]) -> list[list[Label]]:
        """classify() for several images in one model call."""
        if not images:
            return []
        batch = np.stack([preprocess(image) for image in images])
        (logits,) = self._session.run({self._input: batch})[:1]
        return [self._top_labels(row) for row in softmax(logits.astype(np.float32))]

    def _top_labels(self, probabilities: np.ndarray) -> list[Label]:
        best = np.argsort(probabilities)[::-1][: self.top_k]
        return [Label(*self.labels[i], float(probabilities[i]))
                for i in best if probabilities[i] >= self.min_score]


def classifier(pipeline: Pipeline) -> ObjectClassifier:
    """The pipeline's object classifier (shared with the video and landmark analyzers)."""
    s = pipeline.settings.objects
    labels = load_imagenet_labels(pipeline.models.path("imagenet_labels"))
    return ObjectClassifier(pipeline.session("efficientnet_lite0"), labels, s.top_k, s.min_score)


def tag_rules(pipeline: Pipeline) -> TagRules:
    """rules.yml: ImageNet labels to tags and categories."""
    return TagRules.load(RULES_PATH)


def labels(media: Media) -> list[Label]:
    """A photo's object labels, found once for the analyzers that use them."""
    return media.pipeline.part(classifier).classify(media.image.pixels)


def build(pipeline: Pipeline) -> Callable:
    rules = pipeline.part(tag_rules)

    def analyze(media: Media, result) -> list[str]:
        result.labels = media.once(labels)
        return rules.tags_for((label.id, label.score) for label in result.labels)

    return analyze
