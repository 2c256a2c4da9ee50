"""The crawl's steady state against the stand-in: a crawl that finds nothing new writes
nothing, and changes are picked up; users' choices are read again only every few minutes.

Statements are counted with a SQLAlchemy event listener on the store's engine.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import contextmanager

import pytest
from conftest import SHARED_DATA, SHARED_MODELS
from sqlalchemy import event, select

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.sources import sync as syncing
from ex_app.sources.nextcloud import NextcloudSource, NextcloudUsers
from ex_app.sources.sync import sync
from ex_app.service.recognize import RecognizeService
from ex_app.store import schema
from ex_app.web import personal_settings
from ex_app.web.admin_settings import settings_form

FACE = (SHARED_DATA / "faces" / "Al_Gore" / "lfw_Al_Gore_0004.jpg").read_bytes()
CAT = (SHARED_DATA / "images" / "n02123394_Persian_cat.JPEG").read_bytes()
WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def engine(nextcloud, tmp_path, monkeypatch):
    """alice has 12 photos in three folders and shares one with bob, who has 3 of his own;
    an engine on a fresh store, with AppAPI's environment to reach the stand-in."""
    for name, value in nextcloud.app_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(syncing, "CHUNK", 5)  # several chunks for few files
    state = nextcloud.state
    for index in range(12):
        state.put_file("alice", f"Album{index % 3}/p{index:02}.jpg", FACE if index % 2 else CAT)
    for index in range(3):
        state.put_file("bob", f"Mine/b{index}.jpg", CAT)
    state.share("alice", "Album0", "bob")
    return Engine(Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS))


@contextmanager
def statements(engine: Engine):
    """Counts of the SQL statements run meanwhile, by their first word."""
    counts: Counter[str] = Counter()
    bind = engine.sessions.kw["bind"]

    def count(_conn, _cursor, statement, _parameters, _context, executemany) -> None:
        counts[statement.lstrip().split(None, 1)[0].upper()] += 1

    event.listen(bind, "before_cursor_execute", count)
    try:
        yield counts
    finally:
        event.remove(bind, "before_cursor_execute", count)


def crawl(engine: Engine, users=("alice", "bob")):
    return asyncio.run(
        sync(engine.sessions, NextcloudUsers(NextcloudSource(1 << 24), users), engine.pipeline)
    )


def stored(engine: Engine) -> dict[str, schema.File]:
    with engine.sessions() as session:
        return {row.path: row for row in session.scalars(select(schema.File))}


def test_a_crawl_that_finds_nothing_new_writes_nothing(engine):
    first = crawl(engine)
    assert (first.added, first.unchanged) == (15, 0)
    with statements(engine) as counts:
        again = crawl(engine)
    assert (again.added, again.changed, again.removed, again.unchanged) == (0, 0, 0, 15)
    assert not any(counts[word] for word in WRITES), counts
    # One lookup per chunk of 5 (files, their tasks), and the sweep's read of the stored ids.
    assert counts["SELECT"] <= 15 // 5 + 2, counts


def test_a_changed_etag_is_picked_up_and_only_its_file_is_written(engine, nextcloud):
    crawl(engine)
    before = stored(engine)["Album1/p01.jpg"]
    with engine.sessions.begin() as session:  # a result from the old content
        session.add(schema.FileTag(file_id=before.id, analyzer="objects", tag="Animal"))
        session.add(schema.FileTag(file_id=stored(engine)["Album1/p04.jpg"].id,
                                   analyzer="objects", tag="Animal"))
    node = nextcloud.state.put_file("alice", "Album1/p01.jpg", CAT)  # new content, new etag
    with statements(engine) as counts:
        report = crawl(engine)
    assert (report.changed, report.unchanged) == (1, 14)
    after = stored(engine)["Album1/p01.jpg"]
    assert after.id == before.id and node.etag in after.content_hash
    with engine.sessions() as session:
        tags = set(session.scalars(select(schema.FileTag.file_id)))
        pending = session.scalars(select(schema.Task.status).where(schema.Task.file_id == after.id)).all()
    assert tags == {stored(engine)["Album1/p04.jpg"].id}  # the unchanged file keeps its result
    assert pending and set(pending) == {"pending"}
    # The file's row, its results and tasks (4 tables), its new tasks: a handful of writes.
    assert 1 <= sum(counts[word] for word in WRITES) <= 8, counts


