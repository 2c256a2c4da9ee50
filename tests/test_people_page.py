"""The People page in headless Chromium, against the real ExApp and the Nextcloud stand-in.

What is real: the ExApp (served by uvicorn), its store filled by the real Nextcloud path
(WebDAV crawl of the stand-in, download, face analysis with the real models, grouping), the
built bundle (``make ui``) and the browser. What stands in for Nextcloud's web front: a small
server here (:class:`Front`) that serves AppAPI's top menu page inside the user layout the
stand-in's release renders (``nextcloud_standin.page_shell``: initial states, core's globals,
the registered script and style at the URLs AppAPI rewrites them to) and proxies
``/index.php/apps/app_api/proxy/<appid>/<route>`` to the ExApp as AppAPI does: only routes
appinfo/info.xml declares, for the verb declared, USER routes only with a signed-in user
(a cookie names them here), with AppAPI's authentication headers for that user. The page's
first frame is checked in each maintained release; the interactions run in the oldest one.
A page fails a test on any uncaught error, console error or warning, or failed request.

Screenshots of each view go to build/screenshots/people/.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import REPO, SHARED_DATA, SHARED_MODELS
from nc_py_api import AsyncNextcloudApp
from nextcloud_standin import page_shell
from nextcloud_standin.auth import headers_to_exapp, new_secret
from nextcloud_standin.releases import MAINTAINED, RELEASES
from nextcloud_standin.server import BackgroundServer, build_app
from nextcloud_standin.state import NextcloudState
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.main import create_app
from ex_app.people import operations
from ex_app.sources.nextcloud import NextcloudSource, NextcloudUsers
from ex_app.sources.sync import sync
from ex_app.store import schema
from ex_app.store.files import work_left
from ex_app.store.schema import TaskStatus
from ex_app.web import people
from ex_app.work.worker import worker_fetcher

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "build" / "screenshots" / "people"
APP_ID = "recognize_ex"  # the id the page's requests name (appinfo/info.xml)
ALICE_IDENTITIES = (
    "Vladimir_Putin", "Tom_Ridge", "Tom_Daschle", "Silvio_Berlusconi", "Nestor_Kirchner",
    "Megawati_Sukarnoputri", "Lindsay_Davenport", "Junichiro_Koizumi", "John_Negroponte",
    "Gloria_Macapagal_Arroyo", "David_Beckham", "Colin_Powell",
)
BOB_IDENTITIES = ("Ariel_Sharon", "Alvaro_Uribe")
ALICE_PHOTOS, BOB_PHOTOS = 11, 6
SYNTHETIC_PERSONS = 500
PAGE_PATH = f"/index.php/apps/app_api/embedded/{APP_ID}/{people.PAGE}"
PROXY_PREFIX = f"/index.php/apps/app_api/proxy/{APP_ID}"
PAGE_ERRORS: dict[int, list[str]] = {}  # uncaught errors, console errors and warnings
# Milliseconds from navigation to the first frame showing this many person cards.
CARDS_SHOWN_AT = """window.cardsShownAt = null;
(function poll() {
    if (document.querySelectorAll('li.person-card').length >= %d) {
        window.cardsShownAt = performance.now();
    } else {
        requestAnimationFrame(poll);
    }
})();"""
# The number of person cards in the first frame that shows any.
FIRST_FRAME_CARDS = """window.firstFrameCards = null;
(function poll() {
    const cards = document.querySelectorAll('li.person-card').length;
    if (cards > 0) {
        window.firstFrameCards = cards;
    } else {
        requestAnimationFrame(poll);
    }
})();"""
# The target is 1 s (seen: 0.4 to 0.8 s); the bound leaves room for a machine busy with
# other work, where it was seen at 1.0 s.
LOAD_BOUND_MS = 1500
FACES_ONLY = {"objects_enabled": False, "places_enabled": False, "music_enabled": False,
              "video_enabled": False}


def _declared_routes() -> list[tuple[re.Pattern, set[str], str]]:
    info = ElementTree.parse(REPO / "appinfo" / "info.xml").getroot()
    return [
        (re.compile(r.findtext("url")), set(r.findtext("verb").split(",")), r.findtext("access_level"))
        for r in info.findall("external-app/routes/route")
    ]


class Front:
    """Nextcloud's web front as the page sees it: the top menu page and AppAPI's proxy."""

    def __init__(self, state: NextcloudState, nextcloud_url: str):
        self.state = state
        self.nextcloud_url = nextcloud_url
        self.exapp_url = ""
        self.routes = _declared_routes()
        self.requests: list[tuple[str, str, int]] = []  # method, route, status
        self.known_capabilities: dict[tuple[str, tuple[int, int, int]], dict] = {}
        self.app = Starlette(routes=[
            Route(PAGE_PATH, self.page),
            Route(PROXY_PREFIX + "/{route:path}", self.proxy,
                  methods=["GET", "POST", "PUT", "DELETE"]),
            *page_shell.core_routes(),
        ])

    async def page(self, request: Request) -> Response:
        """AppAPI's embedded top menu page in the server's user layout, as the stand-in's
        release renders it (page_shell), with the scripts and styles the ExApp registered."""
        user = request.cookies.get("nc_user")
        if not user:
            return PlainTextResponse("not signed in", status_code=401)
        entry = self.state.top_menu.get(people.PAGE)
        if entry is None:
            return PlainTextResponse("no such top menu entry", status_code=404)
        registered = {kind: tuple(path for k, type_, name, path in self.state.ui_resources
                                  if k == kind and (type_, name) == ("top_menu", people.PAGE))
                      for kind in ("script", "style")}
        return HTMLResponse(page_shell.render(page_shell.Page(
            server_version=self.state.nextcloud_version, app_id=APP_ID, entry=people.PAGE,
            entry_display_name=entry["display_name"], entry_icon=entry["icon"], user=user,
            user_display_name=self.state.users[user].display_name,
            admin=self.state.users[user].admin, request_token=f"token-{user}",
            scripts=registered["script"], styles=registered["style"],
            capabilities=await self.capabilities(user),
        )))

    async def capabilities(self, user: str) -> dict:
        """The user's capabilities as the stand-in answers them (kept per user and release)."""
        key = (user, self.state.nextcloud_version)
        if key not in self.known_capabilities:
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.get(
                    self.nextcloud_url + "/ocs/v2.php/cloud/capabilities", params={"format": "json"},
                    headers=headers_to_exapp(self.state, user) | {"OCS-APIRequest": "true"})
            self.known_capabilities[key] = answer.json()["ocs"]["data"]["capabilities"]
        return self.known_capabilities[key]

    async def proxy(self, request: Request) -> Response:
        route = "/" + request.path_params["route"]
        user = request.cookies.get("nc_user", "")
        allowed = [level for pattern, verbs, level in self.routes
                   if pattern.search(route) and request.method in verbs]
        if not allowed:
            status = 404
        elif allowed[0] != "PUBLIC" and not user:
            status = 401
        else:
            status = 0
        if status:
            self.requests.append((request.method, route, status))
            return PlainTextResponse("refused by the proxy", status_code=status)
        headers = headers_to_exapp(self.state, user)
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await client.request(
                request.method, self.exapp_url + route, params=request.query_params,
                content=await request.body(), headers=headers,
            )
        self.requests.append((request.method, route, answer.status_code))
        keep = {k: v for k, v in answer.headers.items()
                if k.lower() in {"content-type", "cache-control"}}
        return Response(answer.content, status_code=answer.status_code, headers=keep)


