"""Faults during real runs: the process killed at random points, the database locked, the disk
full, a model file corrupted on disk, and Nextcloud failing (500, 503, timeouts, connections
dropped mid-download). Afterwards every file is done or failed with a reason, exactly once,
with the same tags as a run without faults.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA, SHARED_MODELS, export_json
from test_scan import _canonical

from ex_app.config import Settings
from ex_app.models.manifest import load_manifest
from ex_app.models.store import ModelStore, file_sha256
from ex_app.analyzers.registry import BY_NAME

SCAN_ENV = {"RECOGNIZE_MUSIC__ENABLED": "0", "RECOGNIZE_VIDEO__ENABLED": "0",
            "RECOGNIZE_PLACES__ENABLED": "0"}
SCAN_TIMEOUT = 300


def make_tree(folder: Path) -> Path:
    """Real photos (objects and faces of two persons) and broken files."""
    folder.mkdir()
    for photo in sorted((SHARED_DATA / "images").iterdir())[:10]:
        shutil.copy(photo, folder / photo.name)
    for identity in ("Colin_Powell", "Hugh_Grant"):
        (folder / identity).mkdir()
        for photo in sorted((SHARED_DATA / "faces" / identity).iterdir())[:4]:
            shutil.copy(photo, folder / identity / photo.name)
    (folder / "empty.jpg").write_bytes(b"")
    whole = next((SHARED_DATA / "images").iterdir()).read_bytes()
    (folder / "half.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "text.png").write_text("not a picture")
    return folder


def scan_command(data_dir: Path, tree: Path) -> list[str]:
    return [sys.executable, "-m", "ex_app", "--data-dir", str(data_dir), "--model-mirror",
            str(SHARED_MODELS), "scan", str(tree)]


def scan_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    env.pop("APP_PERSISTENT_STORAGE", None)
    return {**env, **SCAN_ENV}


def scan(data_dir: Path, tree: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(scan_command(data_dir, tree), env=scan_env(), cwd=REPO, check=check,
                          capture_output=True, text=True, timeout=SCAN_TIMEOUT)


def export(data_dir: Path) -> dict:
    return export_json(data_dir)


def assert_each_file_once_done_or_failed_with_reason(result: dict, tree: Path) -> None:
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert sorted(f["path"] for f in result["files"]) == files  # each exactly once
    for f in result["files"]:
        assert f["status"] == "done" or (f["status"] == "error" and f["error"]), f
        assert len(f["tags"]) == len(set(f["tags"])), f  # no tag twice


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The tree and the export of one uninterrupted scan of it."""
    root = tmp_path_factory.mktemp("faults")
    tree = make_tree(root / "tree")
    scan(root / "uninterrupted", tree)
    result = export(root / "uninterrupted")
    assert_each_file_once_done_or_failed_with_reason(result, tree)
    assert {f["path"] for f in result["files"] if f["status"] == "error"} == {
        "empty.jpg", "half.jpg", "text.png"}
    assert any(f["tags"] for f in result["files"]) and any(f["faces"] for f in result["files"])
    return tree, result


