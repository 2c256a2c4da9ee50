"""Hostile requests to the ExApp over real HTTP: every route without or with forged AppAPI
headers, schemathesis with valid ones, Files-menu payloads naming files the user cannot read,
one user's persons, faces and photos out of another's reach, and callers nobody signed in
reaching for user routes through AppAPI's proxy (the stand-in's, as each AppAPI release does
it) and directly, with dot segments raw and encoded. Wrong secrets leave no secret in the log.

Routes are enumerated from the app itself (its OpenAPI paths and mounts), so a new route is
covered without changing this file.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from conftest import REPO, SHARED_DATA, SHARED_MODELS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nextcloud_standin.auth import headers_to_exapp, new_secret
from nextcloud_standin.fixture import APP_ID, APP_VERSION, Nextcloud, _serve
from nextcloud_standin.proxy import PREFIX, ProxyRelease, ProxyRoute, remove_dot_segments
from nextcloud_standin.releases import MAINTAINED, RELEASES
from nextcloud_standin.state import NextcloudState
from schemathesis.core import NOT_SET
from starlette.routing import Mount
from test_exapp import ExApp, serve

from ex_app.config import Settings
from ex_app.main import create_app
from ex_app.web.access import Access, access_of, declared_routes

PUBLIC = {("GET", "/heartbeat")}
FACE = SHARED_DATA / "faces" / "Al_Gore" / "lfw_Al_Gore_0004.jpg"
OTHER_FACES = [SHARED_DATA / "faces" / "Al_Gore" / f"lfw_Al_Gore_000{n}.jpg" for n in (1, 2, 3)]
GROUP = SHARED_DATA / "faces" / "group" / "dlib_2008_001322.jpg"


def app_settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS,
                    crawl_interval_seconds=3600)


def every_route(tmp_path) -> list[tuple[str, str]]:
    """(method, path) of every route the ExApp serves, path parameters filled in."""
    app = create_app(app_settings(tmp_path))
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "1", path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    routes += [("GET", route.path + "/any.js") for route in app.routes if isinstance(route, Mount)]
    return sorted(set(routes))


@pytest.fixture
def exapp(nextcloud, tmp_path, monkeypatch):
    nextcloud.state.app.enabled = True
    with serve(nextcloud, app_settings(tmp_path), monkeypatch) as app:
        yield app


def test_the_enumeration_sees_every_kind_of_route(tmp_path):
    routes = every_route(tmp_path)
    paths = {path for _method, path in routes}
    assert {"/heartbeat", "/init", "/enabled", "/api/files-action", "/api/progress"} <= paths
    assert len(routes) >= 8


def test_every_route_but_heartbeat_refuses_requests_without_valid_appapi_headers(exapp, tmp_path):
    state = exapp.state
    forged = [
        {},
        headers_to_exapp(state, "alice", secret="not-the-secret"),
        {**headers_to_exapp(state, "alice"), "EX-APP-ID": "someone_else"},
        {k: v for k, v in headers_to_exapp(state, "alice").items() if k != "AUTHORIZATION-APP-API"},
        {**headers_to_exapp(state, "alice"), "AUTHORIZATION-APP-API": "%%%not base64%%%"},
    ]
    routes = every_route(tmp_path)
    for method, path in routes:
        for headers in forged:
            response = httpx.request(method, exapp.url + path, headers=headers, json={})
            if (method, path) in PUBLIC:
                assert response.status_code == 200, (method, path)
            else:
                assert response.status_code == 401, (method, path, headers, response.text)
    assert state.file_actions == {}  # /enabled did nothing


def test_with_valid_headers_no_route_answers_a_server_error_to_an_empty_request(exapp, tmp_path):
    for method, path in every_route(tmp_path):
        if path in ("/enabled", "/init"):
            continue  # AppAPI's life cycle calls, tested in test_exapp.py
        response = exapp.call(method, path, "alice", json={})
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        assert response.status_code != 401, (method, path)


def test_schemathesis_finds_no_server_error_with_valid_headers(exapp, tmp_path):
    """Generated requests for every operation of the ExApp's own OpenAPI document."""
    spec = create_app(app_settings(tmp_path)).openapi()
    schema = schemathesis.openapi.from_dict(spec)
    headers = headers_to_exapp(exapp.state, "alice")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/enabled", "/init"):
            continue  # they register the UI and fetch models: AppAPI's alone to call

        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:
            # Sent with httpx: schemathesis' own transport needs the urllib3 of requests,
            # which another package of this environment replaces.
            response = httpx.request(
                case.method, exapp.url + case.formatted_path, params=case.query,
                headers={**(case.headers or {}), **headers}, timeout=30,
                **({} if case.body is NOT_SET else {"json": case.body}),
            )
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.body!r} "
                                f"{case.query!r} → {response.status_code} {response.text[:200]}")

        check()
    assert failures == [], "\n".join(failures)


