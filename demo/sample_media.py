"""Build a small sample folder for `make demo` from the photos that scikit-image ships.

Used only on machines without ../shared/data: `python demo/sample_media.py FOLDER`.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

# Photos inside scikit-image's package data (no download): a person, animals, objects, a page.
SAMPLES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "horse.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "page.png",
    "hubble_deep_field.jpg",
)


def build(folder: Path) -> None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-image is not installed: pip install scikit-image")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        shutil.copy(data / name, folder / name)
    print(f"{len(SAMPLES)} sample photos in {folder}")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
