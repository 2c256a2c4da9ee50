"""The ExApp against the Nextcloud stand-in, over real HTTP both ways.

The ExApp is served by uvicorn on a free port, configured by the stand-in's AppAPI
environment; the tests call it as AppAPI's proxy does and inspect the stand-in's state.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import SHARED_DATA, SHARED_MODELS
from nextcloud_standin.auth import headers_to_exapp
from nextcloud_standin.state import NextcloudState
from nextcloud_standin.webhook_events import NODE_CREATED, NODE_DELETED, NODE_RENAMED
from sqlalchemy import select

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.main import FILES_ACTION_NAME, create_app
from ex_app.media.kinds import MediaKind
from ex_app.people import operations
from ex_app.sources.nextcloud import (
    NextcloudFile,
    NextcloudSource,
    NextcloudUsers,
    TooLarge,
    stored_file,
)
from ex_app.sources.sync import sync
from ex_app.store import schema
from ex_app.store.files import SyncReport, record_files
from ex_app.web import personal_settings
from ex_app.web.admin_settings import FORM_ID
from ex_app.work.schedule import in_quiet_hours
from ex_app.work.worker import FileProcessor, worker_fetcher

FACE = SHARED_DATA / "faces" / "Al_Gore" / "lfw_Al_Gore_0004.jpg"
OTHER_FACE = SHARED_DATA / "faces" / "group" / "dlib_2008_001322.jpg"
CAT = SHARED_DATA / "images" / "n02123394_Persian_cat.JPEG"
COFFEE = SHARED_DATA / "faces" / "noface" / "skimage_coffee.png"
WAIT_SECONDS = 120


@dataclass
class ExApp:
    url: str
    state: NextcloudState
    data_dir: Path

    def call(self, method: str, path: str, user: str = "", **kwargs) -> httpx.Response:
        """A request as AppAPI's proxy sends it, for user."""
        headers = headers_to_exapp(self.state, user)
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def enable(self) -> None:
        """What AppAPI does to enable an ExApp: mark it enabled, then tell it."""
        self.state.app.enabled = True
        assert self.call("PUT", "/enabled?enabled=1", "admin").json() == {"error": ""}

    def progress(self) -> dict:
        response = self.call("GET", "/api/progress", "admin")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_cycles(self, count: int) -> dict:
        """The progress once count cycles finished."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            progress = self.progress()
            assert progress["last_error"] is None, progress["last_error"]
            if progress["cycles"] >= count:
                return progress
            time.sleep(0.2)
        raise AssertionError(f"no {count} cycles in {WAIT_SECONDS} s: {self.progress()}")

    def downloads_of(self, name: str) -> int:
        """How many times a file with this name was downloaded over WebDAV."""
        return sum(
            1 for method, path, _user in self.state.requests
            if method == "GET" and "/remote.php/dav/files/" in path and path.endswith("/" + name)
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(nextcloud, settings: Settings, monkeypatch) -> Iterator[ExApp]:
    """The ExApp served over HTTP with these settings, configured as AppAPI deploys it."""
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the ExApp did not start"
        time.sleep(0.05)
    try:
        yield ExApp(f"http://127.0.0.1:{port}", nextcloud.state, settings.data_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive(), "the ExApp did not stop"


@pytest.fixture
def exapp(nextcloud, tmp_path, monkeypatch):
    """The ExApp, installed but not enabled yet, with its state in tmp_path and the shared
    model mirror."""
    nextcloud.state.app.enabled = False
    settings = Settings(
        data_dir=tmp_path / "data", model_mirror=SHARED_MODELS, crawl_interval_seconds=3600,
        user_choice_refresh_seconds=0,  # the tests change choices in Nextcloud between cycles
    )
    with serve(nextcloud, settings, monkeypatch) as app:
        yield app


@pytest.fixture
def users(nextcloud):
    """alice shares her Trip folder with bob; bob has a photo of his own."""
    return _fill(nextcloud.state)


def _fill(state: NextcloudState) -> NextcloudState:
    state.put_file("alice", "Trip/gore.jpg", FACE.read_bytes())
    state.put_file("alice", "Trip/cat.jpg", CAT.read_bytes())
    state.put_file("alice", "Private/.nomedia", b"")
    state.put_file("alice", "Private/secret.jpg", FACE.read_bytes())
    state.put_file("alice", "Screens/.noimage", b"")
    state.put_file("alice", "Screens/shot.png", COFFEE.read_bytes())
    state.put_file("bob", "Photos/coffee.png", COFFEE.read_bytes())
    state.share("alice", "Trip", "bob")
    return state


def test_heartbeat_is_public(exapp):
    response = httpx.get(exapp.url + "/heartbeat")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("route", ["/api/progress", "/api/files-action", "/init", "/enabled?enabled=1"])
def test_requests_without_valid_appapi_headers_are_rejected(exapp, route):
    method = "GET" if route == "/api/progress" else ("PUT" if "enabled" in route else "POST")
    assert httpx.request(method, exapp.url + route).status_code == 401
    forged = headers_to_exapp(exapp.state, "admin", secret="not-the-secret")
    assert httpx.request(method, exapp.url + route, headers=forged).status_code == 401
    wrong_app = {**headers_to_exapp(exapp.state, "admin"), "EX-APP-ID": "someone_else"}
    assert httpx.request(method, exapp.url + route, headers=wrong_app).status_code == 401
    assert exapp.state.file_actions == {}


def test_init_fetches_the_models_with_progress(exapp):
    exapp.state.app.initializing = True  # AppAPI initializes an ExApp before enabling it
    assert exapp.call("POST", "/init", "").status_code == 200
    deadline = time.monotonic() + WAIT_SECONDS
    while exapp.state.app.progress != 100:
        assert time.monotonic() < deadline, exapp.state.app.progress_history
        assert not exapp.state.app.error, exapp.state.app.error
        time.sleep(0.1)
    history = [progress for progress, _error in exapp.state.app.progress_history]
    assert history == sorted(history) and history[0] < 100
    assert list((exapp.data_dir / "models").rglob("face_detection_yunet.onnx"))


def test_init_reports_why_models_could_not_be_fetched(nextcloud, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = Settings(data_dir=blocker / "data", model_mirror=SHARED_MODELS)  # unwritable
    nextcloud.state.app.initializing = True
    with serve(nextcloud, settings, monkeypatch) as exapp:
        assert exapp.call("POST", "/init", "").status_code == 200
        deadline = time.monotonic() + WAIT_SECONDS
        while not nextcloud.state.app.error:
            assert time.monotonic() < deadline, nextcloud.state.app.progress_history
            time.sleep(0.1)
    assert "could not fetch its models" in nextcloud.state.app.error
    assert nextcloud.state.app.progress < 100


def test_enable_registers_the_ui_and_disable_removes_it(exapp, users):
    exapp.enable()
    action = exapp.state.file_actions[FILES_ACTION_NAME]
    assert action["version"] == "2.0"
    assert set(action["mime"].split(",")) == {"image", "audio", "video", "httpd/unix-directory"}
    form = exapp.state.settings_forms[FORM_ID]
    assert form["section_type"] == "admin" and form["title"] == "Recognize"
    assert form["section_id"] in exapp.state.release.admin_sections  # listed in the navigation
    ids = {field["id"] for field in form["fields"]}
    assert {"faces_enabled", "objects_enabled", "places_enabled", "music_enabled",
            "face_sensitivity", "face_embedder",
            "threads", "jobs",
            "quiet_hours", "person_names_as_tags", "max_image_side",
            "face_min_faces_per_person"} <= ids
    events = sorted(w["event"].rpartition("\\")[2] for w in exapp.state.webhooks.values())
    assert events == ["NodeCreatedEvent", "NodeDeletedEvent", "NodeRenamedEvent",
                      "NodeWrittenEvent"]
    personal = exapp.state.settings_forms[personal_settings.FORM_ID]
    assert personal["section_type"] == "personal"
    assert personal["section_id"] in exapp.state.release.personal_sections
    assert {field["id"] for field in personal["fields"]} == {
        personal_settings.ANALYZE, personal_settings.DELETE_FACES}
    assert {w["uri"] for w in exapp.state.webhooks.values()} == {"/api/webhooks/files"}
    assert exapp.progress()["running"] is True
    exapp.enable()  # again, as after an upgrade: nothing registered twice
    assert len(exapp.state.webhooks) == 4

    assert exapp.call("PUT", "/enabled?enabled=0", "admin").json() == {"error": ""}
    assert FILES_ACTION_NAME not in exapp.state.file_actions
    assert FORM_ID not in exapp.state.settings_forms
    assert exapp.state.webhooks == {}
    assert exapp.progress()["running"] is False


def test_a_restarted_exapp_resumes_work_when_enabled(nextcloud, users, tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS)
    with serve(nextcloud, settings, monkeypatch) as exapp:  # the stand-in has it enabled
        assert exapp.wait_for_cycles(1)["last_cycle"]["processed"] == 3
    with serve(nextcloud, settings, monkeypatch) as exapp:  # a restart: nothing done twice
        progress = exapp.wait_for_cycles(1)
        assert progress["last_cycle"]["processed"] == 0
        assert progress["last_cycle"]["sync"]["unchanged"] == 3
        assert exapp.downloads_of("gore.jpg") == 1
    nextcloud.state.app.enabled = False
    with serve(nextcloud, settings, monkeypatch) as exapp:
        assert exapp.progress()["running"] is False


def test_crawl_analyzes_each_file_once_honours_markers_and_tags(exapp, users):
    exapp.enable()
    progress = exapp.wait_for_cycles(1)
    # alice's Trip is also bob's: each of its files is downloaded and analyzed once.
    assert progress["last_cycle"]["sync"]["added"] == 3
    assert progress["last_cycle"]["processed"] == 3
    assert exapp.downloads_of("gore.jpg") == 1
    assert exapp.downloads_of("cat.jpg") == 1
    # Markers: .nomedia hides everything below it, .noimage the images.
    assert exapp.downloads_of("secret.jpg") == 0
    assert exapp.downloads_of("shot.png") == 0

    gore = users.own_node("alice", "Trip/gore.jpg")
    cat = users.own_node("alice", "Trip/cat.jpg")
    assert "People" in users.tag_names_of(gore.fileid)
    assert "People" not in users.tag_names_of(cat.fileid)
    assert users.tag_names_of(cat.fileid) & {"Cat", "Animal", "Pet"}
    assert users.tag_names_of(users.own_node("alice", "Private/secret.jpg").fileid) == set()
    tags = [tag for tag in users.tags.values() if tag.name == "People"]
    assert len(tags) == 1 and tags[0].user_visible and tags[0].user_assignable
    # The admin sees the progress in the settings form.
    description = users.settings_forms[FORM_ID]["description"]
    assert "Progress: faces: 3 done, 0 pending, 0 failed" in description, description


def test_retagging_keeps_the_users_tags(exapp, users):
    gore = users.own_node("alice", "Trip/gore.jpg")
    holiday = users.add_tag("Holiday")
    users.tag_relations.add((gore.fileid, holiday.tag_id))
    exapp.enable()
    exapp.wait_for_cycles(1)
    assert users.tag_names_of(gore.fileid) >= {"People", "Holiday"}

    # The photo's content changes to one without a face: People goes, Holiday stays.
    users.put_file("alice", "Trip/gore.jpg", COFFEE.read_bytes())
    exapp.call("POST", "/api/files-action", "alice", json=_selection(users, "alice", "Trip/gore.jpg"))
    progress = exapp.wait_for_cycles(2)
    assert progress["last_cycle"]["sync"] is None  # the action's files only, no crawl
    assert progress["last_cycle"]["processed"] == 1
    assert "People" not in users.tag_names_of(gore.fileid)
    assert "Holiday" in users.tag_names_of(gore.fileid)
    assert exapp.downloads_of("gore.jpg") == 2


def test_a_users_own_tag_of_the_same_name_is_never_removed(exapp, users):
    coffee = users.own_node("bob", "Photos/coffee.png")
    people = users.add_tag("People")
    users.tag_relations.add((coffee.fileid, people.tag_id))  # bob says: there are people
    exapp.enable()
    exapp.wait_for_cycles(1)
    users.put_file("bob", "Photos/coffee.png", CAT.read_bytes())
    exapp.call("POST", "/api/files-action", "bob", json=_selection(users, "bob", "Photos/coffee.png"))
    exapp.wait_for_cycles(2)
    assert "People" in users.tag_names_of(coffee.fileid)
    assert len([t for t in users.tags.values() if t.name == "People"]) == 1


def test_files_action_queues_a_folder_recursively(exapp, users):
    users.put_file("bob", "Photos/2024/deep/face.jpg", OTHER_FACE.read_bytes())
    users.put_file("bob", "Photos/2024/.novideo", b"")
    exapp.enable()
    exapp.wait_for_cycles(1)
    selection = _selection(users, "bob", "Photos")
    response = exapp.call("POST", "/api/files-action", "bob", json=selection)
    assert response.status_code == 200
    assert response.json() == {"queued": 2}  # coffee.png and 2024/deep/face.jpg
    exapp.wait_for_cycles(2)
    assert exapp.downloads_of("face.jpg") == 1
    face = users.own_node("bob", "Photos/2024/deep/face.jpg")
    assert "People" in users.tag_names_of(face.fileid)


def test_files_action_needs_a_user(exapp, users):
    response = exapp.call("POST", "/api/files-action", "", json=_selection(users, "bob", "Photos"))
    assert response.status_code == 401  # a USER route (ex_app/web/access.py)


def test_files_action_refuses_files_the_user_cannot_see(exapp, users):
    exapp.enable()
    # alice's Private folder is not shared: bob names it as if it were his.
    response = exapp.call("POST", "/api/files-action", "bob",
                          json=_selection(users, "alice", "Private"))
    assert response.status_code == 404 and "bob has no file at 'Private'" in response.text
    escape = _selection(users, "bob", "Photos")
    escape["files"][0].update(directory="/Photos/../../alice/files", name="Private")
    response = exapp.call("POST", "/api/files-action", "bob", json=escape)
    assert response.status_code == 400 and "leaves its folder" in response.text
    assert exapp.downloads_of("secret.jpg") == 0


def _selection(state, user: str, path: str) -> dict:
    """The v2 Files menu payload for one of user's own files or folders."""
    node = state.own_node(user, path)
    directory, _, name = ("/" + path).rpartition("/")
    return {"files": [{
        "fileId": node.fileid, "name": name, "directory": directory or "/",
        "etag": node.etag, "mime": node.mimetype, "fileType": "dir" if node.is_dir else "file",
        "size": node.size, "favorite": "false", "permissions": 31, "mtime": node.mtime,
        "userId": user, "instanceId": None,
    }]}



