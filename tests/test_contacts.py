"""Names from contacts: CardDAV over real HTTP against the stand-in, contact photos made from
../shared/data/faces (other photos of the same identities than those in the user's files),
the real face models, suggestions the user accepts or rejects, and the CLI's import."""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections import Counter
from xml.etree import ElementTree

import httpx
import pytest
from conftest import SHARED_DATA, SHARED_MODELS, run_cli
from nc_py_api import AsyncNextcloudApp, NextcloudException
from nextcloud_standin.carddav import addressbook_query, vcard
from sqlalchemy import select

from ex_app.analyzers.faces import face_analyzer
from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.people import contacts as people_contacts
from ex_app.people.clustering import QualityGate
from ex_app.people.operations import NotFound
from ex_app.sources import contacts as source
from ex_app.store import schema
from ex_app.work.contacts import read_nextcloud_contacts
from ex_app.store.results import delete_face_data

FACES = SHARED_DATA / "faces"
# identity → the contact name alice gave them; their first FILES photos are alice's files, the
# photo CONTACT_PHOTO (never among them) is the contact's photo.
NAMES = {"Vladimir_Putin": "Ann Smith", "Tom_Ridge": "Bob Jones", "Silvio_Berlusconi": "Carl Diaz",
         "Lindsay_Davenport": "Dana Ek"}
STRANGER = "Ariel_Sharon"  # in alice's files, in no contact of hers
FILES, CONTACT_PHOTO = 5, 8
CARDDAV = "{urn:ietf:params:xml:ns:carddav}"


def photo(identity: str, index: int) -> bytes:
    return sorted((FACES / identity).iterdir())[index].read_bytes()


def group_photo() -> bytes:
    return sorted((FACES / "group").iterdir())[0].read_bytes()


def fill_contacts(state) -> None:
    """alice's Contacts: four identities (vCard 3 and 4), one without a photo, one with a
    photo of no face, one of a group; bob's book shared with her and the system book name
    alice's identities wrongly (they must never be used)."""
    books = state.address_books
    mine = books.add("alice")
    for number, (identity, name) in enumerate(NAMES.items()):
        books.put_card(mine, f"{number}.vcf", vcard(name, photo(identity, CONTACT_PHOTO),
                                                    version="3.0" if number % 2 else "4.0"))
    books.put_card(mine, "nophoto.vcf", vcard("Eve Nophoto"))
    books.put_card(mine, "noface.vcf", vcard("Motor Bike", sorted((FACES / "noface").iterdir())[0].read_bytes()))
    books.put_card(mine, "group.vcf", vcard("The Group", group_photo()))
    bobs = books.add("bob", "friends", "Friends")
    bobs.shared_with.add("alice")
    books.put_card(bobs, "x.vcf", vcard("Shared Wrong", photo("Vladimir_Putin", CONTACT_PHOTO + 1)))
    books.put_card(books.system, "alice.vcf", vcard("System Wrong", photo("Tom_Ridge", CONTACT_PHOTO + 1)))


@pytest.fixture
def env(nextcloud, monkeypatch):
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    fill_contacts(nextcloud.state)
    return nextcloud


def dav(nextcloud, method: str, path: str, body: str, user: str = "alice", depth: str = "1") -> httpx.Response:
    return httpx.request(method, nextcloud.url + "/remote.php/dav/" + path, content=body,
                         headers=nextcloud.headers_to_exapp(user) | {"Depth": depth})


# --- the stand-in, as sabre/dav and Nextcloud answer ---------------------------------------

