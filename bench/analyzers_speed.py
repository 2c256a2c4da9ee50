"""Images per second of the face analyzer and the object classifier on the shared real data.

Run from the project root: ``.venv/bin/python bench/analyzers_speed.py [--threads N]``.
Decoding is done before timing; only the analyzers are measured.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ex_app.analyzers.faces import FaceAnalyzer, embedder
from ex_app.analyzers.pipeline import Pipeline
from ex_app.analyzers.objects import ObjectClassifier, load_imagenet_labels
from ex_app.config import Settings
from ex_app.models.manifest import load_manifest
from ex_app.models.runtime import open_session
from ex_app.models.store import ModelStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "faces"
IMAGES = SHARED / "data" / "images"
MODELS = SHARED / "models"
STORE = Path(__file__).resolve().parents[1] / "build" / "bench-models"


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def labelled_face_photos(count: int) -> list[Path]:
    """`count` labelled face photos spread evenly over labels.csv (all sources)."""
    with open(FACES / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    paths = [FACES / r["path"] for r in rows if not r["identity"].startswith("__")]
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def images_per_second(run: Callable[[list[np.ndarray]], object], images: list[np.ndarray]) -> float:
    """Times run(images) after a short warm-up on the first few."""
    run(images[:4])
    start = time.perf_counter()
    run(images)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--faces", type=int, default=200, help="labelled face photos to use")
    args = parser.parse_args()

    store = ModelStore(STORE, load_manifest(), mirror=MODELS)
    settings = Settings(threads=args.threads)
    analyzer = FaceAnalyzer(
        store.path("face_detection_yunet"), embedder(Pipeline(settings, store)), threads=args.threads
    )
    face_photos = [load_rgb(path) for path in labelled_face_photos(args.faces)]
    faces_found: list[int] = []

    def analyze_all(images: list[np.ndarray]) -> None:
        faces_found[:] = [len(analyzer.analyze(image)) for image in images]

    rate = images_per_second(analyze_all, face_photos)
    print(
        f"faces (detect+align+embed): {rate:.1f} images/s, {len(face_photos)} labelled photos, "
        f"{sum(faces_found)} faces, threads={args.threads}"
    )

    classifier = ObjectClassifier(
        open_session(MODELS / "efficientnet_lite0.onnx", threads=args.threads),
        load_imagenet_labels(MODELS / "imagenet.labels.tsv"),
    )
    photos = [load_rgb(path) for path in sorted(IMAGES.glob("*.JPEG"))]
    for batch_size in (1, 8):

        def classify_all(images: list[np.ndarray], size: int = batch_size) -> None:
            for start in range(0, len(images), size):
                classifier.classify_batch(images[start : start + size])

        rate = images_per_second(classify_all, photos)
        print(
            f"objects (preprocess+classify): {rate:.1f} images/s, {len(photos)} ImageNet photos, "
            f"batch {batch_size}, threads={args.threads}"
        )


if __name__ == "__main__":
    main()