def test_admin_settings_and_quiet_hours_apply_to_the_next_cycle(exapp, users):
    hour = time.localtime().tm_hour
    users.app_config["quiet_hours"] = (f"{hour}-{(hour + 1) % 24}", 0)
    exapp.enable()
    progress = exapp.wait_for_cycles(1)
    assert progress["last_cycle"]["quiet"] is True
    assert exapp.downloads_of("gore.jpg") == 0

    users.app_config["quiet_hours"] = ("", 0)
    users.app_config["objects_enabled"] = ("0", 0)
    exapp.call("POST", "/api/files-action", "alice", json=_selection(users, "alice", "Trip"))
    progress = exapp.wait_for_cycles(2)
    assert progress["last_cycle"]["sync"]["added"] == 1  # the crawl quiet hours held back
    assert progress["last_cycle"]["processed"] == 3
    assert "faces" in {p["analyzer"] for p in progress["analyzers"]}
    assert "objects" not in {p["analyzer"] for p in progress["analyzers"]}
    assert users.tag_names_of(users.own_node("alice", "Trip/cat.jpg").fileid) == set()


def test_source_offers_a_shared_file_once_and_caps_downloads(nextcloud, users, tmp_path, monkeypatch):
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    async def crawl_and_download() -> tuple[list[NextcloudFile], list[str]]:
        source = NextcloudSource(max_download_bytes=FACE.stat().st_size)
        found = [file async for file in source.walk(["bob", "alice"])]
        by_name = {Path(file.path).name: file for file in found}
        gore = by_name["gore.jpg"]
        local = await source.download(gore.user, gore.path, downloads)
        assert local.read_bytes() == FACE.read_bytes()
        failures = []
        coffee = by_name["coffee.png"]
        # Too large by its listing, and by its stream when the listing is out of date.
        for file in (coffee, replace(coffee, size=1)):
            try:
                await source.download(file.user, file.path, downloads, file.size)
            except TooLarge as error:
                failures.append(str(error))
        return found, failures

    found, failures = asyncio.run(crawl_and_download())
    paths = sorted((file.user, file.path) for file in found)
    # bob is walked first, so the shared files are offered as his, once.
    assert paths == [("bob", "Photos/coffee.png"), ("bob", "Trip/cat.jpg"), ("bob", "Trip/gore.jpg")]
    assert len(failures) == 2, failures
    assert len(list(downloads.iterdir())) == 1  # the good download; failed ones are removed