def test_ids_past_64_bits_are_refused_not_a_server_error(exapp):
    huge = 2**70
    for method, path, body in [
        ("GET", f"/api/people/persons/{huge}/faces", None),
        ("POST", "/api/people/merge", {"into": huge, "others": [huge]}),
        ("POST", "/api/people/distinct", {"person_id": huge, "other_id": 1}),
        ("GET", f"/api/people/faces/{huge}/thumbnail", None),
    ]:
        response = exapp.call(method, path, "alice", json=body)
        assert response.status_code in (404, 422), (method, path, response.status_code)


@pytest.fixture
def shared_trip(exapp):
    """alice shares Trip with bob; her Private folder is hers alone."""
    state = exapp.state
    state.put_file("alice", "Trip/gore.jpg", FACE.read_bytes())
    state.put_file("alice", "Private/secret.jpg", GROUP.read_bytes())
    state.put_file("bob", "Photos/own.jpg", FACE.read_bytes())
    state.share("alice", "Trip", "bob")
    return state


def selection(directory: str, name: str, fileid: int, user: str = "bob") -> dict:
    return {"files": [{
        "fileId": fileid, "name": name, "directory": directory, "etag": "x", "mime": "image/jpeg",
        "fileType": "file", "size": 1, "favorite": "false", "permissions": 31, "mtime": 0,
        "userId": user, "instanceId": None,
    }]}


def test_files_menu_payloads_naming_files_the_user_cannot_read_are_refused(exapp, shared_trip):
    secret = shared_trip.own_node("alice", "Private/secret.jpg").fileid
    hostile = [
        selection("/Private", "secret.jpg", secret),  # alice's path, as if bob's
        selection("/Trip/..", "Private", secret),  # out of the share alice gave
        selection("/Trip/../Private", "secret.jpg", secret),
        selection("/../alice/files/Private", "secret.jpg", secret),
        selection("/../../files/alice/Private", "secret.jpg", secret),
        selection("/Trip%2F..%2FPrivate", "secret.jpg", secret),
        selection("/Trip", "../Private/secret.jpg", secret),
        selection("/Private", "secret.jpg", secret, user="alice"),  # claims to be alice
    ]
    for payload in hostile:
        response = exapp.call("POST", "/api/files-action", "bob", json=payload)
        # Refused, or (paths with "..", which name nothing) nothing queued.
        refused = 400 <= response.status_code < 500
        assert refused or response.json() == {"queued": 0}, (payload["files"][0], response.text)
    # alice's own crawl reads her Private folder; as bob, nothing outside bob's files is
    # asked for and secret.jpg is never downloaded.
    as_bob = [(method, path) for method, path, user in exapp.state.requests if user == "bob"]
    dav = [path for _method, path in as_bob if path.startswith("/remote.php/dav/")]
    assert dav and all(path.startswith("/remote.php/dav/files/bob")
                       for path in dav), dav
    assert not [path for method, path in as_bob if method == "GET" and "secret" in path]
    own = shared_trip.own_node("bob", "Photos/own.jpg").fileid
    response = exapp.call("POST", "/api/files-action", "bob",
                          json=selection("/Photos", "own.jpg", own))
    assert response.status_code == 200 and response.json() == {"queued": 1}


