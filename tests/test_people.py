"""Persons and user decisions on real faces: each decision survives a full re-grouping and an
incremental update."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_MODELS
from PIL import Image
from sqlalchemy import delete, select, update

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.people import operations, thumbnails
from ex_app.people.clustering import QualityGate
from ex_app.people.distances import face_distances
from ex_app.store import schema
from ex_app.store.files import work_left
from ex_app.sources.local import local_file

IDENTITIES = ("Vladimir_Putin", "Tom_Ridge", "Silvio_Berlusconi", "Lindsay_Davenport", "Ariel_Sharon")
FIRST_PHOTOS = 6


def copy_photos(shared_data: Path, tree: Path, start: int, stop: int) -> None:
    for identity in IDENTITIES:
        (tree / identity).mkdir(parents=True, exist_ok=True)
        for photo in sorted((shared_data / "faces" / identity).iterdir())[start:stop]:
            shutil.copy(photo, tree / identity / photo.name)


@pytest.fixture
def people(tmp_path, shared_data):
    """An engine over a scanned tree: five identities with six photos each."""
    tree = tmp_path / "tree"
    copy_photos(shared_data, tree, 0, FIRST_PHOTOS)
    engine = Engine(Settings(data_dir=tmp_path / "state", model_mirror=SHARED_MODELS))
    engine.scan(tree)
    return engine, tree


def faces_by_identity(engine: Engine) -> dict[str, list[tuple[int, int | None]]]:
    """identity → [(face id, person id)] from the folder each photo came from."""
    with engine.sessions() as session:
        rows = session.execute(
            select(schema.File.path, schema.Face.id, schema.Face.person_id)
            .join(schema.Face)
            .order_by(schema.Face.id)
        ).all()
    result: dict[str, list[tuple[int, int | None]]] = {}
    for path, face_id, person_id in rows:
        result.setdefault(path.split("/")[0], []).append((face_id, person_id))
    return result


def person_of(engine: Engine, identity: str) -> int:
    """The person holding most of an identity's faces."""
    counts = Counter(p for _, p in faces_by_identity(engine)[identity] if p is not None)
    return counts.most_common(1)[0][0]


def face_person(engine: Engine, face_id: int) -> int | None:
    with engine.sessions() as session:
        return session.get(schema.Face, face_id).person_id


def both_groupings(engine: Engine, tree: Path, shared_data: Path):
    """A full re-grouping, then new photos of every identity and an incremental update."""
    engine.regroup(full=True)
    yield "full re-grouping"
    copy_photos(shared_data, tree, FIRST_PHOTOS, FIRST_PHOTOS + 3)
    engine.scan(tree, wait=False)
    engine.worker(obey_schedule=False).run(until=lambda: not work_left(engine.sessions))
    engine.regroup(full=False)
    yield "incremental update"


def test_first_grouping_gives_one_person_per_identity(people):
    engine, _ = people
    by_identity = faces_by_identity(engine)
    persons = {identity: {p for _, p in faces} for identity, faces in by_identity.items()}
    assert all(len(p) == 1 and None not in p for p in persons.values()), persons
    assert len({next(iter(p)) for p in persons.values()}) == len(IDENTITIES)


def test_a_named_person_keeps_its_name_and_faces(people, shared_data):
    engine, tree = people
    putin = person_of(engine, "Vladimir_Putin")
    faces_before = {f for f, p in faces_by_identity(engine)["Vladimir_Putin"] if p == putin}
    with engine.sessions.begin() as session:
        operations.rename(session, putin, "  Vladimir  ")
    for when in both_groupings(engine, tree, shared_data):
        with engine.sessions() as session:
            assert session.get(schema.Person, putin).name == "Vladimir", when
        now = {f for f, p in faces_by_identity(engine)["Vladimir_Putin"] if p == putin}
        assert faces_before <= now, when
    assert len(now) == FIRST_PHOTOS + 3  # the new photos joined the named person


def test_a_removed_face_never_returns_to_its_person(people, shared_data):
    engine, tree = people
    ridge = person_of(engine, "Tom_Ridge")
    removed = faces_by_identity(engine)["Tom_Ridge"][0][0]
    with engine.sessions.begin() as session:
        operations.remove_face(session, removed)
    for when in both_groupings(engine, tree, shared_data):
        assert face_person(engine, removed) != ridge, when
        assert person_of(engine, "Tom_Ridge") == ridge, when