@dataclass
class Library:
    """The stand-in with alice's and bob's photos, and a store scanned from them."""

    state: NextcloudState
    nextcloud_url: str
    pristine: Path  # a data folder to copy for each test
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exapp_environment(state: NextcloudState, url: str, root: Path) -> dict[str, str]:
    """The variables AppAPI gives the ExApp's container, for the stand-in at url."""
    return {
        "NEXTCLOUD_URL": url, "APP_ID": APP_ID, "APP_SECRET": state.app.secret,
        "APP_VERSION": "0.1.0", "APP_HOST": "127.0.0.1", "APP_PORT": "23000",
        "AA_VERSION": state.aa_version, "APP_PERSISTENT_STORAGE": str(root / "storage"),
        "APP_DISPLAY_NAME": "Recognize", "COMPUTE_DEVICE": "CPU",
    }


def scan_through_nextcloud(settings: Settings, env: dict[str, str], users: list[str]) -> Engine:
    """The users' files crawled, analyzed as a worker of the ExApp does (in this process), the
    page registered and the faces grouped: the engine that did it."""
    engine = Engine(settings)

    async def crawl() -> None:
        source = NextcloudSource(settings.nextcloud.max_download_bytes)
        await sync(engine.sessions, NextcloudUsers(source, users), engine.pipeline)

    def analyze() -> None:
        engine.queue.enqueue_pending(engine.sessions)
        with contextlib.closing(worker_fetcher(settings)) as fetcher:
            worker = engine.worker(fetcher, obey_schedule=False)
            worker.run(until=lambda: not work_left(engine.sessions, users=users, ready_only=True))

    with _environment(env), concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, crawl()).result()  # Playwright's loop may own this thread
        thread.submit(analyze).result()
        thread.submit(asyncio.run, people.register_page(AsyncNextcloudApp())).result()
    engine.regroup(full=True)
    return engine


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Iterator[Library]:
    """alice has 12 identities × 11 photos, bob 2 × 6; scanned once through the real
    Nextcloud path (crawl, download, faces) and grouped."""
    release = RELEASES[MAINTAINED[0]]  # the interaction tests' release
    state = NextcloudState(APP_ID, "0.1.0", new_secret(), release.app_api, release.server)
    state.add_user("admin", "Administrator", admin=True)
    state.add_user("alice", "Alice")
    state.add_user("bob", "Bob")
    for user, identities, count in (("alice", ALICE_IDENTITIES, ALICE_PHOTOS),
                                    ("bob", BOB_IDENTITIES, BOB_PHOTOS)):
        for identity in identities:
            for photo in sorted((SHARED_DATA / "faces" / identity).iterdir())[:count]:
                state.put_file(user, f"Photos/{identity}/{photo.name}", photo.read_bytes())
    state.app.enabled = True
    server = BackgroundServer(build_app(state))
    server.start()
    root = tmp_path_factory.mktemp("people-page")
    env = exapp_environment(state, server.url, root)
    settings = Settings(data_dir=root / "pristine", model_mirror=SHARED_MODELS, **FACES_ONLY)
    scan_through_nextcloud(settings, env, ["alice", "bob"]).sessions.kw["bind"].dispose()
    try:
        yield Library(state, server.url, settings.data_dir, env)
    finally:
        server.stop()


