"""A store of dlib embeddings, as the code before SFace left it, migrated by the next start:
every face embedded again once by SFace from its stored box and landmarks, every user
decision intact, persons formed again."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from conftest import SHARED_MODELS
from sqlalchemy import func, select, text

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.people import operations
from ex_app.store import schema
from ex_app.store.database import MIGRATIONS_DIR, create_database_engine
from ex_app.store.schema import TaskStatus
from ex_app.analyzers.registry import EMBEDDINGS, FACES
from test_people import copy_photos

DLIB_ERA_FACES_VERSION = "ebafce4e+c4b1e980+428471a7"  # YuNet + dlib landmarks + dlib ResNet


def downgrade_to_0004(url: str) -> None:
    """Take the store back to the schema the code before SFace used."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_database_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    engine.dispose()


def snapshot(engine: Engine) -> dict:
    with engine.sessions() as session:
        faces = session.execute(
            select(schema.Face.id, schema.Face.person_id, schema.Face.embedding, schema.File.path)
            .join(schema.File)
            .order_by(schema.Face.id)
        ).all()
        persons = session.execute(
            select(schema.Person.id, schema.Person.name, schema.Person.hidden,
                   schema.Person.confirmed)
        ).all()
    return {
        "faces": {f.id: (f.person_id, f.path, f.path.split("/")[0]) for f in faces},
        "persons": {p.id: (p.name, p.hidden, p.confirmed) for p in persons},
    }


def run_until_done(engine: Engine) -> None:
    """A worker of this engine (it plans the re-embedding at its start) until nothing is
    pending, then a grouping."""

    def settled() -> bool:
        with engine.sessions() as session:
            return not session.scalar(
                select(func.count(schema.Task.id)).where(schema.Task.status == TaskStatus.PENDING)
            )

    engine.worker(obey_schedule=False).run(until=settled)


@pytest.fixture
def dlib_store(tmp_path, shared_data):
    """Five identities × five photos scanned with dlib, with decisions, at schema 0004."""
    tree = tmp_path / "tree"
    copy_photos(shared_data, tree, 0, 5)
    data = tmp_path / "state"
    old = Engine(Settings(data_dir=data, model_mirror=SHARED_MODELS, face_embedder="dlib"))
    old.scan(tree)
    before = snapshot(old)
    by_identity: dict[str, Counter] = {}
    for _, (person, _, identity) in before["faces"].items():
        by_identity.setdefault(identity, Counter())[person] += 1
    person = {identity: counts.most_common(1)[0][0] for identity, counts in by_identity.items()}
    faces_of = {identity: [f for f, (p, _, i) in before["faces"].items() if i == identity]
                for identity in by_identity}
    putin, ridge, berlusconi, davenport, sharon = sorted(person, key=list(person).index)[:5]
    moved = faces_of[sharon][0]
    removed = faces_of[sharon][1]
    with old.sessions.begin() as session:
        operations.rename(session, person[putin], "Vladimir")
        operations.merge(session, person[ridge], [person[berlusconi]])  # the user's own merge
        operations.move_face(session, moved, person[putin])
        operations.remove_face(session, removed)
        operations.set_hidden(session, person[sharon])
        operations.mark_distinct(session, person[putin], person[sharon])
    decided = snapshot(old)
    old.sessions.kw["bind"].dispose()
    downgrade_to_0004(old.settings.resolved_database_url)
    with create_database_engine(old.settings.resolved_database_url).connect() as connection:
        versions = set(connection.execute(
            text("SELECT model_version FROM tasks WHERE analyzer = 'faces'")).scalars())
    assert versions == {DLIB_ERA_FACES_VERSION}  # as the code before SFace wrote it
    return tmp_path, tree, decided, dict(person=person, moved=moved, removed=removed,
                                         names=(putin, ridge, berlusconi, davenport, sharon))


def test_next_start_embeds_every_face_again_once_and_keeps_every_decision(dlib_store):
    tmp_path, tree, decided, d = dlib_store
    putin, ridge, berlusconi, davenport, sharon = d["names"]
    person = d["person"]
    engine = Engine(Settings(data_dir=tmp_path / "state", model_mirror=SHARED_MODELS))
    assert engine.settings.faces.embedder == "sface"

    # Planned at the start, before any of it ran: persons stay as they are meanwhile.
    planned = engine.plan_reembedding()
    assert planned == len({path for _, path, _ in decided["faces"].values()})
    engine.regroup()
    assert snapshot(engine)["persons"] == decided["persons"]
    assert {f: v[0] for f, v in snapshot(engine)["faces"].items()} == {
        f: v[0] for f, v in decided["faces"].items()}

    run_until_done(engine)
    engine.regroup()
    after = snapshot(engine)

    with engine.sessions() as session:
        faces = session.scalars(select(schema.Face).order_by(schema.Face.id)).all()
        tasks = session.scalars(select(schema.Task)).all()
        # every face kept its id, and was embedded again by SFace, once
        assert [f.id for f in faces] == sorted(decided["faces"])
        assert {f.embedder for f in faces} == {"sface"}
        for face in faces:
            vector = np.frombuffer(face.embedding, np.float32)
            assert abs(np.linalg.norm(vector) - 1) < 1e-4  # SFace's, not dlib's (norm 1.3-1.7)
        embeddings = [t for t in tasks if t.analyzer == EMBEDDINGS]
        files_with_faces = {f.file_id for f in faces}
        assert {t.file_id for t in embeddings} == files_with_faces
        assert all(t.status == TaskStatus.DONE and t.attempts == 1 for t in embeddings)
        # the photos were not detected again
        assert all(t.attempts == 1 for t in tasks if t.analyzer == FACES)
        # persons formed again on SFace's vectors
        persons = session.scalars(select(schema.Person)).all()
        assert all(p.embedder == "sface" for p in persons if p.centroid is not None)
        assert session.get(schema.DistinctPersons, tuple(sorted((person[putin], person[sharon]))))
        rejected = session.scalars(select(schema.FaceRejection.person_id)
                                   .where(schema.FaceRejection.face_id == d["removed"])).all()
        assert person[sharon] in rejected

    # decisions: names, the merge, the moved and the removed face, hidden, "not the same"
    assert after["persons"][person[putin]] == ("Vladimir", False, True)
    assert after["persons"][person[sharon]][1] is True  # still hidden
    assert after["faces"][d["moved"]][0] == person[putin]
    assert after["faces"][d["removed"]][0] != person[sharon]
    merged = person[ridge]
    for face, (was, _, identity) in decided["faces"].items():
        if was in (merged, person[putin], person[sharon]):
            assert after["faces"][face][0] == was, (face, identity)  # confirmed: kept whole
    # the unconfirmed person (Davenport's) is formed again, pure
    assert decided["persons"][person[davenport]][2] is False
    rest = {after["faces"][f][0] for f, (_, _, i) in decided["faces"].items() if i == davenport}
    rest.discard(None)
    assert len(rest) == 1
    holders = {i for f, (p, _, i) in after["faces"].items() if p in rest}
    assert holders == {davenport}

    # a later start has nothing left to embed again
    assert engine.plan_reembedding() == 0