def test_a_user_reaches_none_of_another_users_persons_faces_or_photos(exapp):
    """bob, guessing alice's ids, can read, change or see none of her persons, faces or
    photos through any People route; alice's own calls work (the ids are right)."""
    state = exapp.state
    for user, identity in (("alice", "Colin_Powell"), ("bob", "Bill_Gates")):
        for photo in sorted((SHARED_DATA / "faces" / identity).iterdir())[:4]:
            state.put_file(user, f"Photos/{photo.name}", photo.read_bytes())
    exapp.enable()
    deadline = time.monotonic() + 90
    while True:
        persons = {user: exapp.call("GET", "/api/people/persons?hidden=true", user).json()["persons"]
                   for user in ("alice", "bob")}
        if all(persons.values()):
            break
        assert time.monotonic() < deadline, (persons, exapp.progress())
        time.sleep(0.5)
    alices, bobs = persons["alice"][0]["id"], persons["bob"][0]["id"]
    faces = exapp.call("GET", f"/api/people/persons/{alices}/faces", "alice").json()
    face = faces["faces"][0]
    face_id, file_id = face["id"], face["file_id"]
    assert exapp.call("GET", f"/api/people/faces/{face_id}/thumbnail", "alice").status_code == 200
    assert exapp.call("GET", f"/api/people/photos/{file_id}/preview", "alice").status_code == 200

    attempts = [
        ("GET", f"/api/people/persons/{alices}/faces", None),
        ("POST", f"/api/people/persons/{alices}/name", {"name": "Guessed"}),
        ("POST", f"/api/people/persons/{alices}/hidden", {"hidden": True}),
        ("POST", "/api/people/merge", {"into": bobs, "others": [alices]}),
        ("POST", "/api/people/merge", {"into": alices, "others": [bobs]}),
        ("POST", f"/api/people/faces/{face_id}/move", {"person_id": bobs}),
        ("POST", f"/api/people/faces/{face_id}/move", {"person_id": None}),
        ("POST", f"/api/people/faces/{face_id}/remove", None),
        ("POST", "/api/people/distinct", {"person_id": alices, "other_id": bobs}),
        ("GET", f"/api/people/faces/{face_id}/thumbnail", None),
        ("GET", f"/api/people/photos/{file_id}/preview", None),
    ]
    for method, path, body in attempts:
        response = exapp.call(method, path, "bob", json=body)
        assert response.status_code in (403, 404), (method, path, response.status_code)
        assert str(alices) not in response.text or response.status_code == 404
    assert exapp.call("POST", "/api/people/undo", "bob").status_code in (200, 404, 409)
    listed = exapp.call("GET", "/api/people/persons?hidden=true", "bob").json()
    assert alices not in {p["id"] for p in listed["persons"]}
    unassigned = exapp.call("GET", "/api/people/faces/unassigned", "bob").json()
    assert face_id not in {f["id"] for f in unassigned.get("faces", [])}
    after = exapp.call("GET", "/api/people/persons?hidden=true", "alice").json()["persons"]
    assert after == persons["alice"]  # nothing of alice's changed


def test_progress_shows_a_user_nothing_of_another_users_files(exapp):
    for photo in sorted((SHARED_DATA / "faces" / "Colin_Powell").iterdir())[:2]:
        exapp.state.put_file("alice", f"Photos/{photo.name}", photo.read_bytes())
    exapp.enable()
    exapp.wait_for_cycles(1)
    alices = exapp.call("GET", "/api/progress", "alice").json()["analyzers"]
    assert sum(a["done"] for a in alices) > 0
    bobs = exapp.call("GET", "/api/progress", "bob").json()
    assert "alice" not in json.dumps(bobs.get("users", {})), bobs
    assert sum(a["done"] + a["pending"] + a["failed"] for a in bobs["analyzers"]) == 0, bobs


# --- Who may call what: the access rule, AppAPI's proxy, dot segments, the log ---------------

SYSTEM_ROUTES = {"/init", "/enabled", "/api/webhooks/files"}  # Nextcloud's own calls


def test_every_route_has_the_access_level_its_handler_needs(tmp_path):
    """Mounts (the page's assets) are PUBLIC, Nextcloud's own calls SYSTEM, /heartbeat open,
    every other route USER: a new route is USER if declared, else out of the proxy's reach."""
    routes = declared_routes()
    for method, path in every_route(tmp_path):
        access = access_of(routes, method, path)
        if path == "/heartbeat":
            assert access is Access.OPEN
        elif path in SYSTEM_ROUTES:
            assert access is Access.SYSTEM, (method, path)
        elif path.startswith(("/js/", "/css/", "/img/")):
            assert access is Access.PUBLIC, (method, path)
        else:
            assert access is Access.USER, (method, path)


def test_an_admin_level_in_info_xml_fails_the_start_rather_than_going_unchecked(tmp_path):
    info = tmp_path / "info.xml"
    info.write_text((REPO / "appinfo" / "info.xml").read_text().replace(
        "<access_level>USER</access_level>", "<access_level>ADMIN</access_level>", 1))
    with pytest.raises(ValueError, match="ADMIN"):
        declared_routes(info)