@dataclass
class Stack:
    """One test's ExApp (on a copy of the scanned store), front and browser page."""

    engine: Engine
    exapp_url: str
    front: Front
    front_url: str
    state: NextcloudState

    def call(self, method: str, route: str, user: str, **kwargs) -> httpx.Response:
        """A request to the ExApp as AppAPI's proxy sends it for user."""
        return httpx.request(method, self.exapp_url + route,
                             headers=headers_to_exapp(self.state, user), timeout=60, **kwargs)

    def persons(self, user: str, hidden: bool = False) -> list[operations.PersonSummary]:
        with self.engine.sessions() as session:
            return operations.list_persons(session, include_hidden=hidden, owner=user)


@contextmanager
def _serve(app, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "a server did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def _stack(library: Library, data_dir: Path) -> Iterator[Stack]:
    assert (REPO / "ex_app/web/static" / f"{people.SCRIPT}.js").exists(), "run `make ui` first"
    settings = Settings(data_dir=data_dir, model_mirror=SHARED_MODELS, **FACES_ONLY)
    library.state.app.enabled = False  # the ExApp starts without its background work
    front = Front(library.state, library.nextcloud_url)
    exapp_port, front_port = _free_port(), _free_port()
    with _environment(library.env), _serve(create_app(settings), exapp_port):
        library.state.app.enabled = True  # now its downloads are allowed
        front.exapp_url = f"http://127.0.0.1:{exapp_port}"
        with _serve(front.app, front_port):
            engine = Engine(settings)
            try:
                yield Stack(engine, front.exapp_url, front, f"http://127.0.0.1:{front_port}",
                            library.state)
            finally:
                engine.sessions.kw["bind"].dispose()


@pytest.fixture
def stack(library, tmp_path) -> Iterator[Stack]:
    shutil.copytree(library.pristine, tmp_path / "data")
    with _stack(library, tmp_path / "data") as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],  # no outside calls
        )
        yield chromium
        chromium.close()


