"""The object classifier on the real EfficientNet-Lite0 model and 100 real ImageNet photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ex_app.analyzers.objects import ObjectClassifier, load_imagenet_labels
from ex_app.analyzers.results import Label
from ex_app.models.runtime import open_session

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODEL = SHARED / "models" / "efficientnet_lite0.onnx"
LABELS = SHARED / "models" / "imagenet.labels.tsv"
PHOTOS = sorted((SHARED / "data" / "images").glob("*.JPEG"))


def true_class(path: Path) -> str:
    """The WordNet id a sample photo is named after: <wnid>_<name>.JPEG."""
    return path.name.split("_", 1)[0]


def top5_accuracy(results: list[list[Label]]) -> float:
    """Share of PHOTOS whose true class is among their labels."""
    hits = [
        true_class(path) in {label.id for label in labels} for labels, path in zip(results, PHOTOS)
    ]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def classifier() -> ObjectClassifier:
    return ObjectClassifier(open_session(MODEL), load_imagenet_labels(LABELS), top_k=5, min_score=0)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in PHOTOS]


def test_labels_are_the_thousand_imagenet_classes() -> None:
    labels = load_imagenet_labels(LABELS)
    assert len(labels) == 1000
    assert len({wnid for wnid, _ in labels}) == 1000
    assert all(wnid.startswith("n") and len(wnid) == 9 and name for wnid, name in labels)


def test_accuracy_on_imagenet_photos(
    classifier: ObjectClassifier, photos: list[np.ndarray]
) -> None:
    assert len(photos) == 100
    results = classifier.classify_batch(photos)
    top1 = np.mean([labels[0].id == true_class(path) for labels, path in zip(results, PHOTOS)])
    assert top1 >= 0.85
    assert top5_accuracy(results) >= 0.95


def test_batch_and_single_agree(classifier: ObjectClassifier, photos: list[np.ndarray]) -> None:
    sample = photos[:8]
    batched = classifier.classify_batch(sample)
    for image, in_batch in zip(sample, batched):
        alone = classifier.classify(image)
        assert [label.id for label in alone] == [label.id for label in in_batch]
        np.testing.assert_allclose(
            [label.score for label in alone], [label.score for label in in_batch], atol=1e-4
        )


def test_labels_come_best_first_within_the_limits(photos: list[np.ndarray]) -> None:
    classifier = ObjectClassifier(
        open_session(MODEL), load_imagenet_labels(LABELS), top_k=3, min_score=0.1
    )
    for labels in classifier.classify_batch(photos[:20]):
        scores = [label.score for label in labels]
        assert len(labels) <= 3
        assert all(score >= 0.1 for score in scores)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) <= 1.0 + 1e-6


def test_strips_and_thumbnails_are_still_recognised(
    classifier: ObjectClassifier, photos: list[np.ndarray]
) -> None:
    """Odd shapes go through the same resize and crop; many are still right (60%, 56% here)."""
    strips = [image[image.shape[0] * 3 // 8 : image.shape[0] * 5 // 8] for image in photos]
    thumbnails = [np.asarray(Image.fromarray(image).resize((64, 48))) for image in photos]
    for variants in (strips, thumbnails):
        assert top5_accuracy(classifier.classify_batch(variants)) >= 0.4