def test_a_scan_killed_at_random_points_ends_like_an_uninterrupted_one(tmp_path, baseline):
    tree, expected = baseline
    data_dir = tmp_path / "killed"
    chance = random.Random(8)
    kills = []
    for _ in range(4):
        process = subprocess.Popen(scan_command(data_dir, tree), env=scan_env(), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        at = chance.uniform(0.3, 6.0)  # start-up, migrations, model loading, sync, analysis
        try:
            process.wait(timeout=at)
            kills.append((round(at, 2), "ended first"))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append((round(at, 2), "killed"))
    assert sum(1 for _, what in kills if what == "killed") >= 2, kills
    scan(data_dir, tree)
    result = export(data_dir)
    assert_each_file_once_done_or_failed_with_reason(result, tree)
    assert _canonical(result) == _canonical(expected), kills


def done_files(database: Path) -> int:
    try:
        with sqlite3.connect(database, timeout=0.2) as connection:
            return connection.execute(
                "SELECT count(DISTINCT file_id) FROM tasks WHERE status != 'pending'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet, or busy


def test_a_database_locked_mid_scan_delays_it_and_loses_nothing(tmp_path, baseline):
    tree, expected = baseline
    data_dir = tmp_path / "locked"
    process = subprocess.Popen(scan_command(data_dir, tree), env=scan_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + SCAN_TIMEOUT
    while done_files(data_dir / "recognize.db") < 3:
        assert process.poll() is None and time.monotonic() < deadline, "it ended too soon"
        time.sleep(0.02)
    locker = sqlite3.connect(data_dir / "recognize.db", timeout=30, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another program holds the database
    time.sleep(4)
    done_while_locked = done_files(data_dir / "recognize.db")
    locker.rollback()
    locker.close()
    _, errors = process.communicate(timeout=SCAN_TIMEOUT)
    assert process.returncode == 0, errors[-2000:]
    assert done_while_locked < len(expected["files"])  # the lock did stop the scan
    result = export(data_dir)
    assert_each_file_once_done_or_failed_with_reason(result, tree)
    assert _canonical(result) == _canonical(expected)


def test_a_full_disk_fails_the_scan_clearly_and_the_next_scan_finishes(tmp_path, baseline):
    tree, expected = baseline
    data_dir = tmp_path / "small-disk"
    data_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(data_dir)],
                             capture_output=True, text=True, check=False)
    assert mounted.returncode == 0, f"needs root to mount a small tmpfs: {mounted.stderr}"
    try:
        models = [*BY_NAME["faces"].models(Settings()), *BY_NAME["objects"].models(Settings())]
        fetch = [*scan_command(data_dir, tree)[:-2], "models", "fetch", *models]
        subprocess.run(fetch, env=scan_env(), cwd=REPO, check=True, capture_output=True)
        used = shutil.disk_usage(data_dir).used
        subprocess.run(["mount", "-o", f"remount,size={used + 48 * 1024}", str(data_dir)],
                       check=True)
        filler = data_dir / "filler"
        with open(filler, "wb") as stream:  # what is left, less a few kilobytes
            stream.write(b"\0" * max(0, shutil.disk_usage(data_dir).free - 8 * 1024))
        full = scan(data_dir, tree, check=False)
        assert full.returncode != 0
        message = full.stderr + full.stdout
        assert "disk is full" in message or "No space left" in message, message[-2000:]
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,size=256m", str(data_dir)], check=True)
        scan(data_dir, tree)
        result = export(data_dir)
    finally:
        subprocess.run(["umount", "-l", str(data_dir)], check=False)
    assert_each_file_once_done_or_failed_with_reason(result, tree)
    assert _canonical(result) == _canonical(expected)


def test_a_corrupted_model_file_is_detected_and_fetched_again(tmp_path):
    name = "face_detection_yunet"
    store = ModelStore(tmp_path, load_manifest(), mirror=SHARED_MODELS)
    path = store.fetch(name)
    expected = store.expected_sha256(name)
    assert file_sha256(path) == expected
    for damage in ("flip", "truncate", "zeros"):
        data = bytearray(path.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0xFF
        elif damage == "truncate":
            data = data[: len(data) // 2]
        else:
            data = bytearray(len(data))
        time.sleep(0.01)
        path.write_bytes(bytes(data))
        again = ModelStore(tmp_path, load_manifest(), mirror=SHARED_MODELS).fetch(name)
        assert file_sha256(again) == expected, damage


def test_a_corrupted_model_file_with_its_time_put_back_is_detected(tmp_path):
    name = "face_detection_yunet"
    store = ModelStore(tmp_path, load_manifest(), mirror=SHARED_MODELS)
    path = store.fetch(name)
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = ModelStore(tmp_path, load_manifest(), mirror=SHARED_MODELS).fetch(name)
    assert file_sha256(again) == store.expected_sha256(name)


def test_settings_used_here_exist():
    """The variables this harness sets are real settings (a renamed one would test nothing)."""
    sections = {name: field.annotation for name, field in Settings.model_fields.items()}
    names = {f"RECOGNIZE_{section.upper()}__{field.upper()}"
             for section, model in sections.items() if hasattr(model, "model_fields")
             for field in model.model_fields}
    assert set(SCAN_ENV) <= names


# --- Nextcloud failing: a faulty proxy between the ExApp and the stand-in -----------------------

NC_PHOTOS = {
    "gore.jpg": SHARED_DATA / "faces" / "Al_Gore" / "lfw_Al_Gore_0004.jpg",
    "powell.jpg": SHARED_DATA / "faces" / "Colin_Powell" / "lfw_Colin_Powell_0001.jpg",
    "cat.jpg": SHARED_DATA / "images" / "n02123394_Persian_cat.JPEG",
    "shark.jpg": SHARED_DATA / "images" / "n01491361_tiger_shark.JPEG",
    "coffee.png": SHARED_DATA / "faces" / "noface" / "skimage_coffee.png",
    "group.jpg": SHARED_DATA / "faces" / "group" / "dlib_2008_001322.jpg",
    "broken.jpg": None,
}
DAV_TIMEOUT = 2  # seconds nc_py_api waits for WebDAV here; a "timeout" fault waits longer


class FaultyProxy:
    """Forwards every request to Nextcloud, but answers the first downloads of each file with
    the faults planned for it: an HTTP status, silence past the client's timeout, or the
    connection dropped halfway through the body."""

    def __init__(self, upstream: str, plan: dict[str, list[str]]):
        import httpx
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.upstream, self.plan, self.served = upstream, plan, []
        self.client = httpx.AsyncClient(timeout=60)
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=[
            "GET", "HEAD", "POST", "PUT", "DELETE", "PROPFIND", "PROPPATCH", "MKCOL", "MOVE",
            "COPY", "REPORT", "SEARCH", "OPTIONS"])])

    async def handle(self, request):
        import asyncio

        from starlette.responses import Response, StreamingResponse

        path = request.url.path
        name = path.rsplit("/", 1)[-1]
        fault = None
        if request.method == "GET" and path.startswith("/remote.php/dav/files/"):
            planned = self.plan.get(name)
            fault = planned.pop(0) if planned else None
        if fault is not None:
            self.served.append((name, fault))
        if fault in ("500", "503"):
            return Response("fault", status_code=int(fault))
        if fault == "timeout":
            await asyncio.sleep(DAV_TIMEOUT + 2)
            return Response("late", status_code=504)
        upstream = await self.client.request(
            request.method, self.upstream + path, params=request.query_params,
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            content=await request.body(),
        )
        headers = {k: v for k, v in upstream.headers.items()
                   if k.lower() not in ("content-encoding", "transfer-encoding", "content-length",
                                        "connection")}
        if fault == "endless":  # a body that never ends, whatever size the file has

            async def zeros():
                while True:
                    yield bytes(65_536)
                    await asyncio.sleep(0)

            return StreamingResponse(zeros(), media_type="image/jpeg")
        if fault == "drop":
            body = upstream.content

            async def half_then_drop():
                yield body[: len(body) // 2]
                raise ConnectionResetError("the proxy drops the connection")

            headers["content-length"] = str(len(body))
            return StreamingResponse(half_then_drop(), status_code=upstream.status_code,
                                     headers=headers)
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)


def run_exapp_over(nextcloud, url: str, data_dir: Path, monkeypatch,
                   tagged: tuple[str, ...] = ("gore.jpg", "group.jpg", "cat.jpg", "shark.jpg"),
                   **settings_values) -> dict[str, set[str]]:
    """Serve the ExApp against Nextcloud at url, enable it, wait until every task of the
    photos is settled and tagged; the tag names of each photo."""
    import dataclasses

    import nc_py_api.options
    from sqlalchemy import select
    from test_exapp import serve

    from ex_app.engine import Engine
    from ex_app.store import schema

    monkeypatch.setattr(nc_py_api.options, "NPA_TIMEOUT_DAV", DAV_TIMEOUT)
    monkeypatch.setenv("NPA_TIMEOUT_DAV", str(DAV_TIMEOUT))  # the worker processes too
    state = nextcloud.state
    state.app.enabled = False
    settings = Settings(data_dir=data_dir, model_mirror=SHARED_MODELS, crawl_interval_seconds=2,
                        music_enabled=False, video_enabled=False, places_enabled=False,
                        retry_delay_seconds=1, **settings_values)
    with serve(dataclasses.replace(nextcloud, url=url), settings, monkeypatch) as exapp:
        exapp.enable()
        engine = Engine(settings)
        deadline = time.monotonic() + 180
        while True:
            with engine.sessions() as session:
                rows = session.execute(
                    select(schema.File.path, schema.Task.status, schema.Task.error)
                    .join(schema.Task)).all()
            settled = {path for path, status, _ in rows if status != "pending"}
            if len({path for path, _, _ in rows}) == len(NC_PHOTOS) and len(settled) == len(
                    NC_PHOTOS) and all(status == "done" or error for _, status, error in rows):
                break
            assert time.monotonic() < deadline, (rows, exapp.progress())
            time.sleep(0.3)
        while not all(state.tag_names_of(state.own_node("alice", f"Photos/{name}").fileid)
                      for name in tagged):
            assert time.monotonic() < deadline, "tags never reached Nextcloud"
            time.sleep(0.3)  # the service tags a file after its results are stored
        with engine.sessions() as session:
            files = session.execute(select(schema.File.path, schema.File.id)).all()
            assert len(files) == len({path for path, _ in files}) == len(NC_PHOTOS)  # once
            stored = {
                path: [t.tag for t in session.get(schema.File, file_id).tags]
                for path, file_id in files
            }
            errors = {path: error for path, status, error in session.execute(
                select(schema.File.path, schema.Task.status, schema.Task.error)
                .join(schema.Task)).all() if status != "done"}
    for path, tags in stored.items():
        assert len(tags) == len(set(tags)), (path, tags)  # no tag assigned twice
    tagged = {name: state.tag_names_of(state.own_node("alice", f"Photos/{name}").fileid)
              for name in NC_PHOTOS}
    return {"tags": tagged, "errors": errors}


@pytest.fixture
def photos(nextcloud):
    for name, source in NC_PHOTOS.items():
        data = source.read_bytes() if source else b"\xff\xd8\xff\xe0 not a jpeg"
        nextcloud.state.put_file("alice", f"Photos/{name}", data)
    return nextcloud


@contextmanager
def serve_proxy(proxy: FaultyProxy) -> Iterator[str]:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(proxy.app, host="127.0.0.1", port=port,
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the proxy did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_nextcloud_failing_downloads_delay_the_work_and_lose_nothing(photos, tmp_path,
                                                                     monkeypatch):
    faults = ("500", "503", "timeout", "drop")
    planned = {name: faults[i % len(faults)] for i, name in enumerate(NC_PHOTOS)}
    proxy = FaultyProxy(photos.url, {name: [fault] for name, fault in planned.items()})
    with serve_proxy(proxy) as url:
        result = run_exapp_over(photos, url, tmp_path / "data", monkeypatch)
    assert sorted(proxy.served) == sorted(planned.items())  # each fault was met
    # Only the broken photo failed, for its own reason, not for the faults on the way.
    assert set(result["errors"]) == {"Photos/broken.jpg"}, result["errors"]
    assert "download failed" not in result["errors"]["Photos/broken.jpg"]
    assert "People" in result["tags"]["gore.jpg"] and "People" in result["tags"]["group.jpg"]
    assert result["tags"]["cat.jpg"] and result["tags"]["shark.jpg"]


def test_an_endless_download_stops_at_the_size_cap_and_fails_that_file_alone(
        photos, tmp_path, monkeypatch):
    proxy = FaultyProxy(photos.url, {"cat.jpg": ["endless"] * 20})
    with serve_proxy(proxy) as url:
        result = run_exapp_over(photos, url, tmp_path / "data", monkeypatch,
                                tagged=("gore.jpg", "group.jpg", "shark.jpg"),
                                max_download_bytes=2 * 2**20)
    assert ("cat.jpg", "endless") in proxy.served
    assert set(result["errors"]) == {"Photos/broken.jpg", "Photos/cat.jpg"}, result["errors"]
    assert "larger than the 2097152 bytes allowed" in result["errors"]["Photos/cat.jpg"]
    assert not result["tags"]["cat.jpg"] and result["tags"]["shark.jpg"]