def new_page(browser, stack: Stack, user: str, width: int = 1280) -> Page:
    """A signed-in browser page that records its errors (errors_of), not yet navigated."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.add_cookies([{"name": "nc_user", "value": user, "url": stack.front_url}])
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors = PAGE_ERRORS.setdefault(id(page), [])
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", lambda message: errors.append(f"{message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("response", lambda response: errors.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400 else None)
    return page


def open_page(browser, stack: Stack, user: str, width: int = 1280) -> Page:
    page = new_page(browser, stack, user, width)
    page.goto(stack.front_url + PAGE_PATH)
    expect(page.get_by_role("heading", name="All persons")).to_be_visible()
    return page


def errors_of(page: Page) -> list[str]:
    """The uncaught script errors, console errors and warnings of a page opened here."""
    return PAGE_ERRORS[id(page)]


@contextmanager
def _release(state: NextcloudState, major: int) -> Iterator[None]:
    """The stand-in answers (and renders its pages) as that release for a while."""
    saved = state.nextcloud_version, state.aa_version
    state.nextcloud_version, state.aa_version = RELEASES[major].server, RELEASES[major].app_api
    try:
        yield
    finally:
        state.nextcloud_version, state.aa_version = saved


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def images_shown(page: Page, within: str, first: int = 3) -> None:
    """The first images in a part of the page have loaded (screenshots show them)."""
    images = page.locator(f"{within} img")
    for index in range(min(first, images.count())):
        expect(images.nth(index)).to_have_js_property("complete", True)
        assert images.nth(index).evaluate("img => img.naturalWidth") > 0


def card(page: Page, person_id: int):
    return page.locator(f'li.person-card[data-person-id="{person_id}"]')


def identity_person(stack: Stack, identity: str) -> int:
    """The person holding most of an identity's faces (alice's photos are in one folder per
    identity)."""
    with stack.engine.sessions() as session:
        rows = session.execute(
            select(schema.Face.person_id)
            .join(schema.File)
            .where(schema.File.path.like(f"Photos/{identity}/%"), schema.Face.person_id.is_not(None))
        ).scalars().all()
    return max(set(rows), key=rows.count)


def test_the_grid_shows_each_users_own_persons_with_thumbnails(browser, stack):
    alice = stack.persons("alice")
    bob = stack.persons("bob")
    assert len(alice) >= len(ALICE_IDENTITIES) and len(bob) >= len(BOB_IDENTITIES)
    assert not {p.id for p in alice} & {p.id for p in bob}

    page = open_page(browser, stack, "alice")
    cards = page.locator("li.person-card")
    expect(cards).to_have_count(len(alice))
    shown = [int(i) for i in cards.evaluate_all("cards => cards.map(c => c.dataset.personId)")]
    assert shown == [p.id for p in alice]  # named first, then by size: the store's order
    first = card(page, alice[0].id)
    expect(first.get_by_role("button")).to_have_accessible_name(
        re.compile(rf"{alice[0].photos} photos")
    )
    image = first.locator("img")
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") == 128  # a real thumbnail, via the proxy
    shot(page, "persons")
    first.get_by_role("button").first.focus()  # the keyboard opens a person
    page.keyboard.press("Enter")
    expect(page.get_by_role("list", name="Photos of this person").get_by_role("listitem")).to_have_count(
        alice[0].faces
    )

    bob_page = open_page(browser, stack, "bob")
    expect(bob_page.locator("li.person-card")).to_have_count(len(bob))
    bob_shown = {int(i) for i in bob_page.locator("li.person-card").evaluate_all(
        "cards => cards.map(c => c.dataset.personId)")}
    assert bob_shown == {p.id for p in bob}
    assert errors_of(page) == [] and errors_of(bob_page) == []


def test_the_top_menu_entry_and_its_files(stack):
    entry = stack.state.top_menu[people.PAGE]
    assert entry["display_name"] == "People" and not entry["admin_required"]
    resources = {(kind, path) for kind, type_, name, path in stack.state.ui_resources
                 if (type_, name) == ("top_menu", people.PAGE)}
    assert resources == {("script", people.SCRIPT), ("style", people.STYLE)}
    for path, kind in ((f"{people.SCRIPT}.js", "javascript"), (f"{people.STYLE}.css", "css"),
                       (entry["icon"], "svg")):
        answer = httpx.get(f"{stack.front_url}{PROXY_PREFIX}/{path}")  # PUBLIC: no session
        assert answer.status_code == 200 and kind in answer.headers["content-type"], path
    assert httpx.get(f"{stack.front_url}{PROXY_PREFIX}/api/people/persons").status_code == 401
    assert httpx.get(f"{stack.front_url}{PROXY_PREFIX}/api/people/nope").status_code == 404


@pytest.mark.parametrize("major", MAINTAINED, ids=lambda major: f"nc{major}")
def test_the_first_frame_shows_persons_in_each_release(browser, stack, major):
    """The page in the user layout each maintained release renders around it: persons in the
    first frame that has any, no error or warning (@nextcloud/vue's "used without setting /
    replacing the appName" included), and the release's styles (OC.config.version) applied."""
    alice = stack.persons("alice")
    with _release(stack.state, major):
        page = new_page(browser, stack, "alice")
        page.add_init_script(FIRST_FRAME_CARDS)
        page.goto(stack.front_url + PAGE_PATH)
        page.wait_for_function("window.firstFrameCards !== null")
    # the list arrives whole: the first frame with a person shows every person
    assert page.evaluate("window.firstFrameCards") == len(alice)
    assert page.evaluate("window.OC.config.version").startswith(f"{major}.")
    legacy = page.locator("#content-vue").evaluate("e => e.classList.contains('content--legacy')")
    assert legacy == (major < 34)  # @nextcloud/vue's styles for releases before 34
    assert page.title() == "People - Nextcloud"
    images_shown(page, "ul.person-grid__list", first=len(alice))
    shot(page, f"first-frame-nc{major}")
    assert errors_of(page) == []


def test_the_page_shell_of_29_breaks_ncappcontent(browser, stack):
    """Nextcloud 29 gave core/apps as an object keyed by app id, and @nextcloud/vue 9's
    NcAppContent calls .find on it: the page stops before any person shows, as it did on a real
    29.0.6. The shell reproduces that, which is why the page needs Nextcloud 30 or later."""
    with _release(stack.state, 29):
        page = new_page(browser, stack, "alice")
        page.goto(stack.front_url + PAGE_PATH)
        page.wait_for_load_state("load")
    deadline = time.monotonic() + 20
    while not any("find is not a function" in error for error in errors_of(page)):
        assert time.monotonic() < deadline, errors_of(page)
        page.wait_for_timeout(50)
    expect(page.locator("li.person-card")).to_have_count(0)


def test_another_users_ids_are_refused(stack):
    alice_person = stack.persons("alice")[0]
    with stack.engine.sessions() as session:
        alice_face, alice_file = session.execute(
            select(schema.Face.id, schema.Face.file_id).where(
                schema.Face.person_id == alice_person.id
            )
        ).first()
    bob_person = stack.persons("bob")[0].id
    refused = [
        ("GET", f"/api/people/persons/{alice_person.id}/faces", {}),
        ("GET", f"/api/people/faces/{alice_face}/thumbnail", {}),
        ("GET", f"/api/people/photos/{alice_file}/preview", {}),
        ("POST", f"/api/people/persons/{alice_person.id}/name", {"json": {"name": "Mine"}}),
        ("POST", f"/api/people/persons/{alice_person.id}/hidden", {"json": {"hidden": True}}),
        ("POST", "/api/people/merge", {"json": {"into": bob_person, "others": [alice_person.id]}}),
        ("POST", f"/api/people/faces/{alice_face}/move", {"json": {"person_id": bob_person}}),
        ("POST", f"/api/people/faces/{alice_face}/remove", {}),
        ("POST", "/api/people/distinct", {"json": {"person_id": bob_person, "other_id": alice_person.id}}),
    ]
    for method, route, kwargs in refused:
        assert stack.call(method, route, "bob", **kwargs).status_code == 404, route
    assert stack.call("POST", "/api/people/undo", "bob").status_code == 409  # nothing done
    listing = stack.call("GET", "/api/people/persons", "bob").json()["persons"]
    assert {p["id"] for p in listing} == {p.id for p in stack.persons("bob")}
    assert stack.call("GET", "/api/people/persons", "").status_code == 401
    assert next(p.id for p in stack.persons("alice")) == alice_person.id
    with stack.engine.sessions() as session:
        assert session.get(schema.Person, alice_person.id).name == alice_person.name
        assert session.get(schema.Face, alice_face).person_id == alice_person.id


def test_rename_with_autocomplete_then_undo(browser, stack):
    putin = identity_person(stack, "Vladimir_Putin")
    ridge = identity_person(stack, "Tom_Ridge")
    with stack.engine.sessions.begin() as session:
        operations.rename(session, ridge, "Tom Ridge")
    page = open_page(browser, stack, "alice")
    card(page, putin).get_by_role("button").first.click()
    field = page.get_by_label("Name", exact=True)
    expect(field).to_be_visible()
    assert field.get_attribute("list") == "recognize-names"
    options = page.locator("#recognize-names option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["Tom Ridge"]  # the names in use, offered while typing
    expect(page.locator("figure.face-photo").first).to_be_visible()
    shot(page, "person")
    field.fill("Vladimir Putin")
    field.press("Enter")  # the keyboard saves it
    expect(page.get_by_role("heading", name="Vladimir Putin")).to_be_visible()
    with stack.engine.sessions() as session:
        person = session.get(schema.Person, putin)
        assert person.name == "Vladimir Putin" and person.confirmed

    page.get_by_role("button", name="Undo the last change").click()
    expect(page.get_by_role("heading", name="Unnamed person")).to_be_visible()
    with stack.engine.sessions() as session:
        assert session.get(schema.Person, putin).name is None
    assert errors_of(page) == []


def test_merge_several_persons_then_undo(browser, stack):
    ids = [identity_person(stack, name) for name in ("Tom_Daschle", "Colin_Powell", "John_Negroponte")]
    with stack.engine.sessions() as session:
        faces = {pid: set(session.scalars(select(schema.Face.id).where(schema.Face.person_id == pid)))
                 for pid in ids}
    page = open_page(browser, stack, "alice")
    for person_id in ids:
        card(page, person_id).get_by_role("checkbox").check()
    shot(page, "merge-selection")
    page.get_by_role("button", name="Merge 3 persons").click()
    expect(page.locator("figure.face-photo")).to_have_count(sum(len(f) for f in faces.values()))
    listing_order = [p.id for p in stack.persons("alice")]
    with stack.engine.sessions() as session:
        survivors = [pid for pid in ids if session.get(schema.Person, pid) is not None]
        assert len(survivors) == 1
        into = survivors[0]
        merged = set(session.scalars(select(schema.Face.id).where(schema.Face.person_id == into)))
    assert merged == set().union(*faces.values()) and into in listing_order

    page.get_by_role("button", name="Undo the last change").click()
    expect(page.get_by_role("status")).to_have_text("Undone")
    with stack.engine.sessions() as session:
        for person_id in ids:
            now = set(session.scalars(select(schema.Face.id).where(schema.Face.person_id == person_id)))
            assert now == faces[person_id]
    assert errors_of(page) == []


def test_remove_a_face_and_move_another(browser, stack):
    beckham = identity_person(stack, "David_Beckham")
    koizumi = identity_person(stack, "Junichiro_Koizumi")
    page = open_page(browser, stack, "alice")
    card(page, beckham).get_by_role("button").first.click()
    photos = page.locator("figure.face-photo")
    expect(photos.first).to_be_visible()
    before = photos.count()
    removed = int(photos.nth(0).get_attribute("data-face-id"))
    box = photos.nth(0).locator(".face-photo__box")
    expect(box).to_be_visible()  # the face box drawn on the photo
    photos.nth(0).get_by_role("button", name=re.compile("^Not this person")).click()
    expect(photos).to_have_count(before - 1)
    with stack.engine.sessions() as session:
        assert session.get(schema.Face, removed).person_id != beckham
        assert session.get(schema.FaceRejection, (removed, beckham)) is not None

    moved = int(photos.nth(0).get_attribute("data-face-id"))
    photos.nth(0).get_by_role("button", name=re.compile("^Move to another person")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("combobox").click()
    page.get_by_role("option", name=re.compile(rf"Unnamed {koizumi} ")).click()
    shot(page, "move-dialog")
    dialog.get_by_role("button", name="Move").click()
    expect(photos).to_have_count(before - 2)
    with stack.engine.sessions() as session:
        face = session.get(schema.Face, moved)
        assert face.person_id == koizumi and face.pinned
    stack.engine.regroup(full=True)  # the corrections hold through a re-grouping
    with stack.engine.sessions() as session:
        assert session.get(schema.Face, removed).person_id != beckham
        assert session.get(schema.Face, moved).person_id == koizumi
    assert errors_of(page) == []


def test_hide_a_person_and_find_it_under_hidden(browser, stack):
    megawati = identity_person(stack, "Megawati_Sukarnoputri")
    page = open_page(browser, stack, "alice")
    card(page, megawati).get_by_role("button").first.click()
    page.get_by_role("button", name="Hide person").click()
    expect(page.get_by_role("button", name="Show person")).to_be_visible()
    with stack.engine.sessions() as session:
        assert session.get(schema.Person, megawati).hidden
    page.get_by_role("link", name="All persons").click()
    expect(card(page, megawati)).to_have_count(0)
    page.get_by_role("link", name="Hidden persons").click()
    expect(card(page, megawati)).to_be_visible()
    shot(page, "hidden")
    card(page, megawati).get_by_role("button", name=re.compile("^Show .* again")).click()
    expect(card(page, megawati)).to_have_count(0)
    with stack.engine.sessions() as session:
        assert not session.get(schema.Person, megawati).hidden
    assert errors_of(page) == []


def test_suggestions_unassigned_and_unsure_views(browser, stack):
    arroyo = identity_person(stack, "Gloria_Macapagal_Arroyo")
    with stack.engine.sessions.begin() as session:
        half = session.scalars(
            select(schema.Face.id).where(schema.Face.person_id == arroyo).order_by(schema.Face.id)
        ).all()[:4]
        split = operations.move_face(session, half[0], None, owner="alice")
        for face_id in half[1:]:
            operations.move_face(session, face_id, split, owner="alice")
    page = open_page(browser, stack, "alice")
    page.get_by_role("link", name="Maybe the same person").click()
    pair = page.locator(f'li.suggestion[data-pair="{min(arroyo, split)}-{max(arroyo, split)}"]')
    expect(pair).to_be_visible()
    images_shown(page, "section.suggestions")
    shot(page, "suggestions")
    pair.get_by_role("button", name=re.compile("are not the same$")).click()
    expect(pair).to_have_count(0)
    with stack.engine.sessions() as session:
        assert session.get(schema.DistinctPersons, (min(arroyo, split), max(arroyo, split)))

    page.get_by_role("button", name="Undo the last change").click()
    expect(pair).to_be_visible()
    pair.get_by_role("button", name=re.compile("^Same person")).click()
    expect(pair).to_have_count(0)
    with stack.engine.sessions() as session:
        assert {session.get(schema.Face, f).person_id for f in half} == {min(arroyo, split)}

    # A face taken out of its person waits under Unassigned, and is placed from there.
    loose = half[0]
    with stack.engine.sessions.begin() as session:
        operations.remove_face(session, loose, owner="alice")
    page.get_by_role("link", name="Unassigned faces").click()
    expected = stack.call("GET", "/api/people/faces/unassigned", "alice").json()["faces"]
    figures = page.locator("section.face-list figure.face-photo")
    expect(figures).to_have_count(len(expected))
    figure = page.locator(f'figure.face-photo[data-face-id="{loose}"]')
    images_shown(page, "section.face-list")
    shot(page, "unassigned")
    figure.get_by_role("button", name=re.compile("^Move to a person")).click()
    page.get_by_role("dialog").get_by_role("combobox").click()
    page.get_by_role("option", name="A new person").click()
    page.get_by_role("dialog").get_by_role("button", name="Move").click()
    expect(figure).to_have_count(0)
    with stack.engine.sessions() as session:
        face = session.get(schema.Face, loose)
        assert face.pinned and face.person.owner == "alice" and face.person_id != arroyo

    page.get_by_role("link", name="Unsure faces").click()
    expected = stack.call("GET", "/api/people/faces/unsure", "alice").json()["faces"]
    expect(page.get_by_role("heading", name="Unsure faces")).to_be_visible()
    if expected:
        expect(page.locator("section.face-list figure.face-photo")).to_have_count(len(expected))
        images_shown(page, "section.face-list")
    else:
        expect(page.get_by_text("Nothing here")).to_be_visible()
    shot(page, "unsure")
    assert errors_of(page) == []


def test_progress_panel_shows_the_users_own_work_on_a_phone(browser, stack):
    with stack.engine.sessions.begin() as session:  # 5 of alice's photos to analyze again
        tasks = session.scalars(
            select(schema.Task).join(schema.File).join(schema.Root)
            .where(schema.Root.location == "alice").order_by(schema.Task.id)
        ).all()
        for task in tasks[:5]:
            task.status = TaskStatus.PENDING
    page = open_page(browser, stack, "alice", width=390)
    page.get_by_role("button", name="Open navigation").click()  # closed on a phone
    panel = page.get_by_role("region", name="Progress")
    expect(panel.get_by_text("Faces")).to_be_visible()
    # alice's files only (bob's 12 are not counted), with the time left at the recent rate
    expect(panel.get_by_text(f"{len(tasks) - 5} done, 5 to do, 0 failed")).to_be_visible()
    expect(panel.get_by_text(re.compile(r"^about \d+ minutes? left$"))).to_be_visible()
    expect(panel.get_by_text("Analysis is paused.")).to_be_visible()  # not enabled here
    grid_columns = page.locator("ul.person-grid__list").evaluate(
        "list => getComputedStyle(list).gridTemplateColumns.split(' ').length")
    assert 1 <= grid_columns <= 3  # the grid reflows on a phone
    page.wait_for_timeout(400)  # the navigation's slide-in, for the screenshot only
    shot(page, "phone")
    assert errors_of(page) == []


def test_load_time_with_500_persons(browser, library, tmp_path):
    """500 persons, each a real face embedding (copied to synthetic photos), in alice's store:
    the time from navigation to the first frame with all 500 cards, printed; the target is
    1 s, the assertion is looser (LOAD_BOUND_MS)."""
    data = tmp_path / "data"
    shutil.copytree(library.pristine, data)
    engine = Engine(Settings(data_dir=data, model_mirror=SHARED_MODELS, **FACES_ONLY))
    with engine.sessions.begin() as session:
        faces = session.scalars(select(schema.Face).join(schema.File).join(schema.Root)
                                .where(schema.Root.location == "alice")).all()
        rng = np.random.default_rng(7)
        existing = len(operations.list_persons(session, owner="alice"))
        for index in range(SYNTHETIC_PERSONS - existing):
            face = faces[rng.integers(len(faces))]  # a real face, in a copy of its photo
            photo = face.file
            node = library.state.put_file(
                "alice", f"Synthetic/{index}.jpg",
                library.state.own_node("alice", photo.path).content,
            )
            file = schema.File(root_id=photo.root_id, path=f"Synthetic/{index}.jpg",
                               kind="image", size=photo.size, mtime_ns=0,
                               content_hash=f"etag:{node.etag}", width=photo.width,
                               height=photo.height, remote_id=node.fileid)
            person = schema.Person(owner="alice")
            session.add_all([file, person])
            session.flush()
            session.add(schema.Face(
                file_id=file.id, x=face.x, y=face.y, w=face.w, h=face.h, score=face.score,
                quality=face.quality, sharpness=face.sharpness, pose=face.pose,
                landmarks=face.landmarks, embedding=face.embedding, person_id=person.id,
            ))
    engine.sessions.kw["bind"].dispose()
    with _stack(library, data) as running:
        assert len(running.persons("alice")) == SYNTHETIC_PERSONS
        page = open_page(browser, running, "alice")  # warm: the bundle is in the cache
        page.context.add_init_script(CARDS_SHOWN_AT % SYNTHETIC_PERSONS)
        page.wait_for_load_state("networkidle", timeout=60_000)  # visible thumbnails made
        timings, steps = [], []
        for _ in range(3):
            page.reload()
            expect(page.locator("li.person-card")).to_have_count(SYNTHETIC_PERSONS)
            timings.append(page.evaluate("window.cardsShownAt"))
            steps.append(page.evaluate("""() => Object.fromEntries(
                performance.getEntriesByType('resource')
                    .filter(e => /recognize_ex-main.js|api\\/people\\/persons/.test(e.name))
                    .map(e => [e.name.includes('.js') ? 'script' : 'persons', Math.round(e.responseEnd)]))"""))
        shot(page, "persons-500")
    best, worst = min(timings), max(timings)
    print(f"\nPeople page with {SYNTHETIC_PERSONS} persons: navigation to all cards shown in "
          f"{best:.0f} ms (best of 3), {worst:.0f} ms (worst); each: "
          + ", ".join(f"{t:.0f}" for t in timings)
          + f" (script and persons list received at, in ms: {steps})")
    assert best < LOAD_BOUND_MS, timings


def test_a_user_opts_out_and_back_in_from_the_page(browser, stack):
    page = open_page(browser, stack, "bob")
    panel = page.get_by_role("region", name="Progress")
    analyze = panel.get_by_role("switch", name="Analyze my files")
    expect(analyze).to_be_checked()  # the admin's default: analyzed
    panel.get_by_text("Analyze my files").click()  # the label: the input itself is hidden
    expect(analyze).not_to_be_checked()
    delete = panel.get_by_role("checkbox", name="Delete the faces and persons found in my files")
    panel.get_by_text("Delete the faces and persons found in my files").click()
    expect(delete).to_be_checked()
    assert stack.state.preferences[("bob", "analyze_my_files")][0] == "0"
    assert stack.state.preferences[("bob", "delete_my_face_data")][0] == "1"
    assert stack.call("GET", "/api/people/choice", "alice").json() == {
        "analyze": True, "delete_faces": False}  # alice's choice is her own
    shot(page, "opted-out")
    panel.get_by_text("Analyze my files").click()
    expect(analyze).to_be_checked()
    expect(delete).to_have_count(0)
    assert stack.state.preferences[("bob", "analyze_my_files")][0] == "1"
    assert errors_of(page) == []