def test_person_names_become_tags_when_the_admin_asks(exapp, users):
    photos = sorted((SHARED_DATA / "faces" / "Abdullah_Gul").iterdir())[:3]
    for photo in photos:
        users.put_file("alice", f"Gul/{photo.name}", photo.read_bytes())
    exapp.enable()
    exapp.wait_for_cycles(1)
    engine = Engine(Settings(data_dir=exapp.data_dir))
    with engine.sessions.begin() as session:
        persons = operations.list_persons(session)
        assert len(persons) == 1, persons
        operations.rename(session, persons[0].id, "Abdullah")
    gul = [users.own_node("alice", f"Gul/{photo.name}").fileid for photo in photos]
    assert all("Abdullah" not in users.tag_names_of(fileid) for fileid in gul)

    users.app_config["person_names_as_tags"] = ("1", 0)
    exapp.call("POST", "/api/files-action", "alice", json=_selection(users, "alice", "Gul"))
    exapp.wait_for_cycles(2)
    assert all("Abdullah" in users.tag_names_of(fileid) for fileid in gul)
    assert "Abdullah" not in users.tag_names_of(users.own_node("bob", "Photos/coffee.png").fileid)

    users.app_config["person_names_as_tags"] = ("0", 0)
    exapp.call("POST", "/api/files-action", "alice", json=_selection(users, "alice", "Gul"))
    exapp.wait_for_cycles(3)
    assert all("Abdullah" not in users.tag_names_of(fileid) for fileid in gul)