def test_merged_persons_stay_merged(people, shared_data):
    engine, tree = people
    sharon, davenport = person_of(engine, "Ariel_Sharon"), person_of(engine, "Lindsay_Davenport")
    with engine.sessions.begin() as session:
        operations.merge(session, sharon, [davenport])
    for when in both_groupings(engine, tree, shared_data):
        merged = faces_by_identity(engine)
        old_faces = [
            face
            for identity in ("Ariel_Sharon", "Lindsay_Davenport")
            for face, _ in merged[identity][:FIRST_PHOTOS]
        ]
        with engine.sessions() as session:
            assert session.get(schema.Person, davenport) is None
            persons = {session.get(schema.Face, f).person_id for f in old_faces}
        assert persons == {sharon}, when


def test_a_moved_face_stays_where_the_user_put_it(people, shared_data):
    engine, tree = people
    berlusconi = person_of(engine, "Silvio_Berlusconi")
    moved = faces_by_identity(engine)["Tom_Ridge"][1][0]
    with engine.sessions.begin() as session:
        operations.move_face(session, moved, berlusconi)
        alone = operations.move_face(session, faces_by_identity(engine)["Tom_Ridge"][2][0], None)
    lonely = faces_by_identity(engine)["Tom_Ridge"][2][0]
    for when in both_groupings(engine, tree, shared_data):
        assert face_person(engine, moved) == berlusconi, when
        assert face_person(engine, lonely) == alone, when


def test_a_hidden_person_stays_hidden_and_out_of_the_listing(people, shared_data):
    engine, tree = people
    putin = person_of(engine, "Vladimir_Putin")
    with engine.sessions.begin() as session:
        operations.set_hidden(session, putin)
    for when in both_groupings(engine, tree, shared_data):
        with engine.sessions() as session:
            visible = {p.id for p in operations.list_persons(session)}
            everyone = {p.id for p in operations.list_persons(session, include_hidden=True)}
        assert putin not in visible and putin in everyone, when