def test_a_deleted_file_is_forgotten_and_a_new_one_at_its_path_recorded(engine, nextcloud):
    state = nextcloud.state
    crawl(engine)
    with engine.sessions.begin() as session:
        gone_id = stored(engine)["Album2/p02.jpg"].remote_id
        session.add(schema.SinkTag(remote_id=gone_id, tag="Animal"))
    state.delete_node(state.own_node("alice", "Album2/p02.jpg"))
    replaced = stored(engine)["Album2/p05.jpg"]
    state.delete_node(state.own_node("alice", "Album2/p05.jpg"))
    again = state.put_file("alice", "Album2/p05.jpg", CAT)  # a new file id at a known path
    report = crawl(engine)
    assert (report.removed, report.changed, report.added) == (1, 1, 0)
    files = stored(engine)
    assert "Album2/p02.jpg" not in files
    assert files["Album2/p05.jpg"].id == replaced.id and files["Album2/p05.jpg"].remote_id == again.fileid
    with engine.sessions() as session:
        assert session.scalar(select(schema.SinkTag).where(schema.SinkTag.remote_id == gone_id)) is None


def test_a_user_whose_walk_failed_keeps_their_files(engine, nextcloud):
    crawl(engine)
    nextcloud.state.fail_next(1, 503, "/remote.php/dav/files/bob")
    report = crawl(engine)
    assert report.removed == 0 and {"Mine/b0.jpg", "Mine/b1.jpg", "Mine/b2.jpg"} <= set(stored(engine))


def preference_reads(state) -> int:
    return sum(1 for method, path, _user in state.requests if path.endswith("/preference/get-values"))


def test_users_choices_are_read_every_interval_not_every_cycle(engine, nextcloud):
    state = nextcloud.state
    settings = Settings(data_dir=engine.settings.data_dir, model_mirror=SHARED_MODELS,
                        user_choice_refresh_seconds=2)
    engine = Engine(settings)
    service = RecognizeService(settings, settings_form)
    users = ["admin", "alice", "bob"]

    async def scenario() -> None:
        async def active() -> list[str]:
            return await service.active_users(engine, users)

        assert await active() == users and preference_reads(state) == 3
        for _ in range(5):  # cycles within the interval ask Nextcloud nothing
            assert await active() == users
        assert preference_reads(state) == 3

        # bob opts out in his personal settings (Nextcloud does not tell the ExApp): seen
        # once the interval has passed, with one read per user.
        state.preferences[("bob", personal_settings.ANALYZE)] = ("0", 0)
        changed = time.monotonic()
        deadline = changed + 30
        while "bob" in await active():
            assert time.monotonic() < deadline, "bob's choice was never read again"
            await asyncio.sleep(0.1)
        assert time.monotonic() - changed >= 1.5  # not before the interval
        assert preference_reads(state) == 6

        # A choice saved on the People page is read at the next cycle, for that user only.
        state.preferences[("bob", personal_settings.ANALYZE)] = ("1", 0)
        service.choice_changed("bob")
        assert await active() == users and preference_reads(state) == 7

    asyncio.run(scenario())


def test_the_big_instance_stand_in_hides_no_change(tmp_path, monkeypatch):
    """The bench's stand-in (indexed, seeded, repeated PROPFINDs answered from memory) shows
    the crawl every file and every change, as the plain one does."""
    from nextcloud_standin.auth import new_secret
    from nextcloud_standin.bulk import IndexedState, RepeatedPropfinds, seed_instance
    from nextcloud_standin.fixture import APP_ID, APP_VERSION, Nextcloud
    from nextcloud_standin.proxy import AppApiProxy
    from nextcloud_standin.releases import DEFAULT, RELEASES
    from nextcloud_standin.server import BackgroundServer, build_app

    state = IndexedState(APP_ID, APP_VERSION, new_secret(), RELEASES[DEFAULT].app_api, RELEASES[DEFAULT].server)
    sources = sorted((SHARED_DATA / "images").glob("*.JPEG"))[:7]
    seeded = seed_instance(state, sources, files=300, users=3, per_folder=20)
    assert seeded.hidden == 20 and seeded.shares == 3
    kept = RepeatedPropfinds(build_app(state), state)
    server = BackgroundServer(kept)
    server.start()
    try:
        for name, value in Nextcloud(server.url, state, tmp_path, AppApiProxy(state)).app_env().items():
            monkeypatch.setenv(name, value)
        engine = Engine(Settings(data_dir=tmp_path / "data", model_mirror=SHARED_MODELS))
        users = seeded.users
        assert crawl(engine, users).added == 280  # the 20 below .nomedia are left out
        hits = kept.hits
        with statements(engine) as counts:
            assert crawl(engine, users).unchanged == 280
        assert kept.hits > hits and not any(counts[word] for word in WRITES)
        node = next(n for n in state.nodes.values() if n.path.endswith(".JPEG") and n.owner == "u02")
        state.put_file("u02", node.path, CAT)
        state.delete_node(next(n for n in state.nodes.values()
                               if n.owner == "u03" and n.path.endswith(".JPEG")))
        report = crawl(engine, users)
        assert (report.changed, report.removed, report.unchanged) == (1, 1, 278)
        with engine.sessions() as session:
            size = session.scalar(select(schema.File.size).where(schema.File.remote_id == node.fileid))
        assert size == len(CAT)
    finally:
        server.stop()
