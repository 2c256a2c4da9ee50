"""The Nextcloud stand-in, driven through nc_py_api's async API exactly as an ExApp drives Nextcloud."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar
from xml.etree import ElementTree

import httpx
import pytest
from fastapi import FastAPI, Request
from nc_py_api import AsyncNextcloudApp, NextcloudException, NextcloudExceptionNotFound
from nc_py_api.ex_app import AppAPIAuthMiddleware, LogLvl
from nc_py_api.ex_app.ui.settings import SettingsField, SettingsFieldType, SettingsForm
from nextcloud_standin.fixture import APP_ID, Nextcloud
from nextcloud_standin.releases import MAINTAINED, RELEASES
from nextcloud_standin.server import BackgroundServer
from nextcloud_standin.webhook_events import NODE_CREATED, NODE_DELETED

T = TypeVar("T")
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"


def run(awaitable: Awaitable[T]) -> T:
    return asyncio.run(awaitable)


@pytest.fixture
def app_env(nextcloud: Nextcloud, monkeypatch: pytest.MonkeyPatch) -> Nextcloud:
    """The ExApp's environment pointing at the stand-in."""
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    return nextcloud


@pytest.fixture
def each_env(nextcloud_each: Nextcloud, monkeypatch: pytest.MonkeyPatch) -> Nextcloud:
    """The same for each maintained release, for the answers that differ between them."""
    for name, value in nextcloud_each.app_env().items():
        monkeypatch.setenv(name, value)
    return nextcloud_each


async def as_user(user: str) -> AsyncNextcloudApp:
    nc = AsyncNextcloudApp()
    await nc.set_user(user)
    return nc


def test_info_xml_names_the_releases_the_stand_in_speaks() -> None:
    info = ElementTree.parse(Path(__file__).parents[1] / "appinfo" / "info.xml").getroot()
    nextcloud = info.find("dependencies/nextcloud")
    assert (int(nextcloud.get("min-version")), int(nextcloud.get("max-version"))) == (MAINTAINED[0], MAINTAINED[-1])
    assert info.findtext("id") == APP_ID
    assert all(RELEASES[major].major == major for major in MAINTAINED)


def test_app_env_names_everything_an_exapp_needs(nextcloud: Nextcloud) -> None:
    env = nextcloud.app_env()
    assert env["NEXTCLOUD_URL"] == nextcloud.url
    assert env["APP_ID"] == APP_ID and env["APP_SECRET"] == nextcloud.app_secret
    assert {"APP_VERSION", "APP_HOST", "APP_PORT", "AA_VERSION", "APP_PERSISTENT_STORAGE"} <= env.keys()


# --- AppAPI authentication ---------------------------------------------------------------------


def test_requests_carry_appapi_headers(app_env: Nextcloud) -> None:
    run(as_user("alice"))  # set_user refreshes the capabilities
    state = app_env.state
    assert state.requests == [("GET", "/ocs/v1.php/cloud/capabilities", "alice")]
    headers = state.request_headers[0]
    assert base64.b64decode(headers["authorization-app-api"]).decode() == f"alice:{app_env.app_secret}"
    assert headers["ex-app-id"] == APP_ID and headers["ex-app-version"] == "0.1.0"
    assert headers["aa-version"] == state.aa_version and headers["ocs-apirequest"] == "true"


