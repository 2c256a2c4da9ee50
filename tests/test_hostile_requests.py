"""Hostile requests to the ExApp over real HTTP: every route without or with forged AppAPI
headers, schemathesis with valid ones, Files-menu payloads naming files the user cannot read,
and one user's persons, faces and photos out of another's reach.

Routes are enumerated from the app itself (its OpenAPI paths and mounts), so a new route is
covered without changing this file.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
import schemathesis
from conftest import SHARED_DATA, SHARED_MODELS
from hypothesis import HealthCheck, given, settings
from nextcloud_standin.auth import headers_to_exapp
from schemathesis.core import NOT_SET
from starlette.routing import Mount
from test_exapp import serve

from ex_app.config import Settings
from ex_app.main import create_app

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
