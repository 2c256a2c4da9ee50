"""Landmarks in photos: Google's landmark classifiers v1 (TFLite), one model per world region.

Each model takes one RGB photo, [1, 321, 321, 3] float32 in [0, 1] (size, type and any
quantization are read from the model), and scores its region's landmarks; its label map is a
CSV of ``id,name`` where id is the output index. The whole photo is resized to the input, as
the publisher's examples do (a centre crop would cut the tops off towers). Scores already in
[0, 1] are taken as probabilities; raw logits go through a softmax.

Which photos and which models: only photos whose object labels carry a landmark-worthy
category of rules.yml (:data:`LANDMARK_CATEGORIES`), as the PHP app does; and only the models
of the photo's country when its GPS position gives one (models/landmark_regions.yml), else
every enabled region's.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import get_args

import numpy as np
import yaml
from PIL import Image

from ex_app.analyzers import objects, places
from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.analyzers.registry import landmark_region_models
from ex_app.analyzers.results import Label
from ex_app.config import LANDMARK_REGIONS_PATH, LandmarkRegion
from ex_app.models.quantization import dequantize, quantize, softmax

REGIONS = get_args(LandmarkRegion)
LANDMARK_CATEGORIES = ("architecture", "scenery")  # rules.yml categories worth the models


def load_landmark_labels(path: Path) -> list[str]:
    """Landmark names by output index from the publisher's ``id,name`` CSV."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or {"id", "name"} - set(rows[0]):
        raise ValueError(f"{Path(path).name}: expected a CSV with columns id,name")
    names = {int(row["id"]): row["name"].strip() for row in rows}
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{Path(path).name}: ids are not 0..{len(names) - 1}")
    return [names[index] for index in range(len(names))]


def load_country_regions(path: Path) -> dict[str, tuple[str, ...]]:
    """Country code → the regions whose models know its landmarks."""
    table = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    unknown = set(table) - set(REGIONS)
    if unknown:
        raise ValueError(f"{Path(path).name}: unknown regions {sorted(unknown)}")
    regions: dict[str, tuple[str, ...]] = {}
    for region, codes in table.items():
        for code in codes:
            if not (isinstance(code, str) and len(code) == 2 and code.isupper()):
                raise ValueError(f"{Path(path).name}: {region}: {code!r} is not a country code")
            regions[code] = (*regions.get(code, ()), region)
    return regions


def regions_for(country_code: str | None, enabled: Iterable[str],
                table: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The enabled regions to search: the country's when it is known, else all of them."""
    enabled = tuple(enabled)
    if country_code is None or country_code not in table:
        return enabled
    return tuple(region for region in table[country_code] if region in enabled)


class LandmarkClassifier:
    """One region's model and its landmark names."""

    def __init__(self, region: str, model_path: Path, labels: list[str], threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.region, self.labels = region, labels
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3:
            raise ValueError(f"{region}: expected one image input [1, H, W, 3]")
        self._input = inputs[0]
        self.height, self.width = int(self._input["shape"][1]), int(self._input["shape"][2])
        scores = [d for d in self._interpreter.get_output_details()
                  if int(np.prod(d["shape"])) == len(labels)]
        if len(scores) != 1:
            raise ValueError(f"{region}: no output has one score per label ({len(labels)})")
        self._output = scores[0]

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """An RGB uint8 photo as the model's input tensor."""
        image = Image.fromarray(pixels).resize((self.width, self.height), Image.BILINEAR,
                                               reducing_gap=2.0)
        return quantize(np.asarray(image, dtype=np.float32)[None] / 255.0, self._input)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """One score in [0, 1] per landmark."""
        self._interpreter.set_tensor(self._input["index"], self.input_tensor(pixels))
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"]).reshape(-1)
        values = dequantize(raw, self._output)
        return values if values.min() >= 0 and values.max() <= 1 else softmax(values)

    def classify(self, pixels: np.ndarray, top_k: int, min_score: float) -> list[Label]:
        scores = self.scores(pixels)
        best = np.argsort(scores)[::-1][:top_k]
        return [Label(f"{self.region}:{i}", self.labels[i], float(scores[i]))
                for i in best if scores[i] >= min_score]


def find_landmarks(classifiers: Iterable[LandmarkClassifier], pixels: np.ndarray, top_k: int,
                   min_score: float) -> list[Label]:
    """The best landmarks over the regions' models, best first."""
    found = [label for c in classifiers for label in c.classify(pixels, top_k, min_score)]
    return sorted(found, key=lambda label: label.score, reverse=True)[:top_k]


def build(pipeline: Pipeline) -> Callable:
    """The classifiers of the enabled regions whose files are here, by region."""
    s, models = pipeline.settings, pipeline.models
    classifiers = {}
    for region in s.landmarks.regions:
        model, labels = landmark_region_models(region)
        if models.local_path(model) and models.local_path(labels):
            classifiers[region] = LandmarkClassifier(
                region, models.path(model), load_landmark_labels(models.path(labels)),
                threads=s.inference.threads)
    country_regions = load_country_regions(LANDMARK_REGIONS_PATH)
    rules = pipeline.part(objects.tag_rules)

    def analyze(media: Media, result) -> list[str]:
        """Names of the landmarks in a photo whose object labels suggest one, else nothing."""
        labels = media.once(objects.labels)
        categories = rules.categories_for((label.id, label.score) for label in labels)
        if not any(category in LANDMARK_CATEGORIES for category in categories):
            return []
        place = media.once(places.place)
        regions = regions_for(place.country_code if place else None, classifiers, country_regions)
        found = find_landmarks([classifiers[region] for region in regions], media.image.pixels,
                               s.landmarks.top_k, s.landmarks.min_score)
        return list(dict.fromkeys(label.name for label in found))

    return analyze
