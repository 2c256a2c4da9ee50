"""End to end through the `recognize` command: real photos, real models, a real database."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SHARED_MODELS, export_json, run_cli, write_oversized_png

NOFACE_TRAPS = ["skimage_chelsea.png", "skimage_coffee.png", "skimage_horse.png"]


@pytest.fixture(scope="module")
def imagenet_scan(tmp_path_factory, shared_data):
    data_dir = tmp_path_factory.mktemp("imagenet-state")
    first = run_cli(data_dir, "scan", str(shared_data / "images"))
    return data_dir, first.stdout


def test_every_photo_gets_labels_and_the_best_label_is_the_true_class(imagenet_scan):
    data_dir, _ = imagenet_scan
    files = export_json(data_dir)["files"]
    assert len(files) == 100
    assert all(f["status"] == "done" and f["labels"] for f in files)
    correct = sum(f["labels"][0]["id"] == f["path"].split("_")[0] for f in files)
    assert correct >= 85, f"top-1 right for only {correct} of 100"
    tagged = sum(bool(f["tags"]) for f in files)
    assert tagged >= 80, f"only {tagged} of 100 photos got a tag"


def test_a_second_scan_processes_nothing(imagenet_scan, shared_data):
    data_dir, first_output = imagenet_scan
    assert "100 new" in first_output and "100 files analyzed" in first_output
    second = run_cli(data_dir, "scan", str(shared_data / "images")).stdout
    assert "0 new, 0 changed, 0 removed, 100 unchanged; 0 files analyzed" in second


def test_stats_and_progress_agree_with_the_export(imagenet_scan):
    data_dir, _ = imagenet_scan
    import json

    stats = json.loads(run_cli(data_dir, "stats", "--json").stdout)
    assert stats["files"] == 100 and stats["by_status"] == {"done": 100}
    progress = json.loads(run_cli(data_dir, "progress", "--json").stdout)
    assert {p["analyzer"]: (p["done"], p["pending"]) for p in progress} == {
        "faces": (100, 0),
        "objects": (100, 0),
        "places": (100, 0),
    }


@pytest.fixture(scope="module")
def faces_scan(tmp_path_factory, shared_data):
    data_dir = tmp_path_factory.mktemp("faces-state")
    run_cli(data_dir, "scan", str(shared_data / "faces"))
    with open(shared_data / "faces" / "labels.csv") as stream:
        identities = {row["path"]: row["identity"] for row in csv.DictReader(stream)}
    return export_json(data_dir), identities


def test_a_face_is_found_in_nearly_every_labelled_face_photo(faces_scan):
    export, identities = faces_scan
    labelled = [f for f in export["files"] if not identities[f["path"]].startswith("__")]
    with_face = [f for f in labelled if f["faces"]]
    assert len(labelled) >= 1200
    assert len(with_face) / len(labelled) >= 0.98


def test_no_face_in_the_photos_without_people(faces_scan):
    export, _ = faces_scan
    by_path = {f["path"]: f for f in export["files"]}
    for name in NOFACE_TRAPS:
        assert by_path[f"noface/{name}"]["faces"] == [], name


def test_first_grouping_makes_mostly_pure_persons(faces_scan):
    export, identities = faces_scan
    members: dict[int, list[str]] = {}
    for f in export["files"]:
        identity = identities[f["path"]]
        if identity.startswith("__"):
            continue
        for face in f["faces"]:
            if face["person"] is not None:
                members.setdefault(face["person"], []).append(identity)
    assert len(members) >= 50
    assigned = sum(len(m) for m in members.values())
    majority = sum(max(m.count(i) for i in set(m)) for m in members.values())
    assert majority / assigned >= 0.95, f"purity {majority / assigned:.3f}"


def test_marked_folders_are_left_out_and_broken_files_are_errors(tmp_path, shared_data):
    tree = tmp_path / "tree"
    photos = sorted((shared_data / "images").iterdir())[:4]
    for photo in photos[:2]:
        (tree / "visible").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tree / "visible" / photo.name)
    hidden = tree / "visible" / "private"
    (hidden / "deeper").mkdir(parents=True)
    (hidden / ".noimage").write_bytes(b"")
    shutil.copy(photos[2], hidden / photos[2].name)
    shutil.copy(photos[3], hidden / "deeper" / photos[3].name)
    broken = tree / "broken"
    broken.mkdir()
    jpeg = photos[0].read_bytes()
    (broken / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "notes.jpg").write_text("this is not a picture\n")
    write_oversized_png(broken / "huge.png")

    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    files = {f["path"]: f for f in export_json(data_dir)["files"]}

    assert not [p for p in files if p.startswith("visible/private")]
    assert {p for p in files if p.startswith("visible/")} == {f"visible/{p.name}" for p in photos[:2]}
    for path in ("visible/" + photos[0].name, "visible/" + photos[1].name):
        assert files[path]["status"] == "done" and files[path]["labels"]
    expected_words = {
        "broken/truncated.jpg": "truncated",
        "broken/empty.jpg": "empty",
        "broken/notes.jpg": "not an image",
        "broken/huge.png": "too large",
    }
    for path, word in expected_words.items():
        assert files[path]["status"] == "error", path
        assert word in files[path]["error"].lower(), (path, files[path]["error"])


def _canonical(export: dict) -> list:
    """The export with person ids replaced by the sorted face places of their person."""
    places: dict[int, list] = {}
    for f in export["files"]:
        for face in f["faces"]:
            if face["person"] is not None:
                places.setdefault(face["person"], []).append((f["path"], tuple(face["box"])))
    person_key = {person: tuple(sorted(p)) for person, p in places.items()}
    return [
        (
            f["path"],
            f["status"],
            f["error"],
            tuple(f["tags"]),
            tuple((label["id"], label["score"]) for label in f["labels"]),
            tuple((tuple(face["box"]), face["score"], person_key.get(face["person"])) for face in f["faces"]),
        )
        for f in export["files"]
    ]


def _done_files(database: Path) -> int:
    try:
        with sqlite3.connect(database, timeout=1) as connection:
            return connection.execute(
                "SELECT count(DISTINCT file_id) FROM tasks WHERE status != 'pending'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet


def test_a_scan_killed_halfway_and_run_again_ends_like_an_uninterrupted_one(tmp_path, shared_data):
    tree = tmp_path / "tree"
    tree.mkdir()
    for photo in sorted((shared_data / "images").iterdir())[:16]:
        shutil.copy(photo, tree / photo.name)
    for identity in ("Colin_Powell", "Hugh_Grant", "Bill_Gates"):
        (tree / identity).mkdir()
        for photo in sorted((shared_data / "faces" / identity).iterdir())[:6]:
            shutil.copy(photo, tree / identity / photo.name)
    (tree / "empty.jpg").write_bytes(b"")
    total = len([p for p in tree.rglob("*") if p.is_file()])

    uninterrupted = tmp_path / "uninterrupted"
    run_cli(uninterrupted, "scan", str(tree))

    killed = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ex_app", "--data-dir", str(killed), "--model-mirror",
         str(SHARED_MODELS), "scan", str(tree)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while _done_files(killed / "recognize.db") < total // 2 and time.monotonic() < deadline:
        assert process.poll() is None, "the scan ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_at_kill = _done_files(killed / "recognize.db")
    assert 0 < done_at_kill < total

    rerun = run_cli(killed, "scan", str(tree)).stdout
    assert f"{total - done_at_kill} files analyzed" in rerun
    assert _canonical(export_json(killed)) == _canonical(export_json(uninterrupted))


def test_unsure_faces_never_seed_a_person(faces_scan):
    export, _ = faces_scan
    faces = [face for f in export["files"] for face in f["faces"]]
    assert any(face["unsure"] for face in faces)
    sure_faces: dict[int, int] = {}
    for face in faces:
        if face["person"] is not None:
            sure_faces.setdefault(face["person"], 0)
            sure_faces[face["person"]] += not face["unsure"]
    assert sure_faces and min(sure_faces.values()) >= 2


def test_a_photo_with_gps_gets_its_place_as_tags(tmp_path, shared_data):
    from test_places import gps_ifd, with_gps

    tree = tmp_path / "tree"
    tree.mkdir()
    source = shared_data / "images" / "n02980441_castle.JPEG"
    with_gps(source, tree / "castle.jpg", gps_ifd(48.8566, 2.3522), "JPEG")
    shutil.copy(source, tree / "no-gps.jpg")
    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    tags = {f["path"]: f["tags"] for f in export_json(data_dir)["files"]}
    assert {"Paris", "France"} <= set(tags["castle.jpg"])
    assert "France" not in tags["no-gps.jpg"]
    assert "Building" in tags["castle.jpg"]


def test_songs_get_their_genre_and_a_broken_song_is_an_error(tmp_path, shared_data):
    tree = tmp_path / "tree"
    shutil.copytree(shared_data / "music", tree)
    (tree / "broken.mp3").write_bytes(b"ID3" + bytes(range(256)) * 20)
    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    files = {f["path"]: f for f in export_json(data_dir)["files"]}
    assert files["TRWJAZW128F42760DD_test.mp3"]["tags"] == ["Blues"]
    assert files["joram-moments_of_clarity-08-solipsism-59-88.mp3"]["tags"] == ["Electronic"]
    assert files["broken.mp3"]["status"] == "error" and files["broken.mp3"]["error"]