def test_a_user_that_cannot_be_walked_keeps_their_files(nextcloud, users, tmp_path, monkeypatch):
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    engine = Engine(Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS))
    known = NextcloudFile("ghost", "Photos/old.jpg", 9999, MediaKind.IMAGE, 10, 0, "e1")
    record_files(engine.sessions, NextcloudUsers(NextcloudSource(1 << 20), ["ghost"]), [known],
                 engine.pipeline)

    async def crawl() -> tuple[SyncReport, set[str]]:
        source = NextcloudSource(max_download_bytes=1 << 20)
        report = await sync(engine.sessions, NextcloudUsers(source, ["alice", "ghost"]), engine.pipeline)
        return report, source.unfinished_users

    report, unfinished = asyncio.run(crawl())
    assert unfinished == {"ghost"}  # no such account: Nextcloud refuses to act as them
    assert (report.added, report.removed) == (2, 0)
    with engine.sessions() as session:
        paths = set(session.scalars(select(schema.File.path)))
    assert paths == {"Photos/old.jpg", "Trip/cat.jpg", "Trip/gore.jpg"}


def test_webhooks_queue_new_files_and_moves_keep_results(exapp, users, nextcloud):
    exapp.enable()
    exapp.wait_for_cycles(1)
    new = users.put_file("alice", "Trip/new.jpg", FACE.read_bytes())
    calls = nextcloud.node_event_calls(NODE_CREATED, new, "alice")
    assert len(calls) == 1
    assert calls[0].send(exapp.url).json() == {"queued": 1}
    progress = exapp.wait_for_cycles(2)
    assert progress["last_cycle"]["sync"] is None and progress["last_cycle"]["processed"] == 1
    assert "People" in users.tag_names_of(new.fileid)

    # A folder moves: its files keep their results, nothing is downloaded again.
    folder = users.own_node("alice", "Trip")
    before = replace(folder)
    for node in list(users.nodes.values()):
        if node.owner == "alice" and (node.path == "Trip" or node.path.startswith("Trip/")):
            node.path = "Holidays" + node.path[len("Trip"):]
    calls = nextcloud.node_event_calls(NODE_RENAMED, before, "alice", target=folder)
    assert calls[0].send(exapp.url).json() == {"queued": 0}
    response = exapp.call("POST", "/api/files-action", "alice",
                          json=_selection(users, "alice", "Holidays"))
    assert response.json() == {"queued": 3}
    progress = exapp.wait_for_cycles(3)
    assert progress["last_cycle"]["processed"] == 0
    assert exapp.downloads_of("new.jpg") == 1 and exapp.downloads_of("gore.jpg") == 1
    with Engine(Settings(data_dir=exapp.data_dir)).sessions() as session:
        paths = set(session.scalars(select(schema.File.path)))
    assert {"Holidays/gore.jpg", "Holidays/cat.jpg", "Holidays/new.jpg"} <= paths
    assert not {p for p in paths if p.startswith("Trip/")}