def test_wrong_secret_is_rejected_like_nextcloud(app_env: Nextcloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_SECRET", "not-the-secret")

    async def scenario() -> None:
        nc = AsyncNextcloudApp()
        with pytest.raises(NextcloudException) as ocs:
            await nc.users_list()
        assert ocs.value.status_code == 401
        await nc.set_user("alice")  # capabilities are public, as in Nextcloud
        with pytest.raises(NextcloudException) as dav:
            await nc.files.listdir()
        assert dav.value.status_code == 401

    run(scenario())
    raw = httpx.get(f"{app_env.url}/ocs/v2.php/apps/app_api/api/v1/users?format=json",
                    headers={**app_env.headers_to_exapp(secret="wrong"), "OCS-APIRequest": "true"})
    assert raw.status_code == 401
    assert raw.json()["ocs"] == {"meta": {"status": "failure", "statuscode": 997,
                                          "message": "AppAPI authentication failed"}, "data": []}


def test_exapp_version_is_required_and_upgrades_are_recorded(app_env: Nextcloud,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{app_env.url}/ocs/v1.php/apps/app_api/api/v1/users?format=json"
    headers = {**app_env.headers_to_exapp(), "OCS-APIRequest": "true"}
    del headers["EX-APP-VERSION"]
    assert httpx.get(url, headers=headers).status_code == 401
    monkeypatch.setenv("APP_VERSION", "0.2.0")
    assert run(AsyncNextcloudApp().users_list()) == ["admin", "alice", "bob"]
    assert app_env.state.app.version == "0.2.0"


def test_unknown_user_and_disabled_app_are_rejected(app_env: Nextcloud) -> None:
    with pytest.raises(NextcloudException) as unknown:
        run(_preference_as("mallory"))
    assert unknown.value.status_code == 401
    app_env.state.app.enabled = False

    async def disabled() -> tuple[bool, int]:
        nc = AsyncNextcloudApp()
        enabled = await nc.enabled_state
        with pytest.raises(NextcloudException) as e:
            await nc.users_list()
        return enabled, e.value.status_code

    assert run(disabled()) == (False, 401)


async def _preference_as(user: str) -> str | None:
    return await (await as_user(user)).preferences_ex.get_value("x")


@pytest.fixture
def tiny_exapp(app_env: Nextcloud) -> Iterator[tuple[str, list[dict]]]:
    """A minimal ExApp behind nc_py_api's AppAPIAuthMiddleware, recording what its routes receive."""
    received: list[dict] = []
    app = FastAPI()
    app.add_middleware(AppAPIAuthMiddleware)

    @app.post("/webhooks/node")
    async def node_event(request: Request) -> dict:
        received.append({"user": request.scope["username"], "payload": await request.json()})
        return {}

    server = BackgroundServer(app)
    server.start()
    try:
        yield server.url, received
    finally:
        server.stop()


def test_headers_to_exapp_pass_nc_py_api_checks(app_env: Nextcloud, tiny_exapp: tuple[str, list[dict]]) -> None:
    url, received = tiny_exapp
    payload = b'{"ping": 1}'
    good = httpx.post(f"{url}/webhooks/node", headers=app_env.headers_to_exapp("alice"), content=payload)
    forged = httpx.post(f"{url}/webhooks/node", headers=app_env.headers_to_exapp("alice", secret="nope"),
                        content=payload)
    assert good.status_code == 200 and forged.status_code == 401
    assert received == [{"user": "alice", "payload": {"ping": 1}}]


def test_node_events_reach_the_exapp_as_webhook_listeners_sends_them(
        app_env: Nextcloud, tiny_exapp: tuple[str, list[dict]]) -> None:
    url, received = tiny_exapp
    photo = app_env.state.put_file("alice", "Photos/a.jpg", JPEG)
    run(AsyncNextcloudApp().webhooks.register("POST", "/webhooks/node", NODE_CREATED,
                                              event_filter={"event.node.path": {"$regex": "/^\\/alice\\//"}}))
    other = app_env.state.put_file("bob", "b.jpg", JPEG)
    calls = app_env.node_event_calls(NODE_CREATED, photo, acting_user="alice")
    assert app_env.node_event_calls(NODE_CREATED, other, acting_user="bob") == []  # filtered out
    assert app_env.node_event_calls(NODE_DELETED, photo, acting_user="alice") == []  # other event
    assert [call.send(url).status_code for call in calls] == [200]
    assert received[0]["user"] == ""  # registered without a user: called without one
    event = received[0]["payload"]["event"]
    assert event == {"class": NODE_CREATED, "node": {"id": photo.fileid, "path": "/alice/files/Photos/a.jpg"}}
    assert received[0]["payload"]["user"] == {"uid": "alice", "displayName": "Alice"}


# --- OCS ------------------------------------------------------------------------------------------


def test_capabilities_and_version(each_env: Nextcloud) -> None:
    """As on a real Nextcloud: the ExApp without a user sees only the public capabilities."""
    app_env, release = each_env, each_env.state.release
    async def scenario() -> tuple[dict, dict, dict]:
        nc = AsyncNextcloudApp()
        version, public = await nc.srv_version, await nc.capabilities
        await nc.set_user("alice")
        return version, public, await nc.capabilities

    version, public, capabilities = run(scenario())
    assert version["major"] == release.major and version["string"] == release.version_string
    assert public["app_api"] == {"version": release.app_api}
    assert "files" not in public and "notifications" not in public and "webhook_listeners" not in public
    assert capabilities["app_api"]["loglevel"] == app_env.state.loglevel
    assert "notifications" in capabilities and "files" in capabilities
    assert "webhook_listeners" not in capabilities  # that app registers none


def test_users_lists(app_env: Nextcloud) -> None:
    async def scenario() -> tuple[list, list, list]:
        nc = AsyncNextcloudApp()
        every = await nc.users_list()
        await nc.set_user("admin")
        admin_view = await nc.users.get_list(limit=2)
        await nc.set_user("alice")
        return every, admin_view, await nc.users.get_list()

    every, admin_view, alice_view = run(scenario())
    assert every == ["admin", "alice", "bob"]
    assert admin_view == ["admin", "alice"]
    assert alice_view == []  # neither admin nor subadmin


def test_app_config_set_get_delete(each_env: Nextcloud) -> None:
    app_env = each_env
    async def scenario() -> tuple:
        nc = AsyncNextcloudApp()
        await nc.appconfig_ex.set_value("cursor", "42")
        await nc.appconfig_ex.set_value("token", "s3cret", sensitive=True)
        await nc.appconfig_ex.set_value("token", "t2")  # keeps the sensitive flag
        values = {r.key: r.value for r in await nc.appconfig_ex.get_values(["cursor", "token", "absent"])}
        await nc.appconfig_ex.delete("cursor")
        with pytest.raises(NextcloudExceptionNotFound):
            await nc.appconfig_ex.delete("cursor", not_fail=False)
        return values, await nc.appconfig_ex.get_value("cursor", default="gone")

    values, after = run(scenario())
    assert values == {"cursor": "42", "token": "t2"}
    assert after == "gone"
    assert app_env.state.app_config == {"token": ("t2", 1)}


def test_user_preferences_are_per_user(each_env: Nextcloud) -> None:
    app_env = each_env
    async def scenario() -> tuple:
        nc = await as_user("alice")
        await nc.preferences_ex.set_value("enabled", "true")
        await nc.set_user("bob")
        bob = await nc.preferences_ex.get_value("enabled")
        await nc.set_user("alice")
        alice = await nc.preferences_ex.get_value("enabled")
        await nc.preferences_ex.delete(["enabled"])
        return alice, bob, await nc.preferences_ex.get_value("enabled")

    assert run(scenario()) == ("true", None, None)
    assert app_env.state.preferences == {}
    raw = httpx.post(f"{app_env.url}/ocs/v2.php/apps/app_api/api/v1/ex-app/preference?format=json",
                     headers={**app_env.headers_to_exapp("bob"), "OCS-APIRequest": "true"},
                     json={"configKey": "k", "configValue": 5})
    saved = raw.json()["ocs"]["data"]
    row_id = saved.pop("id")  # the saved row's id up to AppAPI 34; from 35 no row (IUserConfig)
    assert isinstance(row_id, int) if app_env.state.release.config_rows else row_id is None
    assert saved == {"user_id": "bob", "appid": APP_ID, "configkey": "k", "configvalue": "5", "sensitive": 0}


def test_init_status_and_enabled_state(app_env: Nextcloud) -> None:
    app = app_env.state.app
    app.enabled, app.initializing = False, True

    async def scenario() -> tuple[bool, bool]:
        nc = AsyncNextcloudApp()
        before = await nc.enabled_state
        await nc.set_init_status(40)
        await nc.set_init_status(100)
        return before, await nc.enabled_state

    assert run(scenario()) == (False, True)
    assert app.progress_history == [(40, ""), (100, "")]
    assert app.progress == 100 and not app.initializing


def test_deprecated_init_status_route(app_env: Nextcloud) -> None:
    headers = {**app_env.headers_to_exapp(), "OCS-APIRequest": "true"}
    url = f"{app_env.url}/ocs/v1.php/apps/app_api/apps/status"
    assert httpx.put(f"{url}/{APP_ID}?format=json", headers=headers, json={"progress": 70}).status_code == 200
    other = httpx.put(f"{url}/someapp?format=json", headers=headers, json={"progress": 70})
    assert other.json()["ocs"]["meta"]["statuscode"] == 404
    assert app_env.state.app.progress_history == [(70, "")]


def test_init_error_is_recorded(app_env: Nextcloud) -> None:
    run(AsyncNextcloudApp().set_init_status(10, "models could not be fetched"))
    assert app_env.state.app.error == "models could not be fetched"


def test_file_actions_menu_register_get_unregister(each_env: Nextcloud) -> None:
    app_env = each_env

    async def register() -> object:
        nc = AsyncNextcloudApp()
        await nc.ui.files_dropdown_menu.register_ex("recognize_file", "Recognize", "/api/v1/files/action",
                                                    mime="image", icon="img/app.svg")
        return await nc.ui.files_dropdown_menu.get_entry("recognize_file")

    async def unregister() -> object:
        nc = AsyncNextcloudApp()
        await nc.ui.files_dropdown_menu.unregister("recognize_file")
        with pytest.raises(NextcloudExceptionNotFound):
            await nc.ui.files_dropdown_menu.unregister("recognize_file", not_fail=False)
        return await nc.ui.files_dropdown_menu.get_entry("recognize_file")

    entry = run(register())
    assert entry.name == "recognize_file" and entry.mime == "image" and entry.version == "2.0"
    assert entry.action_handler == "api/v1/files/action" and entry.permissions == 31  # AppAPI strips the "/"
    registered = app_env.state.file_actions["recognize_file"]
    assert registered["appid"] == APP_ID and registered["display_name"] == "Recognize"
    release = app_env.state.release  # AppAPI 35: a v2 action may be the default one
    assert ("default_action" in registered) is release.file_action_default
    assert run(unregister()) is None and app_env.state.file_actions == {}
    bad = httpx.post(f"{app_env.url}/ocs/v2.php/apps/app_api/api/v2/ui/files-actions-menu?format=json",
                     headers={**app_env.headers_to_exapp(), "OCS-APIRequest": "true"},
                     json={"name": "x", "displayName": "X", "actionHandler": "x", "defaultAction": "always"})
    assert bad.status_code == (400 if release.file_action_default else 200)


def test_top_menu(app_env: Nextcloud) -> None:
    async def scenario() -> tuple:
        nc = AsyncNextcloudApp()
        await nc.ui.top_menu.register("people", "People", "img/people.svg", admin_required=True)
        entry = await nc.ui.top_menu.get_entry("people")
        await nc.ui.top_menu.unregister("people")
        return entry, await nc.ui.top_menu.get_entry("people")

    entry, gone = run(scenario())
    assert entry.display_name == "People" and entry.admin_required and entry.icon == "img/people.svg"
    assert gone is None and app_env.state.top_menu == {}


def test_declarative_settings(app_env: Nextcloud) -> None:
    form = SettingsForm(id="recognize_settings", section_type="admin", section_id="recognize", title="Recognize",
                        fields=[SettingsField(id="faces", title="Faces", type=SettingsFieldType.CHECKBOX,
                                              default=True)])

    async def scenario() -> tuple:
        nc = AsyncNextcloudApp()
        await nc.ui.settings.register_form(form)
        got = await nc.ui.settings.get_entry("recognize_settings")
        await nc.ui.settings.unregister_form("recognize_settings")
        return got, await nc.ui.settings.get_entry("recognize_settings")

    got, gone = run(scenario())
    assert got.title == "Recognize" and got.section_type == "admin"
    assert [f.id for f in got.fields] == ["faces"] and got.fields[0].type == SettingsFieldType.CHECKBOX
    assert gone is None


def test_declarative_forms_api_as_the_settings_page_uses_it(each_env: Nextcloud) -> None:
    """GET .../declarative/forms and POST .../declarative/value with a user's login (Basic here)."""
    admin_form = SettingsForm(id="tuning", section_type="admin", section_id="ai", title="Tuning", fields=[
        SettingsField(id="level", title="Level", type=SettingsFieldType.SELECT, default="High",
                      options=["Low", "High"]),
        SettingsField(id="ratio", title="Ratio", type=SettingsFieldType.TEXT, default="0.5"),
        SettingsField(id="side", title="Side", type=SettingsFieldType.NUMBER, default=1600)])
    personal_form = SettingsForm(id="mine", section_type="personal", section_id="declarative_settings",
                                 title="Mine", fields=[SettingsField(id="on", title="On",
                                                                     type=SettingsFieldType.CHECKBOX, default=True)])

    async def scenario() -> None:
        nc = AsyncNextcloudApp()
        await nc.ui.settings.register_form(admin_form)
        await nc.ui.settings.register_form(personal_form)

    run(scenario())
    base = f"{each_env.url}/ocs/v2.php/settings/api/declarative"
    ocs = {"OCS-APIRequest": "true", "Accept": "application/json"}

    def forms(user: str) -> dict:
        response = httpx.get(f"{base}/forms", headers=ocs, auth=(user, user))
        assert response.status_code == 200, response.text
        return {f["id"]: {field["id"]: field["value"] for field in f["fields"]} for f in response.json()["ocs"]["data"]}

    def save(user: str, field: str, value: object) -> httpx.Response:
        return httpx.post(f"{base}/value", headers=ocs, auth=(user, user),
                          json={"app": APP_ID, "formId": "tuning" if field != "on" else "mine", "fieldId": field,
                                "value": value})

    # Defaults as AppAPI's GetValueListener gives them: numeric ones JSON-encoded.
    assert forms("admin") == {"tuning": {"level": "High", "ratio": '"0.5"', "side": "1600"}, "mine": {"on": True}}
    assert forms("alice") == {"mine": {"on": True}}
    assert httpx.get(f"{base}/forms", headers=ocs, auth=("alice", "wrong")).status_code == 401
    assert save("admin", "level", "Low").status_code == 200
    assert save("admin", "on", 0).status_code == 200
    assert forms("admin") == {"tuning": {"level": "Low", "ratio": '"0.5"', "side": "1600"}, "mine": {"on": "0"}}
    assert each_env.state.app_config["level"] == ("Low", 0)
    # A user who is neither admin nor subadmin cannot save, not even a personal form (SubadminMiddleware).
    denied = save("alice", "on", 0)
    assert denied.status_code == 403 and denied.headers["content-type"].startswith("text/html")
    assert ("alice", "on") not in each_env.state.preferences


def test_deleting_missing_config_names_the_store(each_env: Nextcloud) -> None:
    headers = {**each_env.headers_to_exapp("alice"), "OCS-APIRequest": "true", "Accept": "application/json"}
    url = f"{each_env.url}/ocs/v2.php/apps/app_api/api/v1/ex-app"
    config = httpx.request("DELETE", f"{url}/config", headers=headers, json={"configKeys": ["absent"]})
    preference = httpx.request("DELETE", f"{url}/preference", headers=headers, json={"configKeys": ["absent"]})
    assert config.status_code == preference.status_code == 404
    rows = each_env.state.release.config_rows  # 33, 34: AppAPI's own tables; 35: the server's config
    assert config.json()["ocs"]["meta"]["message"] == (
        "No appconfig_ex values deleted" if rows else "No app config values deleted")
    assert preference.json()["ocs"]["meta"]["message"] == (
        "No preferences_ex values deleted" if rows else "No user config values deleted")


def test_notifications(each_env: Nextcloud) -> None:
    app_env = each_env
    async def scenario() -> tuple:
        nc = await as_user("alice")
        object_id = await nc.notifications.create("Recognize finished", "12 photos tagged", link="/apps/photos")
        return object_id, await nc.notifications.by_object_id(object_id)

    object_id, notification = run(scenario())
    assert notification is not None and notification.user_id == "alice"
    assert notification.subject == "Recognize finished" and notification.message == "12 photos tagged"
    assert notification.link == "/apps/photos" and notification.app_name == APP_ID
    assert [n["object_id"] for n in app_env.state.notifications] == [object_id]


def test_webhook_listeners(each_env: Nextcloud) -> None:
    app_env = each_env
    event = "OCP\\Files\\Events\\Node\\NodeCreatedEvent"

    async def scenario() -> tuple:
        nc = AsyncNextcloudApp()
        hook = await nc.webhooks.register("POST", "/webhooks/node", event, event_filter={"event.node.path": "/x"})
        listed = await nc.webhooks.get_list()
        removed = await nc.webhooks.unregister(hook.webhook_id)
        await nc.webhooks.register("POST", "/webhooks/deleted", "OCP\\Files\\Events\\Node\\NodeDeletedEvent")
        count = await nc.webhooks.unregister_all()  # passing the app id raises in nc_py_api 0.30.3
        return hook, listed, removed, count

    hook, listed, removed, count = run(scenario())
    assert hook.app_id == APP_ID and hook.event == event and hook.uri == "/webhooks/node"
    assert hook.event_filter == {"event.node.path": "/x"}
    assert [h.webhook_id for h in listed] == [hook.webhook_id]
    assert removed is True and count == 1 and app_env.state.webhooks == {}
    assert hook._raw_data["tokenNeeded"] is None  # webhook_listeners 1.5 (Nextcloud 33) added it


def test_webhooks_need_an_admin_or_no_user(app_env: Nextcloud) -> None:
    with pytest.raises(NextcloudException) as e:
        run(_list_webhooks_as("alice"))
    assert e.value.status_code == 403
    assert run(_list_webhooks_as("admin")) == []


async def _list_webhooks_as(user: str) -> list:
    return await (await as_user(user)).webhooks.get_list()


def test_log_respects_the_loglevel(app_env: Nextcloud) -> None:
    """The loglevel is in the capabilities a user sees; without a user nc_py_api sends every level."""
    async def scenario() -> None:
        nc = AsyncNextcloudApp()
        await nc.log(LogLvl.INFO, "sent: no loglevel without a user")
        await nc.set_user("alice")
        await nc.log(LogLvl.INFO, "dropped: below loglevel 2")
        await nc.log(LogLvl.ERROR, "a face model is missing")

    run(scenario())
    assert app_env.state.logs == [(1, "sent: no loglevel without a user"), (3, "a face model is missing")]


def test_ocs_xml_is_the_default_format(app_env: Nextcloud) -> None:
    response = httpx.get(f"{app_env.url}/ocs/v1.php/cloud/capabilities", headers={"OCS-APIRequest": "true"})
    assert response.headers["content-type"].startswith("application/xml")
    major = app_env.state.release.major
    assert "<statuscode>100</statuscode>" in response.text and f"<major>{major}</major>" in response.text


# --- WebDAV files ---------------------------------------------------------------------------------


def test_listdir_depths_and_properties(app_env: Nextcloud) -> None:
    state = app_env.state
    photo = state.put_file("alice", "Photos/2024/beach.jpg", JPEG, mtime=1_700_000_000)
    state.put_file("alice", "Photos/notes.txt", b"hello")

    async def scenario() -> tuple:
        nc = await as_user("alice")
        return (await nc.files.listdir("Photos"), await nc.files.listdir("Photos", depth=-1),
                await nc.files.by_path("Photos/2024/beach.jpg"))

    top, everything, node = run(scenario())
    assert sorted(n.user_path for n in top) == ["Photos/2024/", "Photos/notes.txt"]
    assert sorted(n.user_path for n in everything) == ["Photos/2024/", "Photos/2024/beach.jpg", "Photos/notes.txt"]
    assert node.info.fileid == photo.fileid and node.file_id == f"{photo.fileid:08d}ocstandin01"
    assert node.info.size == len(JPEG) and node.info.content_length == len(JPEG)
    assert node.info.mimetype == "image/jpeg" and node.etag == f'"{photo.etag}"'  # quoted, as sabre sends it
    assert node.info.last_modified.timestamp() == 1_700_000_000
    assert node.info.permissions == "RGDNVW" and not node.is_dir
    folder = next(n for n in top if n.is_dir)
    assert folder.info.size == len(JPEG) and folder.info.permissions == "RGDNVCK"


def test_raw_propfind_of_nextcloud_properties(app_env: Nextcloud) -> None:
    photo = app_env.state.put_file("alice", "a b.jpg", JPEG)
    body = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" '
            'xmlns:nc="http://nextcloud.org/ns"><d:prop><oc:fileid/><nc:has-preview/><nc:mount-type/>'
            '<oc:owner-id/><d:getcontenttype/><oc:no-such-prop/></d:prop></d:propfind>')
    response = httpx.request("PROPFIND", f"{app_env.url}/remote.php/dav/files/alice/a%20b.jpg", content=body,
                             headers={**app_env.headers_to_exapp("alice"), "Depth": "0"})
    assert response.status_code == 207
    text = response.text
    assert "<d:href>/remote.php/dav/files/alice/a%20b.jpg</d:href>" in text
    assert f"<oc:fileid>{photo.fileid}</oc:fileid>" in text and "<nc:has-preview>true</nc:has-preview>" in text
    assert "<oc:owner-id>alice</oc:owner-id>" in text
    missing = text.split("HTTP/1.1 200 OK")[1]
    assert "<oc:no-such-prop" in missing and "404 Not Found" in missing
    parsed = ElementTree.fromstring(response.content)  # real namespaces, not just prefixes
    assert parsed.findtext(".//{http://owncloud.org/ns}fileid") == str(photo.fileid)
    assert parsed.findtext(".//{http://nextcloud.org/ns}has-preview") == "true"


def test_missing_paths_are_404(app_env: Nextcloud) -> None:
    async def scenario() -> None:
        nc = await as_user("alice")
        assert await _raises_status(nc.files.listdir("nope"), 404)
        assert await _raises_status(nc.files.download("nope.jpg"), 404)
        assert await nc.files.by_id(999_999) is None

    run(scenario())


async def _raises_status(awaitable: Awaitable, status: int) -> bool:
    try:
        await awaitable
    except NextcloudException as e:
        return e.status_code == status
    return False


def test_download_whole_and_ranges(app_env: Nextcloud) -> None:
    app_env.state.put_file("alice", "beach.jpg", JPEG)
    assert run(_download("beach.jpg")) == JPEG
    headers = app_env.headers_to_exapp("alice")
    url = f"{app_env.url}/remote.php/dav/files/alice/beach.jpg"
    part = httpx.get(url, headers={**headers, "Range": "bytes=4-9"})
    assert part.status_code == 206 and part.content == JPEG[4:10]
    assert part.headers["content-range"] == f"bytes 4-9/{len(JPEG)}"
    assert httpx.get(url, headers={**headers, "Range": "bytes=-2"}).content == JPEG[-2:]
    assert httpx.get(url, headers={**headers, "Range": f"bytes={len(JPEG)}-"}).status_code == 416


def test_download2stream(app_env: Nextcloud) -> None:
    app_env.state.put_file("alice", "beach.jpg", JPEG)
    sink = io.BytesIO()

    async def scenario() -> None:
        await (await as_user("alice")).files.download2stream("beach.jpg", sink, chunk_size=100)

    run(scenario())
    assert sink.getvalue() == JPEG


async def _download(path: str) -> bytes:
    return await (await as_user("alice")).files.download(path)


def test_upload_mkdir_delete(app_env: Nextcloud) -> None:
    async def scenario() -> tuple:
        nc = await as_user("alice")
        await nc.files.makedirs("Out/Sub", exist_ok=True)
        uploaded = await nc.files.upload("Out/Sub/x.txt", b"abc")
        content = await nc.files.download("Out/Sub/x.txt")
        await nc.files.delete("Out")
        return uploaded, content, await _raises_status(nc.files.by_path("Out"), 404)

    uploaded, content, gone = run(scenario())
    assert content == b"abc" and uploaded.file_id.endswith("ocstandin01")
    assert gone
    assert app_env.state.resolve("alice", "Out") is None


def test_move_keeps_the_file_id(app_env: Nextcloud) -> None:
    photo = app_env.state.put_file("alice", "Inbox/a.jpg", JPEG)
    app_env.state.makedirs("alice", "Archive")

    async def scenario() -> tuple:
        nc = await as_user("alice")
        assert await _raises_status(nc.files.move("Inbox", "Nowhere/2024"), 409)  # no parent, as in sabre
        moved = await nc.files.move("Inbox", "Archive/2024")
        return moved, await nc.files.by_id(photo.fileid)

    moved, found = run(scenario())
    assert moved.user_path == "Archive/2024/" and found.user_path == "Archive/2024/a.jpg"
    assert found.info.fileid == photo.fileid and app_env.state.resolve("alice", "Inbox") is None


def test_shared_file_has_one_fileid_for_both_users(app_env: Nextcloud) -> None:
    state = app_env.state
    photo = state.put_file("alice", "Holiday/beach.jpg", JPEG)
    state.share("alice", "Holiday", "bob")

    async def scenario() -> tuple:
        nc = await as_user("bob")
        bob_tree = await nc.files.listdir(depth=-1)
        bob_found = await nc.files.by_id(photo.fileid)
        content = await nc.files.download("Holiday/beach.jpg")
        await nc.set_user("alice")
        return bob_tree, bob_found, content, await nc.files.by_id(photo.fileid)

    bob_tree, bob_found, content, alice_found = run(scenario())
    bob_photo = next(n for n in bob_tree if n.name == "beach.jpg")
    assert bob_photo.info.fileid == alice_found.info.fileid == photo.fileid
    assert bob_found.user_path == "Holiday/beach.jpg" and bob_found.user == "bob"
    assert alice_found.user == "alice" and content == JPEG
    assert bob_photo.info.permissions.startswith("S")
    holiday = next(n for n in bob_tree if n.name == "Holiday")
    assert "M" in holiday.info.permissions


def test_shared_mount_type_and_owner(app_env: Nextcloud) -> None:
    app_env.state.put_file("alice", "x.jpg", JPEG)
    app_env.state.share("alice", "x.jpg", "bob", target="from alice.jpg")
    body = ('<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns">'
            "<d:prop><nc:mount-type/><oc:owner-id/></d:prop></d:propfind>")
    response = httpx.request("PROPFIND", f"{app_env.url}/remote.php/dav/files/bob/from%20alice.jpg",
                             content=body, headers={**app_env.headers_to_exapp("bob"), "Depth": "0"})
    assert "<nc:mount-type>shared</nc:mount-type>" in response.text
    assert "<oc:owner-id>alice</oc:owner-id>" in response.text


def test_other_users_files_are_not_reachable(app_env: Nextcloud) -> None:
    app_env.state.put_file("alice", "private.jpg", JPEG)
    response = httpx.request("PROPFIND", f"{app_env.url}/remote.php/dav/files/alice/",
                             headers=app_env.headers_to_exapp("bob"))
    assert response.status_code == 404
    assert run(_by_id_as("bob", app_env.state.resolve("alice", "private.jpg").node.fileid)) is None


async def _by_id_as(user: str, fileid: int):
    return await (await as_user(user)).files.by_id(fileid)


def test_dav_without_user_is_401(app_env: Nextcloud) -> None:
    response = httpx.request("PROPFIND", f"{app_env.url}/remote.php/dav/files/alice/",
                             headers=app_env.headers_to_exapp(""))
    assert response.status_code == 401
    assert "Sabre\\DAV\\Exception\\NotAuthenticated" in response.text


def test_search_by_mime_name_and_time(app_env: Nextcloud) -> None:
    state = app_env.state
    state.put_file("alice", "Photos/a.jpg", JPEG, mtime=1_000)
    state.put_file("alice", "Photos/b.png", b"\x89PNG", mtime=2_000)
    state.put_file("alice", "Docs/c.txt", b"text", mtime=3_000)

    async def scenario() -> tuple:
        nc = await as_user("alice")
        images = await nc.files.find(["like", "mime", "image/%"])
        named = await nc.files.find(["eq", "name", "b.png"], path="Photos")
        recent = await nc.files.find(["and", "gt", "last_modified", 1_500, "like", "mime", "image/%"])
        return images, named, recent

    images, named, recent = run(scenario())
    assert sorted(n.user_path for n in images) == ["Photos/a.jpg", "Photos/b.png"]
    assert [n.user_path for n in named] == ["Photos/b.png"]
    assert [n.name for n in recent] == ["b.png"]


# --- system tags ----------------------------------------------------------------------------------


def test_tags_create_assign_list_unassign(app_env: Nextcloud) -> None:
    photo = app_env.state.put_file("alice", "beach.jpg", JPEG)

    async def scenario() -> tuple:
        nc = await as_user("alice")
        await nc.files.create_tag("People")
        tag = await nc.files.tag_by_name("People")
        await nc.files.assign_tag(photo.fileid, tag)
        with pytest.raises(NextcloudException) as twice:  # sabre: PUT on the existing mapping
            await nc.files.assign_tag(photo.fileid, tag)
        assert twice.value.status_code == 409
        tags = await nc.files.get_tags(photo.fileid)
        tagged = await nc.files.list_by_criteria(tags=[tag])
        await nc.files.unassign_tag(photo.fileid, tag)
        return tag, tags, tagged, await nc.files.get_tags(photo.fileid)

    tag, tags, tagged, after = run(scenario())
    assert tag.user_visible and tag.user_assignable
    assert [t.display_name for t in tags] == ["People"]
    assert [n.info.fileid for n in tagged] == [photo.fileid]
    assert after == []
    assert app_env.state.tag_names_of(photo.fileid) == set()


def test_tag_creation_answers_201_with_content_location(app_env: Nextcloud) -> None:
    headers = {**app_env.headers_to_exapp("alice"), "Content-Type": "application/json"}
    url = f"{app_env.url}/remote.php/dav/systemtags"
    created = httpx.post(url, headers=headers, content=b'{"name": "Beach"}')
    assert created.status_code == 201
    tag_id = next(t.tag_id for t in app_env.state.tags.values() if t.name == "Beach")
    assert created.headers["content-location"] == f"/remote.php/dav/systemtags/{tag_id}"
    assert httpx.post(url, headers=headers, content=b'{"name": "Beach"}').status_code == 409
    hidden = httpx.post(url, headers=headers, content=b'{"name": "Hidden", "userVisible": false}')
    assert hidden.status_code == 400  # only admins create invisible tags


def test_tag_created_on_a_file_is_assigned_to_it(app_env: Nextcloud) -> None:
    photo = app_env.state.put_file("alice", "beach.jpg", JPEG)
    headers = {**app_env.headers_to_exapp("alice"), "Content-Type": "application/json"}
    created = httpx.post(f"{app_env.url}/remote.php/dav/systemtags-relations/files/{photo.fileid}",
                         headers=headers, content=b'{"name": "Sea"}')
    assert created.status_code == 201
    assert created.headers["content-location"].startswith("/remote.php/dav/systemtags/")
    assert app_env.state.tag_names_of(photo.fileid) == {"Sea"}


def test_admin_renames_a_tag(app_env: Nextcloud) -> None:
    async def scenario() -> set[tuple[str, bool]]:
        nc = await as_user("admin")
        await nc.files.create_tag("Beach")
        await nc.files.update_tag(await nc.files.tag_by_name("Beach"), name="Seaside", user_assignable=False)
        return {(t.display_name, t.user_assignable) for t in await nc.files.list_tags()}

    assert run(scenario()) == {("Seaside", False)}


def test_tag_assignment_errors(app_env: Nextcloud) -> None:
    photo = app_env.state.put_file("alice", "beach.jpg", JPEG)
    restricted = app_env.state.add_tag("Restricted", user_visible=True, user_assignable=False)

    async def scenario() -> tuple[bool, bool, bool]:
        nc = await as_user("alice")
        return (await _raises_status(nc.files.assign_tag(photo.fileid, 999_999), 412),
                await _raises_status(nc.files.assign_tag(photo.fileid, restricted.tag_id), 403),
                await _raises_status(nc.files.assign_tag(999_999, restricted.tag_id), 404))

    assert run(scenario()) == (True, True, True)


def test_invisible_tags_only_for_admins(app_env: Nextcloud) -> None:
    photo = app_env.state.put_file("admin", "x.jpg", JPEG)
    app_env.state.add_tag("Visible")

    async def scenario() -> tuple:
        nc = await as_user("admin")
        await nc.files.create_tag("recognize:internal", user_visible=False, user_assignable=False)
        hidden = await nc.files.tag_by_name("recognize:internal")
        await nc.files.assign_tag(photo.fileid, hidden)
        admin_names = {t.display_name for t in await nc.files.list_tags()}
        await nc.set_user("alice")
        return admin_names, {t.display_name for t in await nc.files.list_tags()}

    admin_names, alice_names = run(scenario())
    assert admin_names == {"Visible", "recognize:internal"} and alice_names == {"Visible"}
    assert app_env.state.tag_names_of(photo.fileid) == {"recognize:internal"}


def test_shared_file_tags_are_shared(app_env: Nextcloud) -> None:
    state = app_env.state
    photo = state.put_file("alice", "Holiday/beach.jpg", JPEG)
    state.share("alice", "Holiday", "bob")
    tag = state.add_tag("Beach")

    async def scenario() -> list:
        nc = await as_user("bob")
        await nc.files.assign_tag(photo.fileid, tag.tag_id)
        await nc.set_user("alice")
        return await nc.files.get_tags(photo.fileid)

    assert [t.display_name for t in run(scenario())] == ["Beach"]


# --- faults -----------------------------------------------------------------------------------------


def test_503_for_the_next_requests_then_service_resumes(app_env: Nextcloud) -> None:
    app_env.state.put_file("alice", "a.jpg", JPEG)

    async def scenario() -> tuple[list[int], bytes]:
        nc = await as_user("alice")
        app_env.state.fail_next(2)
        statuses = []
        for _ in range(2):
            try:
                await nc.files.download("a.jpg")
            except NextcloudException as e:
                statuses.append(e.status_code)
        return statuses, await nc.files.download("a.jpg")

    statuses, content = run(scenario())
    assert statuses == [503, 503] and content == JPEG
    assert app_env.state.faults.served == 2


def test_503_for_a_time(app_env: Nextcloud) -> None:
    app_env.state.fail_for(0.3)
    url = f"{app_env.url}/ocs/v1.php/cloud/capabilities?format=json"
    assert httpx.get(url).status_code == 503
    time.sleep(0.35)
    assert httpx.get(url).status_code == 200


def test_503_is_maintenance_mode_and_can_target_webdav_only(app_env: Nextcloud) -> None:
    app_env.state.fail_next(2, path_prefix="/remote.php/dav/")
    capabilities = httpx.get(f"{app_env.url}/ocs/v1.php/cloud/capabilities?format=json")
    assert capabilities.status_code == 200  # OCS is spared
    dav = httpx.request("PROPFIND", f"{app_env.url}/remote.php/dav/files/alice/",
                        headers=app_env.headers_to_exapp("alice"))
    assert dav.status_code == 503 and "OCA\\DAV\\Exception\\ServerMaintenanceMode" in dav.text
    assert "System is in maintenance mode." in dav.text
    app_env.state.fail_next(2)
    for version in (1, 2):  # as a real Nextcloud 29 in maintenance mode: 503 on both, no paging fields
        ocs = httpx.get(f"{app_env.url}/ocs/v{version}.php/cloud/capabilities?format=json")
        assert ocs.status_code == 503 and ocs.headers["x-nextcloud-maintenance-mode"] == "1"
        assert ocs.json()["ocs"] == {"meta": {"status": "failure", "statuscode": 503, "message": "Service unavailable"},
                                     "data": []}


def test_unknown_ocs_route_is_not_found(app_env: Nextcloud) -> None:
    with pytest.raises(NextcloudExceptionNotFound):
        run(AsyncNextcloudApp().ocs("GET", "/ocs/v1.php/apps/no_such_app/api/v1/thing"))


# --- what a real Nextcloud 29 with AppAPI 3.2.3 answered (tests/nextcloud_standin/README.md) ----------


def test_unknown_ocs_route_answers_as_ocs_php_itself(app_env: Nextcloud) -> None:
    headers = {**app_env.headers_to_exapp(), "OCS-APIRequest": "true"}
    v1 = httpx.get(f"{app_env.url}/ocs/v1.php/apps/no_such_app/api/v1/thing?format=json", headers=headers)
    v2 = httpx.get(f"{app_env.url}/ocs/v2.php/apps/no_such_app/api/v1/thing?format=json", headers=headers)
    assert v1.status_code == 200 and v2.status_code == 404
    assert v1.json()["ocs"]["meta"].keys() == {"status", "statuscode", "message"}  # no paging fields
    assert v1.json()["ocs"]["meta"]["statuscode"] == 998 and v1.json()["ocs"]["data"] == []
    assert v2.json()["ocs"]["meta"]["statuscode"] == 404


def test_preferences_without_a_user_are_a_server_error(app_env: Nextcloud) -> None:
    with pytest.raises(NextcloudException) as e:
        run(AsyncNextcloudApp().preferences_ex.get_value("x"))
    assert e.value.status_code == 996


def test_notification_answer_is_unprepared_and_the_list_is_rich(app_env: Nextcloud) -> None:
    headers = {**app_env.headers_to_exapp("alice"), "OCS-APIRequest": "true"}
    sent = httpx.post(f"{app_env.url}/ocs/v1.php/apps/app_api/api/v1/notification?format=json", headers=headers,
                      json={"params": {"object": "app_api", "object_id": "x", "subject_type": "app_api_ex_app",
                                       "subject_params": {"rich_subject": "Done", "rich_subject_params": {},
                                                          "rich_message": "3 photos", "rich_message_params": {}}}})
    assert sent.json()["ocs"]["data"]["subject"] == "" and sent.json()["ocs"]["data"]["message"] == ""
    listed = httpx.get(f"{app_env.url}/ocs/v2.php/apps/notifications/api/v2/notifications?format=json",
                       headers=headers).json()["ocs"]["data"][0]
    assert listed["subject"] == listed["subjectRich"] == "Done" and listed["messageRich"] == "3 photos"
    assert listed["actions"] == [] and listed["shouldNotify"] is True and listed["icon"].endswith(".svg")


def test_files_props_and_download_headers_as_sabre_gives_them(app_env: Nextcloud) -> None:
    app_env.state.put_file("alice", "Photos/a b.jpg", JPEG)
    headers = {**app_env.headers_to_exapp("alice"), "Depth": "1"}
    body = ('<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns">'
            "<d:prop><oc:downloadURL/><nc:is-encrypted/></d:prop></d:propfind>")
    listing = httpx.request("PROPFIND", f"{app_env.url}/remote.php/dav/files/alice/Photos", headers=headers,
                            content=body)
    found = {}
    for response in ElementTree.fromstring(listing.content).findall("{DAV:}response"):
        for propstat in response.findall("{DAV:}propstat"):
            status = propstat.findtext("{DAV:}status").split(" ")[1]
            for prop in propstat.find("{DAV:}prop"):
                found[(response.findtext("{DAV:}href").endswith("/"), prop.tag.rpartition("}")[2])] = status
    assert found == {(True, "is-encrypted"): "200", (True, "downloadURL"): "404",
                     (False, "is-encrypted"): "404", (False, "downloadURL"): "200"}
    got = httpx.get(f"{app_env.url}/remote.php/dav/files/alice/Photos/a%20b.jpg",
                    headers={**app_env.headers_to_exapp("alice"), "Range": "bytes=0-9"})
    assert got.status_code == 206 and "oc-fileid" not in got.headers and "accept-ranges" not in got.headers
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''a%20b.jpg; filename=\"a b.jpg\""


def test_nextcloud29_has_no_webhook_listeners(nextcloud29: Nextcloud, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in nextcloud29.app_env().items():
        monkeypatch.setenv(name, value)

    async def scenario() -> tuple[dict, dict]:
        nc = await as_user("admin")
        with pytest.raises(NextcloudExceptionNotFound):
            await nc.webhooks.get_list()
        with pytest.raises(NextcloudExceptionNotFound):  # what Recognize's /enabled met on a real 29
            await nc.webhooks.unregister_all()
        return await nc.srv_version, await nc.capabilities

    version, capabilities = run(scenario())
    assert version["string"] == "29.0.1" and capabilities["app_api"]["version"] == "3.2.3"
    assert "webhook_listeners" not in capabilities and "notifications" in capabilities


def test_unregistering_a_top_menu_takes_its_scripts_and_styles(app_env: Nextcloud) -> None:
    async def scenario() -> None:
        nc = AsyncNextcloudApp()
        await nc.ui.top_menu.register("people", "People", "img/people.svg")
        await nc.ui.resources.set_script("top_menu", "people", "js/people")
        await nc.ui.resources.set_style("top_menu", "people", "css/people")
        await nc.ui.top_menu.unregister("people")
        with pytest.raises(NextcloudExceptionNotFound):  # AppAPI: "No such Script"
            await nc.ui.resources.delete_script("top_menu", "people", "js/people", not_fail=False)

    run(scenario())
    assert app_env.state.ui_resources == {}


def test_switching_a_running_stand_in_to_nextcloud29_removes_webhook_listeners(app_env: Nextcloud) -> None:
    assert run(_list_webhooks_as("admin")) == []
    app_env.state.nextcloud_version = (29, 0, 6)
    with pytest.raises(NextcloudExceptionNotFound):
        run(_list_webhooks_as("admin"))


def test_a_disabled_webhook_listeners_app_has_no_routes(app_env: Nextcloud) -> None:
    app_env.state.disabled_apps.add("webhook_listeners")
    with pytest.raises(NextcloudExceptionNotFound):
        run(_list_webhooks_as("admin"))