def test_the_address_book_home_lists_own_shared_and_system_books(env):
    answer = dav(env, "PROPFIND", "addressbooks/users/alice/", source.HOME_PROPFIND)
    assert answer.status_code == 207
    assert answer.text.count('xmlns:card="urn:ietf:params:xml:ns:carddav"') == 1
    root = ElementTree.fromstring(answer.content)
    hrefs = [r.findtext("{DAV:}href") for r in root.iter("{DAV:}response")]
    assert hrefs == ["/remote.php/dav/addressbooks/users/alice/",
                     "/remote.php/dav/addressbooks/users/alice/contacts/",
                     "/remote.php/dav/addressbooks/users/alice/friends_shared_by_bob/",
                     "/remote.php/dav/addressbooks/users/alice/z-server-generated--system/"]
    book = list(root.iter("{DAV:}response"))[1]
    assert book.find(f".//{{DAV:}}resourcetype/{CARDDAV}addressbook") is not None
    assert book.findtext(".//{DAV:}sync-token") == f"http://sabre.io/ns/sync/{1 + 7}"  # 7 cards
    assert book.findtext(".//{http://calendarserver.org/ns/}getctag") == "8"
    owners = [r.findtext(".//{DAV:}owner/{DAV:}href") for r in root.iter("{DAV:}response")]
    assert owners[1:] == ["/remote.php/dav/principals/users/alice/", "/remote.php/dav/principals/users/bob/",
                          "/remote.php/dav/principals/system/system/"]


def test_another_users_home_and_unsigned_requests_are_refused(env):
    assert dav(env, "PROPFIND", "addressbooks/users/bob/", source.HOME_PROPFIND).status_code == 404
    unsigned = httpx.request("PROPFIND", env.url + "/remote.php/dav/addressbooks/users/alice/")
    assert unsigned.status_code == 401


def test_addressbook_query_converts_versions_and_keeps_the_asked_properties(env):
    asked = ('<card:address-data content-type="text/vcard" version="4.0">'
             '<card:prop name="FN"/><card:prop name="PHOTO"/></card:address-data>')
    four = dav(env, "REPORT", "addressbooks/users/alice/contacts/",
               addressbook_query("<d:getetag/>" + asked))
    assert four.status_code == 207
    cards = [e.text for e in ElementTree.fromstring(four.content).iter(f"{CARDDAV}address-data")]
    assert len(cards) == 7 and all("VERSION:4.0" in c and "\nN:" not in c for c in cards)
    assert sum("PHOTO:data:image/jpeg;base64," in c for c in cards) == 6  # vCard 3 ones converted
    three = dav(env, "REPORT", "addressbooks/users/alice/contacts/",
                addressbook_query('<d:getetag/><card:address-data/>'))
    cards = [e.text for e in ElementTree.fromstring(three.content).iter(f"{CARDDAV}address-data")]
    assert all("VERSION:3.0" in c and "\nN:" in c for c in cards)  # everything, vCard 3 (the default)
    assert sum("PHOTO;ENCODING=b;TYPE=JPEG:" in c for c in cards) == 6
    depth0 = dav(env, "REPORT", "addressbooks/users/alice/contacts/", addressbook_query(), depth="0")
    assert depth0.status_code == 415 and "Depth: 0" in depth0.text


# --- reading contacts over CardDAV ------------------------------------------------------------

def test_only_the_users_own_books_are_read_with_photos_of_both_versions(env):
    async def read():
        nc = AsyncNextcloudApp(user="alice")
        books = await source.address_books(nc, "alice")
        return books, await source.contacts_of(nc, books[0])

    books, contacts = asyncio.run(read())
    assert [(b.path, b.display_name, b.sync_token) for b in books] == [
        ("/addressbooks/users/alice/contacts/", "Contacts", "http://sabre.io/ns/sync/8")]
    by_name = {c.name: c for c in contacts}
    assert set(by_name) == {*NAMES.values(), "Eve Nophoto", "Motor Bike", "The Group"}
    for identity, name in NAMES.items():
        assert by_name[name].photo == photo(identity, CONTACT_PHOTO)
    assert by_name["Eve Nophoto"].photo is None

    async def bobs():  # alice's client cannot list bob's address books
        await source.address_books(AsyncNextcloudApp(user="alice"), "bob")

    with pytest.raises(NextcloudException) as refused:
        asyncio.run(bobs())
    assert refused.value.status_code == 404