def test_enable_crawl_webhook_action_and_disable_on_each_release(nextcloud_each, tmp_path, monkeypatch):
    """The flow that touches every AppAPI and webhook_listeners answer that differs between 33, 34, 35."""
    users = _fill(nextcloud_each.state)
    users.app.enabled = False
    settings = Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS,
                        crawl_interval_seconds=3600, objects_enabled=False)
    with serve(nextcloud_each, settings, monkeypatch) as exapp:
        exapp.enable()
        assert len(users.webhooks) == 4 and FILES_ACTION_NAME in users.file_actions
        assert "People" in users.tag_names_of(_wait_for_tag(exapp, "alice", "Trip/gore.jpg"))
        new = users.put_file("bob", "Photos/new.jpg", FACE.read_bytes())
        [call] = nextcloud_each.node_event_calls(NODE_CREATED, new, "bob")
        assert call.send(exapp.url).json() == {"queued": 1}
        _wait_for_tag(exapp, "bob", "Photos/new.jpg")
        response = exapp.call("POST", "/api/files-action", "bob", json=_selection(users, "bob", "Photos"))
        assert response.status_code == 200
        deadline = time.monotonic() + WAIT_SECONDS
        while not [n for n in users.notifications if n["user"] == "bob"]:
            assert time.monotonic() < deadline, exapp.progress()
            time.sleep(0.2)
        assert exapp.call("PUT", "/enabled?enabled=0", "admin").json() == {"error": ""}
        assert users.webhooks == {} and users.settings_forms == {} and users.file_actions == {}


def _wait_for_tag(exapp: ExApp, user: str, path: str) -> int:
    """The file id of user's file once it has the People tag."""
    node = exapp.state.own_node(user, path)
    deadline = time.monotonic() + WAIT_SECONDS
    while "People" not in exapp.state.tag_names_of(node.fileid):
        assert time.monotonic() < deadline, exapp.progress()
        time.sleep(0.2)
    return node.fileid


def test_webhooks_without_appapi_headers_are_rejected(exapp, users, nextcloud):
    exapp.enable()
    call = nextcloud.node_event_calls(NODE_CREATED, users.own_node("bob", "Photos/coffee.png"))[0]
    response = httpx.post(exapp.url + call.path, json=call.payload)
    assert response.status_code == 401
    assert call.send(exapp.url).json() == {"queued": 1}


def test_events_outside_the_users_files_are_ignored(exapp, users, nextcloud):
    exapp.enable()
    call = nextcloud.node_event_calls(NODE_CREATED, users.own_node("bob", "Photos/coffee.png"))[0]
    call.payload["event"]["node"]["path"] = "/bob/files_trashbin/files/coffee.png.d1700000000"
    response = call.send(exapp.url)
    assert response.status_code == 200 and response.json() == {"queued": 0}


