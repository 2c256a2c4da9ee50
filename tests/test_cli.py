"""The `recognize` command's settings, resets and model commands."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, export_json, run_cli

from ex_app.config import Settings


def test_settings_come_from_prefixed_variables_and_flags_win(monkeypatch, tmp_path):
    monkeypatch.setenv("APP_PERSISTENT_STORAGE", str(tmp_path / "appapi"))
    assert Settings().data_dir == tmp_path / "appapi"
    monkeypatch.setenv("RECOGNIZE_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("RECOGNIZE_IMAGES__MAX_SIDE", "800")
    settings = Settings()
    assert settings.data_dir == tmp_path / "env" and settings.images.max_side == 800
    assert Settings(data_dir=tmp_path / "flag").data_dir == tmp_path / "flag"


def test_models_fetch_fills_the_data_folder_and_list_shows_it(tmp_path):
    data_dir = tmp_path / "state"
    before = run_cli(data_dir, "models", "list").stdout
    assert "face_detection_yunet" in before and "missing" in before
    run_cli(data_dir, "models", "fetch", "face_detection_yunet")
    after = {line.split()[0]: line for line in run_cli(data_dir, "models", "list").stdout.splitlines()}
    assert str(data_dir / "models") in after["face_detection_yunet"]
    assert after["efficientnet_lite0"].rstrip().endswith("missing")
    lines = after.values()
    assert len({line.index(" MB ") for line in lines}) == 1  # the columns line up
    assert any("…" in line for line in lines)  # the long descriptions are cut to the column
    unknown = run_cli(data_dir, "models", "fetch", "no_such_model", check=False)
    assert unknown.returncode != 0 and "unknown model" in unknown.stderr


def test_reset_errors_retries_failed_files_and_reset_faces_finds_faces_again(tmp_path, shared_data):
    tree = tmp_path / "tree"
    (tree / "people").mkdir(parents=True)
    for photo in sorted((shared_data / "faces" / "Colin_Powell").iterdir())[:3]:
        shutil.copy(photo, tree / "people" / photo.name)
    (tree / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    faces_before = json.loads(run_cli(data_dir, "stats", "--json").stdout)["faces"]
    assert faces_before >= 3

    run_cli(data_dir, "reset", "--errors")
    assert "0 files analyzed, 1 failed" in run_cli(data_dir, "scan", str(tree)).stdout
    assert {f["path"]: f["status"] for f in export_json(data_dir)["files"]}["broken.jpg"] == "error"

    run_cli(data_dir, "reset", "--faces")
    stats = json.loads(run_cli(data_dir, "stats", "--json").stdout)
    assert stats["faces"] == 0 and stats["persons"] == 0
    assert "3 files analyzed, 1 failed" in run_cli(data_dir, "scan", str(tree)).stdout  # and broken.jpg
    assert json.loads(run_cli(data_dir, "stats", "--json").stdout)["faces"] == faces_before

    run_cli(data_dir, "reset", "--all")
    assert json.loads(run_cli(data_dir, "stats", "--json").stdout)["files"] == 0
    assert run_cli(data_dir, "reset", check=False).returncode != 0


def test_a_changed_file_is_analyzed_again_and_a_deleted_one_leaves_the_export(tmp_path, shared_data):
    tree = tmp_path / "tree"
    tree.mkdir()
    first, second, third = (
        shared_data / "images" / name
        for name in ("n02123394_Persian_cat.JPEG", "n04548362_wallet.JPEG", "n07873807_pizza.JPEG")
    )
    shutil.copy(first, tree / "a.jpg")
    shutil.copy(second, tree / "b.jpg")
    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    shutil.copy(third, tree / "a.jpg")
    (tree / "b.jpg").unlink()
    output = run_cli(data_dir, "scan", str(tree)).stdout
    assert "0 new, 1 changed, 1 removed, 0 unchanged; 1 file analyzed; 0 persons" in output
    files = export_json(data_dir)["files"]
    assert [f["path"] for f in files] == ["a.jpg"]
    assert files[0]["labels"][0]["id"] == third.name.split("_")[0]


HEAVY = ("onnxruntime", "onnx", "cv2", "sklearn", "dlib", "nc_py_api", "librosa", "huey")


def loaded_heavy_libraries(tmp_path, *args: str) -> list[str]:
    """The heavy libraries in sys.modules after ``recognize ARGS`` in a fresh interpreter."""
    code = (
        "import sys\n"
        "from ex_app.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        f"print('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=env, check=True)
    return done.stdout.splitlines()[-1].split()[1:]


def test_help_and_progress_do_not_load_the_analyzers_libraries(tmp_path):
    assert loaded_heavy_libraries(tmp_path, "--help") == []
    assert loaded_heavy_libraries(tmp_path, "--data-dir", str(tmp_path / "state"), "stats") == []
    # progress asks the queue whether it is paused: huey, nothing of the analyzers
    assert loaded_heavy_libraries(tmp_path, "--data-dir", str(tmp_path / "state"), "progress") == ["huey"]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, shared_data) -> tuple[Path, str]:
    """A data folder after a scan of two face photos and a broken file; and the scan's output."""
    tree = tmp_path_factory.mktemp("tree")
    for photo in sorted((shared_data / "faces" / "Colin_Powell").iterdir())[:2]:
        shutil.copy(photo, tree / photo.name)
    (tree / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    data_dir = tmp_path_factory.mktemp("state")
    return data_dir, run_cli(data_dir, "scan", str(tree)).stdout


def test_progress_says_nothing_is_left_when_nothing_is_pending(scanned):
    data_dir, _ = scanned
    lines = run_cli(data_dir, "progress").stdout.splitlines()
    analyzers = [line for line in lines if " pending" in line]
    assert analyzers and all(" 0 pending" in line for line in analyzers), lines
    assert all(line.endswith("; nothing left") for line in analyzers), lines


def test_scan_counts_the_failed_files_apart(scanned):
    _, output = scanned
    assert output.rstrip().endswith("; 2 files analyzed, 1 failed; 1 person"), output


def test_stats_count_each_file_once_per_tag(scanned):
    data_dir, _ = scanned
    with sqlite3.connect(data_dir / "recognize.db") as db:
        people = [row[0] for row in db.execute("SELECT file_id FROM file_tags WHERE tag = 'People'")]
        assert len(people) == 2
        # the objects analyzer gives People too (a uniform, a gown): the same file, twice tagged
        db.execute("INSERT INTO file_tags (file_id, analyzer, tag) VALUES (?, 'objects', 'People')",
                   (people[0],))
    stats = json.loads(run_cli(data_dir, "stats", "--json").stdout)
    assert stats["tags"]["People"] == 2
    assert "People 2" in run_cli(data_dir, "stats").stdout


def test_the_readme_lists_every_key_of_the_export(scanned):
    data_dir, _ = scanned
    exported = export_json(data_dir)
    assert any(f["faces"] for f in exported["files"]) and any(f["labels"] for f in exported["files"])

    def keys(value) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    line = next(l for l in (REPO / "README.md").read_text().splitlines() if l.startswith('`{"files"'))
    assert keys(exported) == set(re.findall(r'"(\w+)"', line))


def test_scan_takes_one_file_and_records_it_under_its_folder(tmp_path, shared_data):
    tree = tmp_path / "tree"
    tree.mkdir()
    photos = sorted((shared_data / "images").iterdir())[:2]
    for photo in photos:
        shutil.copy(photo, tree / photo.name)
    (tree / "notes.txt").write_text("not media")
    data_dir = tmp_path / "state"
    first = run_cli(data_dir, "scan", str(tree / photos[0].name)).stdout
    assert first.startswith("1 new, 0 changed, 0 removed, 0 unchanged; 1 file analyzed"), first
    files = export_json(data_dir, "--root", str(tree))["files"]
    assert [(f["path"], f["status"]) for f in files] == [(photos[0].name, "done")]
    # the folder's other file is not forgotten by a scan of one file, nor the first by the second
    run_cli(data_dir, "scan", str(tree / photos[1].name))
    assert [f["path"] for f in export_json(data_dir)["files"]] == [p.name for p in photos]
    assert run_cli(data_dir, "scan", str(tree)).stdout.startswith("0 new, 0 changed, 0 removed, 2 unchanged")
    refused = run_cli(data_dir, "scan", str(tree / "notes.txt"), check=False)
    assert refused.returncode != 0 and "not a media file" in refused.stderr


def test_a_missing_model_is_reported_once_per_run(tmp_path, shared_data):
    """Without the mirror (and no network here) YuNet's float32 file cannot be had: the scan
    goes on with its packaged fallback and says so once, not once from the store and once
    from the engine."""
    photo = sorted((shared_data / "faces" / "Colin_Powell").iterdir())[0]
    shutil.copy(photo, tmp_path / photo.name)
    (tmp_path / "empty").mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "ex_app", "--data-dir", str(tmp_path / "state"), "--model-mirror",
         str(tmp_path / "empty"), "scan", str(tmp_path / photo.name)],
        capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "1 file analyzed" in done.stdout
    assert done.stderr.count("face_detection_yunet is not available") == 1, done.stderr