def test_vcards_of_each_version_and_broken_photos(tmp_path):
    jpeg = photo("Tom_Ridge", 0)
    text = (vcard("Three", jpeg, "3.0") + vcard("Four", jpeg, "4.0")
            + "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:Two\r\nPHOTO;ENCODING=BASE64;JPEG:"
            + base64.b64encode(jpeg).decode() + "\r\n\r\nEND:VCARD\r\n"
            + vcard("Linked", extra="PHOTO;VALUE=uri:https://example.org/a.jpg")
            + vcard("Bad", extra="PHOTO:data:image/jpeg;base64,@@@"))
    found = {c.name: c for c in source.parse_vcards(text)}
    assert found["Three"].photo == found["Four"].photo == found["Two"].photo == jpeg
    assert found["Linked"].photo is None and "link" in found["Linked"].problem
    assert found["Bad"].photo is None and "base64" in found["Bad"].problem
    with pytest.raises(source.ContactsError):
        source.parse_vcards("BEGIN:VCARD\r\nFN:x\r\nBEGIN:VCARD\r\n\x00")


# --- suggestions ---------------------------------------------------------------------------------

@pytest.fixture
def library(tmp_path):
    """alice's files as the crawl records them: FILES photos of each identity and a stranger,
    grouped into persons by the real models."""
    engine = Engine(Settings(data_dir=tmp_path / "state", model_mirror=SHARED_MODELS))
    tree = tmp_path / "alice"
    for identity in [*NAMES, STRANGER]:
        (tree / identity).mkdir(parents=True)
        for source_photo in sorted((FACES / identity).iterdir())[:FILES]:
            shutil.copy(source_photo, tree / identity / source_photo.name)
    engine.scan(tree)
    with engine.sessions.begin() as session:
        root = session.scalars(select(schema.Root)).one()
        root.source, root.location = "nextcloud", "alice"
    engine.regroup(full=True)
    return engine


def embed_with(engine: Engine):
    s = engine.settings
    gate = QualityGate.from_settings(s)
    return lambda data: people_contacts.contact_face(
        engine.pipeline.part(face_analyzer), gate, data, s.images.max_side, s.images.max_pixels)


def person_of(engine: Engine, identity: str) -> int:
    with engine.sessions() as session:
        rows = session.execute(
            select(schema.Face.person_id).join(schema.File)
            .where(schema.File.path.like(f"{identity}/%"), schema.Face.person_id.is_not(None))
        ).scalars().all()
    return Counter(rows).most_common(1)[0][0]


def read(engine: Engine):
    return asyncio.run(read_nextcloud_contacts(
        engine.sessions, AsyncNextcloudApp(user="alice"), "alice", embed_with(engine),
        engine.settings.faces.embedder))


def suggestions(engine: Engine) -> dict[int, str]:
    with engine.sessions() as session:
        found = people_contacts.suggest_names(session, "alice", engine.settings.faces.embedder)
    return {s.person_id: s.name for s in found}


def test_contacts_name_the_matching_persons_and_nothing_else(env, library):
    report = read(library)
    assert (report.books, report.contacts, report.faces) == (1, 7, 4)
    assert set(report.skipped) == {"Eve Nophoto", "Motor Bike", "The Group"}
    assert "faces, not one" in report.skipped["The Group"] and "no photo" in report.skipped["Eve Nophoto"]
    offered = suggestions(library)
    expected = {person_of(library, identity): name for identity, name in NAMES.items()}
    assert offered == expected  # the stranger's person gets no name; bob's and the system's never used
    with library.sessions() as session:
        assert all(p.name is None for p in session.scalars(select(schema.Person)))  # nobody named yet

    delete_face_data(library.sessions, "alice")  # alice opts out and asks for her face data gone
    with library.sessions() as session:
        assert session.scalars(select(schema.ContactFace)).all() == []