@pytest.mark.parametrize(("hours", "hour", "quiet"), [
    ("22-6", 23, True), ("22-6", 5, True), ("22-6", 6, False), ("22-6", 12, False),
    ("1-3", 1, True), ("1-3", 3, False), ("", 3, False), ("4-4", 4, False),
])
def test_quiet_hours(hours, hour, quiet):
    assert in_quiet_hours(hours, datetime(2026, 1, 1, hour)) is quiet


def test_results_for_content_that_changed_meanwhile_are_not_recorded(
    nextcloud, users, tmp_path, monkeypatch
):
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    engine = Engine(Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS))
    source = NextcloudSource(max_download_bytes=1 << 20)
    asyncio.run(sync(engine.sessions, NextcloudUsers(source, ["alice"]), engine.pipeline))
    with engine.sessions() as session:
        row = session.scalar(select(schema.File).where(schema.File.path == "Trip/gore.jpg"))
    with closing(worker_fetcher(engine.settings)) as fetcher:
        processor = FileProcessor.from_settings(engine.settings, engine.sessions, engine.pipeline,
                                                fetcher)
        claimed = processor.claim(row.id)
        node = users.put_file("alice", "Trip/gore.jpg", COFFEE.read_bytes())  # while it is claimed
        record_files(engine.sessions, NextcloudUsers(source, ["alice"]),
                     [replace(stored_file("alice", row), etag=node.etag)], engine.pipeline)
        assert processor.process(claimed).recorded is False
    with engine.sessions() as session:
        statuses = set(session.scalars(
            select(schema.Task.status).join(schema.File).where(schema.File.path == "Trip/gore.jpg")
        ))
    assert statuses == {"pending"}
    assert users.tag_names_of(users.own_node("alice", "Trip/gore.jpg").fileid) == set()


def test_work_resumes_after_nextcloud_answered_503_for_a_while(nextcloud, users, tmp_path, monkeypatch):
    nextcloud.state.app.enabled = False
    settings = Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS, crawl_interval_seconds=1,
                        retry_delay_seconds=0.5)
    with serve(nextcloud, settings, monkeypatch) as exapp:
        nextcloud.state.fail_for(3, status=503, path_prefix="/remote.php/dav")  # not OCS
        exapp.enable()
        engine = Engine(settings)
        deadline = time.monotonic() + 60
        while True:  # until the work is finished: every task done, the photo tagged
            with engine.sessions() as session:
                statuses = session.execute(select(schema.Task.status)).scalars().all()
            gore = users.own_node("alice", "Trip/gore.jpg")
            tagged = "People" in users.tag_names_of(gore.fileid)
            if tagged and statuses and set(statuses) == {"done"}:
                break
            assert time.monotonic() < deadline, (statuses, exapp.progress())
            time.sleep(0.2)
    assert nextcloud.state.faults.served > 0  # the first crawl did meet the 503s


def _faces_of(exapp, user: str) -> int:
    """How many faces the store holds for user's Nextcloud files."""
    with Engine(Settings(data_dir=exapp.data_dir)).sessions() as session:
        return len(session.scalars(
            select(schema.Face.id).join(schema.File).join(schema.Root)
            .where(schema.Root.source == "nextcloud", schema.Root.location == user)
        ).all())


def test_users_opt_out_opt_in_and_delete_their_face_data(exapp, users):
    choice = personal_settings
    users.preferences[("bob", choice.ANALYZE)] = ("0", 0)
    bobs = users.put_file("bob", "Photos/gore2.jpg", FACE.read_bytes())
    exapp.enable()
    progress = exapp.wait_for_cycles(1)
    assert progress["last_cycle"]["opted_out"] == 1
    assert exapp.downloads_of("gore2.jpg") == 0 and exapp.downloads_of("coffee.png") == 0
    assert "People" in users.tag_names_of(users.own_node("alice", "Trip/gore.jpg").fileid)
    response = exapp.call("POST", "/api/files-action", "bob", json=_selection(users, "bob", "Photos"))
    assert response.status_code == 403 and "opted out" in response.text

    # bob opts in and asks for his photos: they are done, and he is told what was found.
    users.preferences[("bob", choice.ANALYZE)] = ("1", 0)
    response = exapp.call("POST", "/api/files-action", "bob", json=_selection(users, "bob", "Photos"))
    assert response.json() == {"queued": 2}
    exapp.wait_for_cycles(2)
    assert "People" in users.tag_names_of(bobs.fileid) and _faces_of(exapp, "bob") == 1
    [note] = [n for n in users.notifications if n["user"] == "bob"]
    assert note["subject"] == "Recognize analyzed 2 files"
    assert "1 face" in note["message"] and "People (1)" in note["message"]

    # bob opts out and asks for his face data to go: faces, persons and their tags go.
    users.preferences[("bob", choice.ANALYZE)] = ("", 0)  # PHP's false
    users.preferences[("bob", choice.DELETE_FACES)] = ("1", 0)
    exapp.call("POST", "/api/files-action", "alice", json=_selection(users, "alice", "Trip"))
    exapp.wait_for_cycles(3)
    assert _faces_of(exapp, "bob") == 0 and _faces_of(exapp, "alice") == 1
    assert "People" not in users.tag_names_of(bobs.fileid)
    assert "People" in users.tag_names_of(users.own_node("alice", "Trip/gore.jpg").fileid)
    assert exapp.downloads_of("gore2.jpg") == 1

    # Back in: his faces are found again.
    users.preferences[("bob", choice.ANALYZE)] = ("1", 0)
    exapp.call("POST", "/api/files-action", "alice", json=_selection(users, "alice", "Trip"))
    exapp.wait_for_cycles(4)
    assert _faces_of(exapp, "bob") == 1 and "People" in users.tag_names_of(bobs.fileid)


