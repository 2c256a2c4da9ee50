"""The outbox (ex_app.store.outbox): marks are written with what made them due, drained once
whoever drains, kept when the sink fails, and made only for files whose tags change."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from conftest import SHARED_DATA, SHARED_MODELS
from nc_py_api import AsyncNextcloudApp
from sqlalchemy import delete, select, update
from test_queue import postgres  # noqa: F401 (the fixture)

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.people import operations
from ex_app.sinks import nextcloud_notifications
from ex_app.sinks.nextcloud_tags import NextcloudTagSink
from ex_app.store import outbox, schema
from ex_app.store.database import open_database
from ex_app.store.schema import TaskStatus
from ex_app.analyzers.results import FileAnalysis
from ex_app.store.results import record_analysis

WAIT_SECONDS = 60


def _nextcloud_file(session, user: str, path: str, remote_id: int | None,
                    analyzer: str = "objects") -> int:
    """A stored file of user's (remote_id None: a local file) with a pending task."""
    root = session.scalar(select(schema.Root).where(schema.Root.location == user))
    if root is None:
        root = schema.Root(source="nextcloud" if remote_id else "local", location=user)
        session.add(root)
        session.flush()
    row = schema.File(root_id=root.id, path=path, kind="image", size=1, mtime_ns=0,
                      content_hash="etag:x", remote_id=remote_id)
    session.add(row)
    session.flush()
    session.add(schema.Task(file_id=row.id, analyzer=analyzer))
    return row.id


def _marks(sessions, sink: str = outbox.TAGS) -> list[schema.SinkOutbox]:
    with sessions() as session:
        return session.scalars(
            select(schema.SinkOutbox).where(schema.SinkOutbox.sink == sink)
        ).all()


