"""Routes take what they need through FastAPI dependencies (ex_app.web.dependencies), so a test
can hand them its own; and the People page's photos come through the workers' fetcher."""

from __future__ import annotations

import asyncio
import base64

from conftest import SHARED_DATA
from fastapi.testclient import TestClient
from nextcloud_standin.fixture import Nextcloud

from ex_app.config import Settings
from ex_app.main import create_app
from ex_app.media.kinds import MediaKind
from ex_app.service.recognize import RecognizeService
from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource, NextcloudUsers
from ex_app.store import schema
from ex_app.web.admin_settings import settings_form
from ex_app.web.dependencies import the_service, user_is_admin
from ex_app.sources.sync import sync
from ex_app.store.files import record_files

FACE = SHARED_DATA / "faces" / "Al_Gore" / "lfw_Al_Gore_0004.jpg"
SECRET = "a-secret-no-nextcloud-knows"


def signed(user: str) -> dict[str, str]:
    """The headers AppAPI signs a request with, for user."""
    token = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
    return {"EX-APP-ID": "recognize_ex", "EX-APP-VERSION": "0.1.0", "AUTHORIZATION-APP-API": token}


def test_a_test_hands_the_routes_its_own_service_and_admin_check_without_nextcloud(tmp_path, monkeypatch):
    """No Nextcloud runs (its URL is a closed port): the app is not started (no lifespan), and
    the routes get the service and the admin check from the test's overrides."""
    for name, value in {"NEXTCLOUD_URL": "http://127.0.0.1:9", "APP_ID": "recognize_ex",
                        "APP_SECRET": SECRET, "APP_VERSION": "0.1.0", "AA_VERSION": "3.0.0"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path / "data")
    service = RecognizeService(settings, settings_form)
    photos = [NextcloudFile("alice", f"Photos/{n}.jpg", n, MediaKind.IMAGE, 10, 1, f"e{n}") for n in (1, 2)]
    source = NextcloudUsers(NextcloudSource(1 << 20), ["alice"])
    record_files(service.current_engine.sessions, source, photos, service.current_engine.pipeline)
    app = create_app(settings)
    app.dependency_overrides[the_service] = lambda: service
    client = TestClient(app)

    def progress(route: str, user: str) -> dict:
        response = client.get(route, headers=signed(user))
        assert response.status_code == 200, response.text
        return response.json()

    def pending(rows: list[dict]) -> int:
        return sum(row["pending"] for row in rows)

    app.dependency_overrides[user_is_admin] = lambda: False
    alices, bobs = progress("/api/progress", "alice"), progress("/api/progress", "bob")
    assert pending(alices["analyzers"]) >= 2 and list(alices["users"]) == ["alice"]
    assert pending(bobs["analyzers"]) == 0 and alices["running"] is False
    page = progress("/api/people/progress", "alice")
    assert pending(page["analyzers"]) == pending(alices["analyzers"])

    app.dependency_overrides[user_is_admin] = lambda: True  # bob, an admin: everyone's figures
    assert pending(progress("/api/progress", "bob")["users"]["alice"]) == pending(alices["analyzers"])
    assert client.get("/api/progress").status_code == 401  # the access rule still applies


def test_photo_previews_come_through_the_workers_fetcher(nextcloud: Nextcloud, tmp_path, monkeypatch):
    """A photo downloads and shows; Nextcloud answering 503 is a 503 to try again; a photo gone
    from Nextcloud is a 404."""
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    nextcloud.state.put_file("alice", "Photos/gore.jpg", FACE.read_bytes())
    nextcloud.state.put_file("alice", "Photos/gore2.jpg", FACE.read_bytes())
    settings = Settings(data_dir=tmp_path / "data")
    app = create_app(settings)
    nextcloud.state.app.enabled = False
    with TestClient(app) as client:  # its lifespan: the app's own service, not started
        nextcloud.state.app.enabled = True  # AppAPI lets an enabled app's calls through
        engine = app.state.service.current_engine
        source = NextcloudSource(settings.nextcloud.max_download_bytes)
        asyncio.run(sync(engine.sessions, NextcloudUsers(source, ["alice"]), engine.pipeline))
        with engine.sessions() as session:
            ids = {row.path: row.id for row in session.query(schema.File)}

        def preview(path: str, user: str = "alice"):
            return client.get(f"/api/people/photos/{ids[path]}/preview?size=512",
                              headers=nextcloud.headers_to_exapp(user))

        shown = preview("Photos/gore.jpg")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert shown.content[:2] == b"\xff\xd8"
        assert preview("Photos/gore.jpg", "bob").status_code == 404  # not bob's photo

        nextcloud.state.fail_next(1, status=503, path_prefix="/remote.php/dav")
        away = preview("Photos/gore2.jpg")
        assert away.status_code == 503, away.text
        nextcloud.state.delete_node(nextcloud.state.own_node("alice", "Photos/gore2.jpg"))
        gone = preview("Photos/gore2.jpg")
        assert gone.status_code == 404 and "gone" in gone.text, gone.text

