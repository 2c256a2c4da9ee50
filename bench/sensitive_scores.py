"""The sensitive-photo filter on ordinary photos: the highest exposed-class scores, how many
photos each threshold would flag, and the time per photo.

Run from the project root: ``.venv/bin/python bench/sensitive_scores.py [--top N]``.
Every photo of the shared data (ImageNet samples and the face sets) goes through NudeNet's
320n detector as the analyzer runs it; none of them shows nudity, so every flag is a false alarm.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2

from ex_app.analyzers.sensitive import DEFAULT_MIN_SCORE, EXPOSED_CLASSES, SensitiveDetector
from ex_app.config import Settings
from ex_app.models.manifest import load_manifest
from ex_app.models.runtime import open_session
from ex_app.models.store import ModelStore

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".gif", ".bmp"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="photos listed, highest score first")
    args = parser.parse_args()
    settings = Settings()
    store = ModelStore(settings.models_dir, load_manifest(), settings.model_mirror)
    detector = SensitiveDetector(open_session(store.path("nudenet_320n"), threads=1))
    photos = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in SUFFIXES)
    scores: list[tuple[float, str, str]] = []
    elapsed = 0.0
    for photo in photos:
        bgr = cv2.imread(str(photo))
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        start = time.perf_counter()
        result = detector.judge(rgb)
        elapsed += time.perf_counter() - start
        exposed = [p for p in result.parts if p.label in EXPOSED_CLASSES]
        label = exposed[0].label if exposed else "-"
        scores.append((result.score, label, str(photo.relative_to(DATA))))
    scores.sort(reverse=True)
    print(f"{len(scores)} photos, {1000 * elapsed / len(scores):.1f} ms per photo (1 thread)")
    for threshold in (0.3, 0.4, 0.5, DEFAULT_MIN_SCORE, 0.7):
        flagged = sum(score >= threshold for score, _, _ in scores)
        mark = " (default)" if threshold == DEFAULT_MIN_SCORE else ""
        print(f"threshold {threshold:.2f}{mark}: {flagged} flagged")
    for score, label, name in scores[: args.top]:
        print(f"{score:.3f}  {label:24}  {name}")


if __name__ == "__main__":
    main()
