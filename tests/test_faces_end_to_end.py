"""Persons end to end: `recognize scan` and `recognize export --json` on labelled photos laid
out as a user's library (at most 8 per person, some persons with one photo, some portraits
grey, names that say nothing), scored against the identities (bench/faces_scan_quality.py
does the same on every identity)."""

from __future__ import annotations

import importlib.util

from PIL import Image

from conftest import REPO, export_json, run_cli

spec = importlib.util.spec_from_file_location(
    "faces_scan_quality", REPO / "bench" / "faces_scan_quality.py"
)
library = importlib.util.module_from_spec(spec)
spec.loader.exec_module(library)


def test_scan_and_export_give_pure_and_whole_persons(tmp_path, shared_data):
    photos = tmp_path / "Photos"
    truth = library.make_library(shared_data / "faces", photos, half="1", identities=25)
    assert len(set(truth.values())) == 25 and len(truth) > 100
    grey = sum(1 for name in truth if Image.open(photos / name).mode == "L")
    assert grey >= 10
    run_cli(tmp_path / "state", "scan", str(photos))
    scores = library.score_export(export_json(tmp_path / "state"), truth)
    assert scores["photos"] == len(truth)
    assert scores["precision"] >= 0.99, scores
    assert scores["f1"] >= 0.97, scores
