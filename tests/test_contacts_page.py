"""Names from contacts on the People page: the real ExApp reads alice's address book from the
stand-in over CardDAV, and the page asks "Is this Ann Smith?" on the person card; yes names
the person, no makes the question go for good. Also the routes over real HTTP as AppAPI's
proxy calls them. Contact photos are other photos of the identities than alice's files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from conftest import SHARED_DATA, SHARED_MODELS
from nextcloud_standin.auth import new_secret
from nextcloud_standin.carddav import vcard
from nextcloud_standin.releases import MAINTAINED, RELEASES
from nextcloud_standin.server import BackgroundServer, build_app
from nextcloud_standin.state import NextcloudState
from playwright.sync_api import expect
from test_people_page import (  # noqa: F401 - browser: the fixture
    APP_ID, FACES_ONLY, Library, _environment, _stack, browser, card, errors_of, exapp_environment,
    identity_person, open_page, scan_through_nextcloud, shot,
)

from ex_app.config import Settings
from ex_app.store import schema
from ex_app.service.nextcloud_settings import ANALYZE

FACES = SHARED_DATA / "faces"
NAMES = {"Vladimir_Putin": "Ann Smith", "Tom_Ridge": "Bob Jones", "Silvio_Berlusconi": "Carl Diaz"}
FILES, CONTACT_PHOTO = 5, 8
SUGGESTIONS = "/api/people/contacts/suggestions"


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Iterator[Library]:
    """alice's files (FILES photos of three identities) crawled, analyzed and grouped through
    the real Nextcloud path; her Contacts hold one other photo of each identity."""
    release = RELEASES[MAINTAINED[0]]
    state = NextcloudState(APP_ID, "0.1.0", new_secret(), release.app_api, release.server)
    state.add_user("admin", "Administrator", admin=True)
    state.add_user("alice", "Alice")
    state.add_user("bob", "Bob")
    book = state.address_books.add("alice")
    for number, (identity, name) in enumerate(NAMES.items()):
        photos = sorted((FACES / identity).iterdir())
        for photo in photos[:FILES]:
            state.put_file("alice", f"Photos/{identity}/{photo.name}", photo.read_bytes())
        state.address_books.put_card(book, f"{number}.vcf", vcard(
            name, photos[CONTACT_PHOTO].read_bytes(), version=("3.0", "4.0")[number % 2]))
    state.app.enabled = True
    server = BackgroundServer(build_app(state))
    server.start()
    root = tmp_path_factory.mktemp("contacts-page")
    env = exapp_environment(state, server.url, root)
    settings = Settings(data_dir=root / "pristine", model_mirror=SHARED_MODELS, **FACES_ONLY)
    scan_through_nextcloud(settings, env, ["alice"]).sessions.kw["bind"].dispose()
    try:
        yield Library(state, server.url, settings.data_dir, env)
    finally:
        server.stop()


@pytest.fixture
def stack(library, tmp_path):
    shutil.copytree(library.pristine, tmp_path / "data")
    with _stack(library, tmp_path / "data") as running:
        yield running


def reports(stack) -> list[tuple[str, str]]:
    return [(path, user) for method, path, user in stack.state.requests if method == "REPORT"]


def test_the_routes_offer_names_read_over_carddav_only_to_their_user(stack):
    before = len(reports(stack))
    offered = stack.call("GET", SUGGESTIONS, "alice")
    assert offered.status_code == 200
    expected = {identity_person(stack, identity): name for identity, name in NAMES.items()}
    assert {s["person_id"]: s["name"] for s in offered.json()["suggestions"]} == expected
    assert reports(stack)[before:] == [("/remote.php/dav/addressbooks/users/alice/contacts/", "alice")]
    stack.call("GET", SUGGESTIONS, "alice")  # read at most every contacts_refresh_seconds
    assert len(reports(stack)) == before + 1

    assert stack.call("GET", SUGGESTIONS, "bob").json() == {"suggestions": []}
    ann = identity_person(stack, "Vladimir_Putin")
    answer = {"json": {"name": "Ann Smith"}}
    assert stack.call("POST", f"{SUGGESTIONS}/{ann}/accept", "bob", **answer).status_code == 404
    assert stack.call("POST", f"{SUGGESTIONS}/{ann}/reject", "bob", **answer).status_code == 404
    wrong = {"json": {"name": "Bob Jones"}}
    assert stack.call("POST", f"{SUGGESTIONS}/{ann}/accept", "alice", **wrong).status_code == 404
    assert stack.call("GET", SUGGESTIONS, "").status_code == 401
    with stack.engine.sessions() as session:
        assert session.get(schema.Person, ann).name is None  # nothing named without alice

    stack.state.preferences[("alice", ANALYZE)] = ("0", 0)  # alice opts out: no offers
    try:
        assert stack.call("GET", SUGGESTIONS, "alice").json() == {"suggestions": []}
    finally:
        del stack.state.preferences[("alice", ANALYZE)]


def test_the_person_card_asks_is_this_ann_smith(browser, stack):
    ann, bob = identity_person(stack, "Vladimir_Putin"), identity_person(stack, "Tom_Ridge")
    page = open_page(browser, stack, "alice")
    question = card(page, ann).get_by_role("group", name="Name from your contacts")
    expect(question).to_contain_text("Is this Ann Smith?")
    expect(card(page, bob)).to_contain_text("Is this Bob Jones?")
    shot(page, "contacts-question")

    question.get_by_role("button", name="Yes, this is Ann Smith").click()
    expect(card(page, ann).locator(".person-card__name")).to_have_text("Ann Smith")
    expect(card(page, ann).get_by_role("group", name="Name from your contacts")).to_have_count(0)
    card(page, bob).get_by_role("button", name="No, this is not Bob Jones").click()
    expect(card(page, bob).get_by_role("group", name="Name from your contacts")).to_have_count(0)
    expect(card(page, bob).locator(".person-card__name")).to_have_text("Unnamed")

    again = open_page(browser, stack, "alice")  # the answers hold on a new visit
    expect(card(again, identity_person(stack, "Silvio_Berlusconi"))).to_contain_text("Is this Carl Diaz?")
    expect(card(again, bob).get_by_role("group", name="Name from your contacts")).to_have_count(0)
    expect(card(again, ann).locator(".person-card__name")).to_have_text("Ann Smith")
    with stack.engine.sessions() as session:
        assert session.get(schema.Person, ann).name == "Ann Smith"
        assert session.get(schema.Person, bob).name is None
    assert errors_of(page) == [] and errors_of(again) == []


def test_address_books_that_cannot_be_read_leave_the_page_working(stack):
    stack.state.fail_next(1, 503, "/remote.php/dav/addressbooks/")  # Nextcloud in maintenance
    answer = stack.call("GET", SUGGESTIONS, "alice")
    assert answer.status_code == 200 and answer.json() == {"suggestions": []}  # nothing read yet
    assert len(stack.call("GET", SUGGESTIONS, "alice").json()["suggestions"]) == len(NAMES)
