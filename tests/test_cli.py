"""The `recognize` command's settings, resets and model commands."""

from __future__ import annotations

import json
import shutil

from conftest import export_json, run_cli

from ex_app.config import Settings


def test_settings_come_from_prefixed_variables_and_flags_win(monkeypatch, tmp_path):
    monkeypatch.setenv("APP_PERSISTENT_STORAGE", str(tmp_path / "appapi"))
    assert Settings().data_dir == tmp_path / "appapi"
    monkeypatch.setenv("RECOGNIZE_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("RECOGNIZE_MAX_IMAGE_SIDE", "800")
    settings = Settings()
    assert settings.data_dir == tmp_path / "env" and settings.max_image_side == 800
    assert Settings(data_dir=tmp_path / "flag").data_dir == tmp_path / "flag"


def test_models_fetch_fills_the_data_folder_and_list_shows_it(tmp_path):
    data_dir = tmp_path / "state"
    before = run_cli(data_dir, "models", "list").stdout
    assert "face_detection_yunet" in before and "missing" in before
    run_cli(data_dir, "models", "fetch", "face_detection_yunet")
    after = {line.split()[0]: line for line in run_cli(data_dir, "models", "list").stdout.splitlines()}
    assert str(data_dir / "models") in after["face_detection_yunet"]
    assert after["efficientnet_lite0"].rstrip().endswith("missing")
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
    assert "1 files analyzed" in run_cli(data_dir, "scan", str(tree)).stdout
    assert {f["path"]: f["status"] for f in export_json(data_dir)["files"]}["broken.jpg"] == "error"

    run_cli(data_dir, "reset", "--faces")
    stats = json.loads(run_cli(data_dir, "stats", "--json").stdout)
    assert stats["faces"] == 0 and stats["persons"] == 0
    assert "4 files analyzed" in run_cli(data_dir, "scan", str(tree)).stdout  # broken.jpg too
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
    assert "0 new, 1 changed, 1 removed, 0 unchanged; 1 files analyzed" in output
    files = export_json(data_dir)["files"]
    assert [f["path"] for f in files] == ["a.jpg"]
    assert files[0]["labels"][0]["id"] == third.name.split("_")[0]