def test_a_book_is_read_again_only_when_its_sync_token_changes(env, library):
    reports = lambda: sum(1 for m, p, _ in env.state.requests if m == "REPORT")  # noqa: E731
    read(library)
    assert reports() == 1
    again = read(library)
    assert (again.books, again.unchanged, reports()) == (0, 1, 1)
    book = env.state.address_books.books[0]
    env.state.address_books.delete_card(book, "0.vcf")  # Ann Smith's card goes
    changed = read(library)
    assert (changed.books, reports()) == (1, 2)
    assert "Ann Smith" not in suggestions(library).values()
    env.state.address_books.books.remove(book)  # the whole book goes
    read(library)
    assert suggestions(library) == {}


def test_accepting_names_rejecting_never_returns_and_named_persons_keep_their_names(env, library):
    read(library)
    ann, bob, carl = (person_of(library, i) for i in ("Vladimir_Putin", "Tom_Ridge", "Silvio_Berlusconi"))
    embedder = library.settings.faces.embedder
    with library.sessions.begin() as session:
        with pytest.raises(NotFound):  # only the name offered
            people_contacts.accept(session, ann, "Bob Jones", "alice", embedder)
        with pytest.raises(NotFound):  # only alice's persons
            people_contacts.accept(session, ann, "Ann Smith", "bob", embedder)
        people_contacts.accept(session, ann, "Ann Smith", "alice", embedder)
        people_contacts.reject(session, bob, "Bob Jones", "alice")
        library_person = session.get(schema.Person, carl)
        library_person.name, library_person.confirmed = "Uncle Carl", True  # named by alice herself
    library.regroup(full=True)
    offered = suggestions(library)
    assert ann not in offered and bob not in offered and carl not in offered
    with library.sessions() as session:
        assert session.get(schema.Person, ann).name == "Ann Smith"
        assert session.get(schema.Person, carl).name == "Uncle Carl"
        assert session.get(schema.Person, bob).name is None


# --- the command line ------------------------------------------------------------------------

def test_cli_imports_a_vcf_and_accepts_or_rejects_suggestions(tmp_path):
    tree = tmp_path / "photos"
    for identity in NAMES:
        (tree / identity).mkdir(parents=True)
        for source_photo in sorted((FACES / identity).iterdir())[:FILES]:
            shutil.copy(source_photo, tree / identity / source_photo.name)
    data = tmp_path / "state"
    run_cli(data, "scan", "--no-progress", str(tree))
    book = tmp_path / "book.vcf"
    book.write_text("".join(vcard(name, photo(identity, CONTACT_PHOTO), version=v)
                            for (identity, name), v in zip(NAMES.items(), ("3.0", "4.0", "3.0", "4.0")))
                    + vcard("The Group", group_photo()))
    imported = run_cli(data, "contacts", "import", str(book))
    assert "5 contacts, 4 with one clear face" in imported.stdout
    assert "The Group:" in imported.stdout
    listed = run_cli(data, "contacts", "suggestions").stdout.splitlines()
    assert sorted(line.split(" is ")[1].strip("?") for line in listed) == sorted(NAMES.values())
    first, second = (int(line.split()[0]) for line in listed[:2])
    first_name = listed[0].split(" is ")[1].strip("?")
    run_cli(data, "contacts", "accept", str(first))
    run_cli(data, "contacts", "reject", str(second))
    left = run_cli(data, "contacts", "suggestions").stdout
    assert f"{first} " not in left and f"{second} " not in left and len(left.splitlines()) == 2
    assert first_name in run_cli(data, "persons").stdout
    broken = tmp_path / "broken.vcf"
    broken.write_bytes(b"\x89PNG not a vcard")
    failed = run_cli(data, "contacts", "import", str(broken), check=False)
    assert failed.returncode != 0 and "no vCard" in failed.stderr and "Traceback" not in failed.stderr