def test_marks_are_written_in_the_transaction_of_the_results(tmp_path):
    engine = Engine(Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS))
    sessions = engine.sessions
    with sessions.begin() as session:
        shared = _nextcloud_file(session, "alice", "cat.jpg", remote_id=501)
        local = _nextcloud_file(session, "/photos", "cat.jpg", remote_id=None)
    found = FileAnalysis(width=10, height=10, tags={"objects": ["Cat"]})

    with pytest.raises(RuntimeError), sessions.begin() as session:
        record_analysis(session, shared, ("objects",), found, engine.pipeline)
        assert session.scalar(select(schema.SinkOutbox.file_id)) == shared  # seen inside
        raise RuntimeError("the transaction fails after the results were written")
    assert _marks(sessions) == []
    with sessions() as session:  # nor the results
        assert session.scalar(select(schema.Task.status).where(schema.Task.file_id == shared)) == "pending"

    with sessions.begin() as session:
        record_analysis(session, shared, ("objects",), found, engine.pipeline)
        record_analysis(session, local, ("objects",), found, engine.pipeline)
    assert [m.file_id for m in _marks(sessions)] == [shared]  # a local file has no sink
    with sessions() as session:
        assert session.scalar(select(schema.Task.status).where(schema.Task.file_id == shared)) == "done"

    with sessions.begin() as session:  # a file deleted: its marks go with it
        session.execute(delete(schema.File).where(schema.File.id == shared))
    assert _marks(sessions) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_drainers_racing_take_each_mark_exactly_once(backend, tmp_path, request):
    url = (request.getfixturevalue("postgres")() if backend == "postgresql"
           else f"sqlite:///{tmp_path / 'store.db'}")
    sessions = open_database(url)
    with sessions.begin() as session:
        files = [_nextcloud_file(session, "alice", f"p{i}.jpg", remote_id=1000 + i)
                 for i in range(120)]
        outbox.mark(session, outbox.TAGS, files)
        outbox.mark(session, outbox.TAGS, files[:30])  # marked twice: two marks
    expected = {m.id for m in _marks(sessions)}
    assert len(expected) == 150

    # Each round, both drainers take a batch and hold it until both have taken theirs.
    both_took = threading.Barrier(2, timeout=WAIT_SECONDS)
    both_done = threading.Barrier(2, timeout=WAIT_SECONDS)
    taken: dict[str, list[list[int]]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def drainer(name: str, own) -> None:
        try:
            while True:
                with own.begin() as session:
                    marks = outbox.take(session, outbox.TAGS, limit=7)
                both_took.wait()
                taken[name].append([m.id for m in marks])
                with own.begin() as session:
                    outbox.done(session, marks)
                both_done.wait()
                if not taken["a"][-1] and not taken["b"][-1]:
                    return
        except BaseException as error:  # noqa: BLE001 (reported by the test)
            errors.append(error)
            both_took.abort()
            both_done.abort()

    threads = [  # each with its own connections, as on another machine
        threading.Thread(target=drainer, args=(name, open_database(url))) for name in taken
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert not errors, errors
    for round_a, round_b in zip(taken["a"], taken["b"], strict=True):
        assert not set(round_a) & set(round_b)  # held at once, never the same mark
    drained = Counter(i for batches in taken.values() for batch in batches for i in batch)
    assert set(drained) == expected and set(drained.values()) == {1}
    assert sum(map(len, taken["a"])) and sum(map(len, taken["b"]))  # both did some
    assert _marks(sessions) == []


@pytest.fixture
def store(nextcloud, tmp_path, monkeypatch):
    """A store holding alice's Trip/cat.jpg of the stand-in, tagged Cat by objects."""
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    sessions = open_database(f"sqlite:///{tmp_path / 'store.db'}")
    node = nextcloud.state.put_file("alice", "Trip/cat.jpg", b"not analyzed here")
    with sessions.begin() as session:
        file_id = _nextcloud_file(session, "alice", "Trip/cat.jpg", remote_id=node.fileid)
        session.add(schema.FileTag(file_id=file_id, analyzer="objects", tag="Cat"))
    return sessions, file_id, node


def _drain_tags(sink: NextcloudTagSink) -> int:
    return asyncio.run(sink.drain(lambda user: AsyncNextcloudApp(user=user), False, 0.2))


def test_a_failing_tag_call_keeps_the_mark_for_a_later_drain(nextcloud, store):
    sessions, file_id, node = store
    with sessions.begin() as session:
        outbox.mark(session, outbox.TAGS, [file_id])
    sink = NextcloudTagSink(sessions)
    nextcloud.state.fail_for(WAIT_SECONDS, status=503, path_prefix="/remote.php/dav")
    assert _drain_tags(sink) == 0
    assert nextcloud.state.faults.served > 0
    [held] = _marks(sessions)
    assert held.attempts == 1 and held.drainer is None
    assert held.lease_until.replace(tzinfo=UTC) > datetime.now(UTC)  # waits out the delay
    assert nextcloud.state.tag_names_of(node.fileid) == set()

    nextcloud.state.fail_for(0)  # Nextcloud is back
    deadline = time.monotonic() + WAIT_SECONDS
    while not _drain_tags(sink):
        assert time.monotonic() < deadline, _marks(sessions)
        time.sleep(0.05)
    assert nextcloud.state.tag_names_of(node.fileid) == {"Cat"}
    assert _marks(sessions) == []
    asked = len(nextcloud.state.requests)
    assert _drain_tags(sink) == 0 and len(nextcloud.state.requests) == asked  # nothing left


def test_a_request_is_notified_once_when_its_files_are_done(nextcloud, store):
    sessions, file_id, _node = store
    with sessions.begin() as session:
        other = _nextcloud_file(session, "alice", "Trip/dog.jpg", remote_id=90001)
        outbox.mark_request(session, "alice", [file_id, other])

    def drain() -> int:
        return asyncio.run(nextcloud_notifications.drain(sessions, 0.2))

    assert drain() == 0  # both files have work left
    with sessions.begin() as session:
        session.execute(update(schema.Task).values(status=TaskStatus.DONE))
    nextcloud.state.fail_for(WAIT_SECONDS, status=503, path_prefix="/ocs")
    assert drain() == 0 and len(_marks(sessions, outbox.NOTIFICATIONS)) == 2  # kept
    nextcloud.state.fail_for(0)
    deadline = time.monotonic() + WAIT_SECONDS
    while not drain():
        assert time.monotonic() < deadline, _marks(sessions, outbox.NOTIFICATIONS)
        time.sleep(0.05)
    assert drain() == 0
    [note] = [n for n in nextcloud.state.notifications if n["user"] == "alice"]
    assert note["subject"] == "Recognize analyzed 2 files" and "Cat (1)" in note["message"]
    assert _marks(sessions, outbox.NOTIFICATIONS) == []


def _files_of(engine: Engine, folder: str) -> set[int]:
    with engine.sessions() as session:
        return set(session.scalars(select(schema.File.id).where(schema.File.path.startswith(folder))))


def _person_of(engine: Engine, folder: str) -> int:
    with engine.sessions() as session:
        [(person, _count)] = Counter(session.scalars(
            select(schema.Face.person_id).join(schema.File).where(schema.File.path.startswith(folder))
        )).most_common(1)
    return person


def _take_marks(engine: Engine) -> set[int]:
    """The files marked for the tag sink; the marks are cleared."""
    with engine.sessions.begin() as session:
        marked = set(session.scalars(select(schema.SinkOutbox.file_id)))
        session.execute(delete(schema.SinkOutbox))
    return marked


def test_regroups_and_corrections_mark_only_files_whose_person_tags_changed(tmp_path):
    tree = tmp_path / "tree"
    for identity in ("Abdullah_Gul", "Tom_Ridge"):
        (tree / identity).mkdir(parents=True)
        for photo in sorted((SHARED_DATA / "faces" / identity).iterdir())[:3]:
            shutil.copy(photo, tree / identity / photo.name)
    engine = Engine(Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS,
                             objects_enabled=False, places_enabled=False))
    engine.scan(tree)
    with engine.sessions.begin() as session:  # as if they were Nextcloud's files
        session.execute(update(schema.File).values(remote_id=schema.File.id + 7000))
    _take_marks(engine)
    gul, ridge = _person_of(engine, "Abdullah_Gul/"), _person_of(engine, "Tom_Ridge/")
    assert gul != ridge

    def correct(action) -> set[int]:
        with engine.sessions.begin() as session, outbox.person_tag_changes(session):
            action(session)
        return _take_marks(engine)

    assert correct(lambda s: operations.rename(s, gul, "Gul")) == _files_of(engine, "Abdullah_Gul/")
    assert correct(lambda s: operations.rename(s, ridge, None)) == set()  # no name, as before
    engine.regroup(full=True)
    assert _take_marks(engine) == set()  # the same persons: nothing to tag
    with engine.sessions() as session:
        moved, moved_file = session.execute(
            select(schema.Face.id, schema.Face.file_id).where(schema.Face.person_id == ridge)
            .order_by(schema.Face.id)
        ).first()
    assert correct(lambda s: operations.move_face(s, moved, gul)) == {moved_file}
    assert correct(lambda s: operations.set_hidden(s, ridge)) == set()  # never named

    # A face waiting to be grouped joins the named person by a regroup: only its photo.
    with engine.sessions.begin() as session:
        face, photo = session.execute(
            select(schema.Face.id, schema.Face.file_id).join(schema.File)
            .where(schema.Face.person_id == gul, schema.Face.pinned.is_(False),
                   schema.File.path.startswith("Abdullah_Gul/"))
            .order_by(schema.Face.id)
        ).first()
        session.execute(update(schema.Face).where(schema.Face.id == face).values(person_id=None))
    engine.regroup()
    with engine.sessions() as session:
        assert session.get(schema.Face, face).person_id == gul
    assert _take_marks(engine) == {photo}