PROXY_RELEASES = (29, *MAINTAINED)  # whose proxy the attacks go through; 29: no dot-segment check
ATTACKS = [  # the issue's requests and their kin, as sent (path as is)
    "js/../api/progress",
    "js/%2e%2e/api/progress",
    "js/%2E%2E/api/progress",
    "js/.%2e/api/progress",
    "img/x/../../api/progress",
    "css/../api/progress?x=1",
    "js/..%2fapi/progress",
    "js/./../api/progress",
    "js/%252e%252e/api/progress",
    "js/..%5capi/progress",
    "js/../api/people/persons",
    "css/%2e%2e/api/people/progress",
    "img/../api/people/faces/unassigned",
    "js/../enabled?enabled=0",
    "js/../api/webhooks/files",
]
USER_DATA = ("alice", "analyzers", "last_cycle", "persons", "faces", "users")


@dataclass
class Front:
    """The ExApp behind the stand-in's AppAPI proxy, alice's photo analyzed."""

    nextcloud: Nextcloud
    exapp: ExApp
    release: ProxyRelease

    def proxied(self, path: str) -> str:
        return f"{PREFIX}{APP_ID}/{path}"


def raw_request(base: str, method: str, target: str, headers: dict | None = None,
                body: bytes | None = None) -> tuple[int, str]:
    """A request with its target sent as is (httpx would collapse dot segments first)."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def assert_no_user_data(status: int, body: str) -> None:
    assert status in (401, 404), (status, body[:300])
    assert not [word for word in USER_DATA if word in body], body[:300]


@pytest.fixture(scope="module", params=PROXY_RELEASES, ids=lambda major: f"nc{major}")
def front(request, tmp_path_factory) -> Front:
    release = RELEASES[request.param]
    tmp = tmp_path_factory.mktemp(f"nc{request.param}")
    state = NextcloudState(APP_ID, APP_VERSION, new_secret(), release.app_api, release.server)
    with contextmanager(_serve)(tmp, state) as nextcloud, pytest.MonkeyPatch.context() as env:
        state.put_file("alice", "Photos/gore.jpg", FACE.read_bytes())
        with serve(nextcloud, app_settings(tmp), env) as exapp:
            nextcloud.proxy.exapp_url = exapp.url
            exapp.enable()
            exapp.wait_for_cycles(1)  # a cycle recorded (admins see it) ...
            deadline = time.monotonic() + 120
            while not sum(a["done"] for a in exapp.progress()["analyzers"]):  # ... the photo done
                assert time.monotonic() < deadline, exapp.progress()
                time.sleep(0.3)
            yield Front(nextcloud, exapp, ProxyRelease.of(release.server))


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_caller_nobody_signed_in_gets_no_user_data_through_the_proxy(front, attack):
    assert_no_user_data(*raw_request(front.nextcloud.url, "GET", front.proxied(attack)))
    assert front.nextcloud.state.app.enabled  # js/../enabled?enabled=0 did not disable it


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_signed_in_user_gets_no_one_elses_data_through_the_proxy(front, attack):
    cookie = "; ".join(f"{k}={v}" for k, v in front.nextcloud.proxy.sign_in("bob").items())
    status, body = raw_request(front.nextcloud.url, "GET", front.proxied(attack),
                               {"Cookie": cookie})
    # bob may get his own progress (a USER route; he is signed in), never alice's or the
    # instance's (last_cycle is filled for admins only)
    assert "alice" not in body and '"last_cycle":{' not in body, (status, body[:300])


def test_the_issues_request_reaches_the_exapp_only_through_old_appapi(front):
    """AppAPI 3.2.3 matches the public js/ route on the raw path and forwards GET
    /api/progress signed with no user (the ExApp answers 401); from 33.0.4 the proxy itself
    refuses the '..' (404) and forwards nothing."""
    proxy = front.nextcloud.proxy
    proxy.forwarded.clear()
    status, body = raw_request(front.nextcloud.url, "GET", front.proxied("js/../api/progress"))
    if front.release.refuses_parent_segments:
        assert (status, proxy.forwarded) == (404, [])
    else:
        assert (status, proxy.forwarded) == (401, [("GET", "/api/progress", "")]), body


def test_through_the_proxy_users_get_their_own_progress_and_anyone_the_assets(front):
    nextcloud = front.nextcloud
    url = nextcloud.url + front.proxied("api/progress")
    alice = httpx.get(url, cookies=nextcloud.proxy.sign_in("alice")).json()
    assert list(alice["users"]) == ["alice"] and alice["last_cycle"] is None
    assert sum(a["done"] for a in alice["analyzers"]) >= 1
    bob = httpx.get(url, cookies=nextcloud.proxy.sign_in("bob")).json()
    assert list(bob["users"]) == ["bob"] and "alice" not in json.dumps(bob)
    admin = httpx.get(url, cookies=nextcloud.proxy.sign_in("admin")).json()
    assert "alice" in admin["users"] and admin["last_cycle"] is not None
    assert httpx.get(url).status_code == 404  # USER route, nobody signed in: the proxy says no
    icon = httpx.get(nextcloud.url + front.proxied("img/people.svg"))
    assert icon.status_code == 200 and icon.text.lstrip().startswith("<svg")


DIRECT = [  # what a proxy could forward, sent straight to the ExApp signed with no user
    "/api/progress",
    "/api/progress?x=1",
    "/js/../api/progress",
    "/js/%2e%2e/api/progress",
    "/img/x/../../api/progress",
    "/css/..%2fapi/progress",
    "/js/%252e%252e/api/progress",
    "/api/people/persons",
    "/api/people/progress",
    "/api/people/faces/unsure",
    "/api/people/choice",
    "/img/../img/people.svg",
    "/img/%2e/people.svg",
]


@pytest.mark.parametrize("target", DIRECT)
def test_a_request_signed_with_no_user_gets_no_user_route_directly(front, target):
    headers = headers_to_exapp(front.nextcloud.state, "")
    assert_no_user_data(*raw_request(front.exapp.url, "GET", target, headers))


@pytest.mark.parametrize("method, target", [
    ("PUT", "/enabled?enabled=0"), ("POST", "/init"), ("POST", "/api/webhooks/files")])
def test_nextclouds_own_routes_refuse_what_came_through_the_proxy(front, method, target):
    headers = {**headers_to_exapp(front.nextcloud.state, ""), "X-Origin-IP": "203.0.113.9",
               "Content-Type": "application/json"}
    body = b'{"event": {"class": "x", "node": {"path": "/alice/files/Photos/gore.jpg"}}}'
    status, _ = raw_request(front.exapp.url, method, target, headers, body)
    assert status == 404
    assert front.nextcloud.state.app.enabled


SEPARATORS = st.sampled_from(["/", "%2f", "%2F", "\\", "%5c", "%252f"])
DOTS = st.sampled_from(["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "%2e%252e", "."])
STARTS = st.sampled_from(["js", "css", "img", "js/a", "img/a/b", "css/x/y/z"])
TARGETS = st.sampled_from(["api/progress", "api/people/persons", "api/people/progress",
                           "api/people/faces/unassigned", "enabled", "init", "api/webhooks/files"])
QUERIES = st.sampled_from(["", "?x=1", "?enabled=0", "?hidden=true&x.y=%2e%2e"])


@st.composite
def dotted_paths(draw) -> str:
    """A public prefix, dot segments in some spelling, a route nobody may call anonymously."""
    climbs = draw(st.lists(st.tuples(SEPARATORS, DOTS), min_size=1, max_size=4))
    return (draw(STARTS) + "".join(sep + dots for sep, dots in climbs) + draw(SEPARATORS)
            + draw(TARGETS) + draw(QUERIES))


def test_generated_dot_segment_paths_get_no_user_data_through_the_proxy_or_directly(front):
    headers = headers_to_exapp(front.nextcloud.state, "")
    seen: list[tuple[str, int, int]] = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(path=dotted_paths())
    def check(path: str) -> None:
        proxied = raw_request(front.nextcloud.url, "GET", front.proxied(path))
        direct = raw_request(front.exapp.url, "GET", "/" + path, headers)
        assert_no_user_data(*proxied)
        assert_no_user_data(*direct)
        seen.append((path, proxied[0], direct[0]))

    check()
    assert len(seen) >= 20
    assert front.nextcloud.state.app.enabled


def test_curl_removes_dot_segments_as_rfc_3986_says():
    """RFC 3986 section 5.2.4's examples, and the issue's paths."""
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"
    assert remove_dot_segments("mid/content=5/../6") == "mid/6"
    assert remove_dot_segments("/js/../api/progress") == "/api/progress"
    assert remove_dot_segments("/img/x/../../api/progress") == "/api/progress"
    assert remove_dot_segments("/js/%2e%2e/api/progress") == "/js/%2e%2e/api/progress"


def test_each_appapi_release_checks_paths_as_its_controller_does():
    old, first, fixed = (ProxyRelease.of(v) for v in ((29, 0, 6), (33, 0, 3), (33, 0, 8)))
    assert not old.refuses_parent_segments and not old.first_match_decides
    assert first.first_match_decides and not first.refuses_parent_segments
    assert fixed.refuses_parent_segments and fixed.slash_prefixed_match
    for version in ((32, 0, 10), (34, 0, 0), (34, 0, 3), (35, 0, 0)):
        assert ProxyRelease.of(version) == fixed, version
    for version in ((30, 0, 5), (31, 0, 0), (32, 0, 8), (33, 0, 2)):
        assert ProxyRelease.of(version) == old, version


def test_the_proxy_throttles_a_route_with_bruteforce_protection(nextcloud, tmp_path, monkeypatch):
    """A route declaring bruteforce_protection [404]: each 404 the ExApp gives counts, the
    delay doubles from 0.2 s, and past 10 attempts in 30 minutes the proxy answers 429."""
    nextcloud.state.aa_version, nextcloud.state.nextcloud_version = "34.0.0", (34, 0, 3)
    proxy = nextcloud.proxy
    proxy.routes = [ProxyRoute(r"^\/?(js|css|img)\/.+$", "GET", "PUBLIC", (), (404,))]
    proxy.throttler.testing = True  # auth.bruteforce.protection.testing: no sleeping
    nextcloud.state.app.enabled = True
    with serve(nextcloud, app_settings(tmp_path), monkeypatch) as app:
        proxy.exapp_url = app.url
        missing = nextcloud.url + f"{PREFIX}{APP_ID}/img/missing.svg"
        statuses = [httpx.get(missing).status_code for _ in range(12)]
    assert statuses == [404] * 11 + [429], statuses
    assert proxy.throttler.slept_ms[:4] == [0, 200, 400, 800]
    assert max(proxy.throttler.slept_ms) == 25_000


def test_wrong_secrets_leave_no_secret_in_the_exapps_log(nextcloud, tmp_path):
    """The ExApp in its own process as deployed, its whole output read back after requests
    signed with wrong secrets: each refusal is logged, without the secret sent or the real one."""
    state = nextcloud.state
    state.app.enabled = False  # installed, not enabled: no crawl beside the requests
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RECOGNIZE_", "APP_"))},
           **nextcloud.app_env(port), "RECOGNIZE_DATA_DIR": str(tmp_path / "data"),
           "RECOGNIZE_MODEL_MIRROR": str(SHARED_MODELS), "no_proxy": "*"}
    log_path = tmp_path / "exapp.log"
    wrong = [secrets.token_urlsafe(32) for _ in range(3)] + [state.app.secret[:-1], ""]
    with log_path.open("w") as log:
        exapp = subprocess.Popen([sys.executable, "-m", "ex_app.main"], env=env, cwd=REPO,
                                 stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert exapp.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                if httpx.get(url + "/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        for secret in wrong:
            for user, method, path in [("alice", "GET", "/api/progress"), ("", "POST", "/init"),
                                       ("admin", "PUT", "/enabled?enabled=0"),
                                       ("", "GET", "/img/people.svg")]:
                headers = headers_to_exapp(state, user, secret=secret)
                assert httpx.request(method, url + path, headers=headers).status_code == 401
        ok = httpx.get(url + "/api/progress", headers=headers_to_exapp(state, "alice"))
        assert ok.status_code == 200
    finally:
        exapp.terminate()
        exapp.wait(timeout=30)
    logged = log_path.read_text()
    for secret in [state.app.secret, *filter(None, wrong)]:
        assert secret not in logged
        assert base64.b64encode(f"alice:{secret}".encode()).decode() not in logged
    assert logged.count("wrong app secret") == 4 * len(wrong), logged[-2000:]


def test_webhook_paths_with_dot_segments_are_ignored(exapp):
    """A webhook payload naming a path that leaves its owner's files queues nothing."""
    exapp.state.put_file("bob", "Photos/own.jpg", FACE.read_bytes())
    body = {"event": {"class": "OCP\\Files\\Events\\Node\\NodeCreatedEvent",
                      "node": {"id": 1, "path": "/alice/files/../../bob/files/Photos/own.jpg"}},
            "user": {"uid": "alice"}, "time": 0}
    response = exapp.call("POST", "/api/webhooks/files", "", json=body)
    assert response.status_code == 200 and response.json() == {"queued": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