def test_a_split_identity_is_suggested_until_marked_distinct(people):
    engine, _ = people
    putin = person_of(engine, "Vladimir_Putin")
    half = [f for f, _ in faces_by_identity(engine)["Vladimir_Putin"]][: FIRST_PHOTOS // 2]
    with engine.sessions.begin() as session:
        split = operations.move_face(session, half[0], None)
        for face_id in half[1:]:
            operations.move_face(session, face_id, split)
    with engine.sessions() as session:
        suggestions = operations.suggest_merges(session, face_distances(engine.settings).suggestion)
    pairs = {(s.person_id, s.other_id) for s in suggestions}
    assert tuple(sorted((putin, split))) in pairs
    assert len(pairs) == 1, "persons of different identities were suggested"
    with engine.sessions.begin() as session:
        operations.mark_distinct(session, split, putin)
    with engine.sessions() as session:
        assert operations.suggest_merges(session, face_distances(engine.settings).suggestion) == []


def test_listing_puts_named_persons_first_with_counts_and_a_cover(people):
    engine, _ = people
    ridge = person_of(engine, "Tom_Ridge")
    with engine.sessions.begin() as session:
        operations.rename(session, ridge, "Tom")
    with engine.sessions() as session:
        listing = operations.list_persons(session)
        assert listing[0].id == ridge and listing[0].faces == listing[0].photos == FIRST_PHOTOS
        cover = session.get(schema.Face, listing[0].cover_face_id)
        assert cover.person_id == ridge
    with pytest.raises(operations.NotFound), engine.sessions.begin() as session:
        operations.rename(session, 10_000, "nobody")


def test_face_thumbnails_are_square_crops_made_once(people):
    engine, _ = people
    face_id = faces_by_identity(engine)["Ariel_Sharon"][0][0]
    with engine.sessions() as session:
        path = thumbnails.face_thumbnail(session, face_id, engine.settings.cache_dir, local_file, size=128)
        made = path.stat().st_mtime_ns
        again = thumbnails.face_thumbnail(session, face_id, engine.settings.cache_dir, local_file, size=128)
    assert again == path and path.stat().st_mtime_ns == made
    with Image.open(path) as image:
        assert image.size == (128, 128) and image.format == "JPEG"
    with engine.sessions() as session, pytest.raises(thumbnails.FaceMissing):
        thumbnails.face_thumbnail(session, 99_999, engine.settings.cache_dir, local_file)


@pytest.fixture
def two_owners(tmp_path, shared_data):
    """alice's and bob's files hold photos of the same five identities."""
    engine = Engine(Settings(data_dir=tmp_path / "state", model_mirror=SHARED_MODELS))
    for user, (start, stop) in (("alice", (0, 4)), ("bob", (4, 8))):
        tree = tmp_path / user
        copy_photos(shared_data, tree, start, stop)
        engine.scan(tree)
        with engine.sessions.begin() as session:  # what a crawl of user's files records
            root = session.scalars(select(schema.Root).where(schema.Root.source == "local")).one()
            root.source, root.location = "nextcloud", user
    engine.regroup(full=True)
    return engine


def owners_of_persons(engine: Engine) -> dict[int, set[str | None]]:
    """person id → the owners of its faces' files."""
    with engine.sessions() as session:
        rows = session.execute(
            select(schema.Face.person_id, schema.Root.location)
            .join(schema.File, schema.File.id == schema.Face.file_id)
            .join(schema.Root)
            .where(schema.Face.person_id.is_not(None))
        ).all()
    result: dict[int, set[str | None]] = {}
    for person_id, owner in rows:
        result.setdefault(person_id, set()).add(owner)
    return result


def test_faces_of_different_owners_never_share_a_person(two_owners, shared_data):
    engine = two_owners
    for when in ("full re-grouping", "incremental update"):
        if when == "incremental update":
            with engine.sessions.begin() as session:
                session.execute(update(schema.Face).values(person_id=None))
                session.execute(delete(schema.Person))
            engine.regroup(full=False)
        owners = owners_of_persons(engine)
        assert all(len(o) == 1 for o in owners.values()), when
        with engine.sessions() as session:
            for person_id, (owner,) in owners.items():
                assert session.get(schema.Person, person_id).owner == owner, when
        per_owner = Counter(next(iter(o)) for o in owners.values())
        assert per_owner == {"alice": len(IDENTITIES), "bob": len(IDENTITIES)}, when


def test_operations_refuse_another_owners_persons_and_faces(two_owners):
    engine = two_owners
    with engine.sessions() as session:
        alice = operations.list_persons(session, owner="alice")
        bob = operations.list_persons(session, owner="bob")
        everyone = operations.list_persons(session)
    assert {p.id for p in alice} | {p.id for p in bob} == {p.id for p in everyone}
    assert not {p.id for p in alice} & {p.id for p in bob}
    with engine.sessions() as session:
        alice_face = session.scalar(select(schema.Face.id).where(schema.Face.person_id == alice[0].id))
    attempts = [
        lambda s: operations.rename(s, alice[0].id, "x", owner="bob"),
        lambda s: operations.set_hidden(s, alice[0].id, owner="bob"),
        lambda s: operations.merge(s, bob[0].id, [alice[0].id], owner="bob"),
        lambda s: operations.merge(s, bob[0].id, [alice[0].id]),  # across owners: never
        lambda s: operations.move_face(s, alice_face, bob[0].id, owner="bob"),
        lambda s: operations.move_face(s, alice_face, bob[0].id),  # into another's person
        lambda s: operations.remove_face(s, alice_face, owner="bob"),
        lambda s: operations.mark_distinct(s, bob[0].id, alice[0].id, owner="bob"),
        lambda s: operations.person_faces(
            s, alice[0].id, QualityGate.from_settings(engine.settings), owner="bob"
        ),
    ]
    for attempt in attempts:
        with pytest.raises(operations.NotFound), engine.sessions.begin() as session:
            attempt(session)
    with engine.sessions() as session:
        assert operations.list_persons(session, owner="alice") == alice
        moved_alone = operations.suggest_merges(session, 10.0, owner="bob")
        assert all(s.person_id in {p.id for p in bob} for s in moved_alone)
        # Even with no owner given, suggestions never pair two owners' persons.
        pairs = operations.suggest_merges(session, 10.0, limit=10_000)
    owner_of = {p.id: "alice" for p in alice} | {p.id: "bob" for p in bob}
    assert pairs and all(owner_of[s.person_id] == owner_of[s.other_id] for s in pairs)
    with engine.sessions.begin() as session:
        new = operations.move_face(session, alice_face, None, owner="alice")
        assert session.get(schema.Person, new).owner == "alice"