def test_files_menu_requests_go_ahead_of_the_backlog(exapp, users):
    for index in range(6):
        users.put_file("bob", f"Backlog/cat{index}.jpg", CAT.read_bytes())
    asked = users.put_file("alice", "Zzz/last.jpg", FACE.read_bytes())  # last by path
    exapp.enable()
    exapp.call("POST", "/api/files-action", "alice", json=_selection(users, "alice", "Zzz"))
    exapp.wait_for_cycles(1)
    downloads = [path.rpartition("/")[2] for method, path, _user in users.requests
                 if method == "GET" and "/remote.php/dav/files/" in path]
    assert downloads.index("last.jpg") < downloads.index("cat0.jpg")
    assert "People" in users.tag_names_of(asked.fileid)


def test_a_deleted_file_loses_its_faces_and_results_at_once(exapp, users, nextcloud):
    exapp.enable()
    exapp.wait_for_cycles(1)
    gore = users.own_node("alice", "Trip/gore.jpg")
    assert _faces_of(exapp, "alice") == 1
    users.delete_node(gore)
    [call] = nextcloud.node_event_calls(NODE_DELETED, gore, "alice")
    assert call.send(exapp.url).json() == {"forgotten": 1}
    assert _faces_of(exapp, "alice") == 0
    with Engine(Settings(data_dir=exapp.data_dir)).sessions() as session:
        assert session.scalar(select(schema.File).where(schema.File.remote_id == gore.fileid)) is None
        assert not session.scalars(select(schema.SinkTag).where(
            schema.SinkTag.remote_id == gore.fileid)).all()
    progress = exapp.wait_for_cycles(2)  # regroups without the face
    assert progress["last_cycle"]["processed"] == 0
    folder = users.own_node("alice", "Trip")
    users.delete_node(folder)
    [call] = nextcloud.node_event_calls(NODE_DELETED, folder, "alice")
    assert call.send(exapp.url).json() == {"forgotten": 1}  # cat.jpg


@pytest.mark.parametrize("without", ["nextcloud29", "webhook_listeners_disabled"])
def test_without_webhooks_the_periodic_crawl_stands_in(nextcloud, users, tmp_path, monkeypatch, without):
    if without == "nextcloud29":  # out of support, but what a server before webhook_listeners answers
        nextcloud.state.nextcloud_version, nextcloud.state.aa_version = (29, 0, 6), "3.2.3"
    else:  # a maintained release whose admin disabled the app
        nextcloud.state.disabled_apps.add("webhook_listeners")
    nextcloud.state.app.enabled = False
    settings = Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS,
                        crawl_interval_seconds=1)
    with serve(nextcloud, settings, monkeypatch) as exapp:
        exapp.enable()
        assert FILES_ACTION_NAME in users.file_actions and users.webhooks == {}
        exapp.wait_for_cycles(1)
        new = users.put_file("alice", "Trip/new.jpg", FACE.read_bytes())  # no event comes
        deadline = time.monotonic() + WAIT_SECONDS
        while "People" not in users.tag_names_of(new.fileid):
            assert time.monotonic() < deadline, exapp.progress()
            time.sleep(0.2)


def test_wakes_do_not_put_off_the_periodic_crawl(nextcloud, users, tmp_path, monkeypatch):
    """Files menu requests every fraction of a second each run a cycle at once; the crawl
    still comes an interval after the last one, and finds a file no event told of."""
    nextcloud.state.app.enabled = False
    settings = Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS,
                        crawl_interval_seconds=4)
    with serve(nextcloud, settings, monkeypatch) as exapp:
        exapp.enable()
        deadline = time.monotonic() + WAIT_SECONDS
        while sum(row["pending"] for row in exapp.wait_for_cycles(1)["analyzers"]):
            assert time.monotonic() < deadline, "the first crawl's files were not analyzed"
            time.sleep(0.2)
        cycles = exapp.progress()["cycles"]
        while not ((progress := exapp.progress())["cycles"] > cycles and progress["last_cycle"]["sync"]):
            assert time.monotonic() < deadline, "no crawl after the first"
            time.sleep(0.05)  # a crawl just ended: the next is an interval away
        cycles = progress["cycles"]
        users.put_file("alice", "Trip/new.jpg", FACE.read_bytes())  # no event comes
        put = time.monotonic()
        engine = Engine(Settings(data_dir=exapp.data_dir))
        while True:
            with engine.sessions() as session:
                if session.scalar(select(schema.File.id).where(schema.File.path == "Trip/new.jpg")):
                    break
            assert time.monotonic() - put < 30, exapp.progress()  # 4 s interval, cycles of < 1 s
            response = exapp.call("POST", "/api/files-action", "bob",
                                  json=_selection(users, "bob", "Photos"))
            assert response.status_code == 200, response.text
            time.sleep(0.2)
        assert exapp.progress()["cycles"] > cycles + 2  # the requests did run cycles of their own


def test_a_backlog_does_not_hold_back_the_next_crawl(nextcloud, users, tmp_path, monkeypatch):
    """Workers that cannot finish (paused here, as during a backlog of hours): cycles still
    end when the next crawl is due, so it finds a file no event told of, and the admin form
    is refreshed each time."""
    nextcloud.state.app.enabled = False
    settings = Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS,
                        crawl_interval_seconds=2)
    Engine(settings).queue.pause()
    with serve(nextcloud, settings, monkeypatch) as exapp:
        exapp.enable()
        progress = exapp.wait_for_cycles(2)
        assert sum(row["pending"] for row in progress["analyzers"]) > 0  # the crawl's files wait
        assert "faces: 0 done, " in users.settings_forms[FORM_ID]["description"]  # refreshed
        users.put_file("alice", "Trip/new.jpg", FACE.read_bytes())  # no event comes
        engine = Engine(Settings(data_dir=exapp.data_dir))
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            with engine.sessions() as session:
                if session.scalar(select(schema.File.id).where(schema.File.path == "Trip/new.jpg")):
                    break
            assert time.monotonic() < deadline, exapp.progress()
            time.sleep(0.2)
        with engine.sessions() as session:
            assert schema.TaskStatus.DONE not in set(session.scalars(select(schema.Task.status)))


def test_only_optional_analyzers_models_may_be_missing_at_init():
    from ex_app.analyzers.registry import needed_models

    required, optional = needed_models(Settings(landmarks_enabled=True, actions_enabled=True))
    assert "landmarks_europe" in optional and "movinet_a0_stream" in optional
    assert "efficientnet_lite0" in required and "efficientnet_lite0" not in optional  # objects
    assert needed_models(Settings())[1] == []  # off by default: nothing fetched from TF Hub


def test_a_crawl_sends_files_to_the_workers_in_chunks_as_it_walks(nextcloud, users, tmp_path,
                                                                   monkeypatch):
    from ex_app.sources import sync as syncing

    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(syncing, "CHUNK", 2)
    engine = Engine(Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS))
    chunks: list[tuple[list[int], int]] = []

    def on_chunk(fresh: list[int]) -> None:  # what is in the store when each chunk is sent
        with engine.sessions() as session:
            chunks.append((fresh, len(session.scalars(select(schema.File.id)).all())))

    source = NextcloudSource(max_download_bytes=1 << 20)
    report = asyncio.run(sync(engine.sessions, NextcloudUsers(source, ["alice", "bob"]),
                              engine.pipeline, on_chunk=on_chunk))
    assert [len(fresh) for fresh, _stored in chunks] == [2, 1]
    assert chunks[0][1] == 2  # the first chunk was sent before the walk had found the rest
    assert report.added == 3


def test_a_nextcloud_worker_ends_without_asyncio_warnings(nextcloud, users, tmp_path, monkeypatch):
    """A worker process that downloaded from Nextcloud closes its connections when it ends:
    no 'Task was destroyed but it is pending!' for niquests' idle-connection watcher."""
    import subprocess
    import sys

    from ex_app.service.worker_pool import worker_environment
    from ex_app.work.queue import BACKLOG

    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS, faces_enabled=False,
                        music_enabled=False, video_enabled=False, places_enabled=False)
    engine = Engine(settings)
    fresh: list[int] = []
    asyncio.run(sync(engine.sessions, NextcloudUsers(NextcloudSource(1 << 20), ["bob"]), engine.pipeline,
                     on_chunk=fresh.extend))
    assert engine.queue.enqueue_files(engine.sessions, fresh, BACKLOG) == 3
    result = subprocess.run([sys.executable, "-m", "ex_app", "worker", "--exit-when-done"],
                            env=worker_environment(settings), capture_output=True, text=True,
                            timeout=WAIT_SECONDS, check=False)
    assert result.returncode == 0, result.stderr
    assert "3 files analyzed" in result.stdout, result.stdout + result.stderr
    assert "Task was destroyed" not in result.stderr, result.stderr
    assert sum(1 for method, path, _user in users.requests
               if method == "GET" and "/remote.php/dav/files/bob/" in path) >= 3
