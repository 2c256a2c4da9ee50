"""Scanning Nextcloud: the users' files into the files and tasks tables, then the analysis.

The same tables and steps as a local scan (:mod:`ex_app.work.scan`), with one root per
Nextcloud user (``source="nextcloud"``, ``location=<user id>``) and paths relative to that
user's home. A file's ``remote_id`` is its Nextcloud file id: a file that several users see
is recorded once, under the first user found seeing it. Its content fingerprint is the
WebDAV etag, so nothing is downloaded to find changes; a file is downloaded to a temporary
file only to be analyzed, then deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from nc_py_api import NextcloudException
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.config import Settings
from ex_app.media.errors import MediaError
from ex_app.media.kinds import MediaKind
from ex_app.sinks.nextcloud_tags import NextcloudTagSink, forget_files
from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource, TooLarge
from ex_app.store import schema
from ex_app.store.schema import TaskStatus
from ex_app.work.claims import ClaimedFile
from ex_app.work.pipeline import FACE_FINDING_ANALYZERS, FACES, Pipeline
from ex_app.work.scan import SyncReport, find_or_create_root, queue_tasks, record_file
from ex_app.work.worker import FileFetcher, LocalFetcher, TransientError

log = logging.getLogger(__name__)

NEXTCLOUD_SOURCE = "nextcloud"
CRAWL_CHUNK = 200  # files recorded (and sent to the workers) at a time while crawling
ETAG_PREFIX = "etag:"


def fingerprint(file: NextcloudFile) -> str:
    """What stands for the content hash of a Nextcloud file: its etag."""
    return f"{ETAG_PREFIX}{file.etag}"[:64]


def root_id_for_user(session: Session, user: str) -> int:
    """The id of the user's Nextcloud root, created on first use."""
    return find_or_create_root(session, NEXTCLOUD_SOURCE, user)


def stored_file(user: str, row: schema.File) -> NextcloudFile:
    """The Nextcloud file a stored row of user's root stands for."""
    return NextcloudFile(
        user=user,
        path=row.path,
        file_id=row.remote_id or 0,
        kind=MediaKind(row.kind),
        size=row.size,
        mtime_ns=row.mtime_ns,
        etag=row.content_hash.removeprefix(ETAG_PREFIX),
    )


def _nextcloud_files():
    return select(schema.File, schema.Root.location).join(schema.Root).where(
        schema.Root.source == NEXTCLOUD_SOURCE
    )


@dataclass
class Recorded:
    """What recording files did: the counts, the Nextcloud ids recorded and the stored ids
    of the files that are new or whose content changed (work for the workers)."""

    report: SyncReport = field(default_factory=SyncReport)
    remote_ids: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)

    def add(self, other: Recorded) -> None:
        """Count another chunk's recording in."""
        for name in ("added", "changed", "removed", "unchanged"):
            setattr(self.report, name, getattr(self.report, name) + getattr(other.report, name))
        self.remote_ids += other.remote_ids
        self.ids += other.ids
        self.fresh += other.fresh


def record_files(
    sessions: sessionmaker[Session],
    files: Iterable[NextcloudFile],
    pipeline: Pipeline,
) -> Recorded:
    """Insert new files, refresh changed ones (dropping their results) and queue their tasks.

    A file id recorded already (a share seen by another user first) keeps its user and
    path.
    """
    recorded = Recorded()
    report = recorded.report
    with sessions.begin() as session:
        roots: set[int] = set()
        for item in files:
            known = session.execute(
                _nextcloud_files().where(schema.File.remote_id == item.file_id)
            ).first()
            if known is not None:
                item = replace(item, user=known.location, path=known.File.path)
            root_id = root_id_for_user(session, item.user)
            roots.add(root_id)
            before = report.added + report.changed
            record_file(session, root_id, item, fingerprint(item), report)
            session.flush()
            row = session.scalar(
                select(schema.File).where(
                    schema.File.root_id == root_id, schema.File.path == item.path
                )
            )
            row.remote_id = item.file_id
            recorded.remote_ids.append(item.file_id)
            recorded.ids.append(row.id)
            if report.added + report.changed > before:
                recorded.fresh.append(row.id)
        session.flush()
        for root_id in roots:  # these files' tasks only: a crawl chunk never scans a whole root
            queue_tasks(session, root_id, pipeline, file_ids=recorded.ids)
    return recorded


async def sync_nextcloud(
    sessions: sessionmaker[Session],
    source: NextcloudSource,
    users: list[str],
    pipeline: Pipeline,
    on_chunk: Callable[[list[int]], None] = lambda fresh: None,
) -> Recorded:
    """Crawl these users' files into the store; their files no longer seen are removed.

    Files are recorded in chunks as the walk finds them; ``on_chunk`` gets each chunk's new
    and changed files (the stored ids), so workers can start before the walk ends. The
    files of a user whose walk did not finish are kept as they are, and so are the files of
    users not crawled (opted out).
    """
    recorded = Recorded()
    chunk: list[NextcloudFile] = []

    def record_chunk() -> None:
        done = record_files(sessions, chunk, pipeline)
        recorded.add(done)
        on_chunk(done.fresh)
        chunk.clear()

    async for file in source.walk(users):
        chunk.append(file)
        if len(chunk) >= CRAWL_CHUNK:
            await asyncio.to_thread(record_chunk)
    await asyncio.to_thread(record_chunk)
    report, seen_ids = recorded.report, set(recorded.remote_ids)
    finished = set(users) - source.unfinished_users
    with sessions.begin() as session:
        gone = [
            (row.id, row.remote_id)
            for row, user in session.execute(_nextcloud_files())
            if user in finished and row.remote_id not in seen_ids
        ]
        _delete_rows(session, gone)
        report.removed = len(gone)
    return recorded


def _delete_rows(session: Session, rows: list[tuple[int, int | None]]) -> None:
    """Delete stored files (their results go with them) and the record of their tags."""
    for file_id, _remote_id in rows:
        session.execute(delete(schema.File).where(schema.File.id == file_id))
    forget_files(session, [remote_id for _id, remote_id in rows if remote_id is not None])


def move_files(sessions: sessionmaker[Session], user: str, old: str, new: str) -> int:
    """Stored files of user's at old (or below it) take their paths at new; returns how many."""
    with sessions.begin() as session:
        rows = session.scalars(_at_path(select(schema.File).join(schema.Root), user, old)).all()
        for row in rows:
            row.path = new + row.path[len(old):]
        return len(rows)


def delete_files(sessions: sessionmaker[Session], user: str, path: str, remote_id: int) -> int:
    """Forget the file with this id, and user's stored files at path or below it (a folder);
    their faces and results go with them. Returns how many files were forgotten."""
    with sessions.begin() as session:
        by_path = _at_path(select(schema.File.id, schema.File.remote_id).join(schema.Root), user, path)
        by_id = select(schema.File.id, schema.File.remote_id).where(schema.File.remote_id == remote_id)
        rows = {tuple(row) for row in session.execute(by_path)} | {
            tuple(row) for row in session.execute(by_id)
        }
        _delete_rows(session, list(rows))
        return len(rows)


def _at_path(query, user: str, path: str):
    """The query limited to user's Nextcloud files at path or below it."""
    return query.where(
        schema.Root.source == NEXTCLOUD_SOURCE,
        schema.Root.location == user,
        (schema.File.path == path) | schema.File.path.startswith(path + "/"),
    )


def delete_face_data(sessions: sessionmaker[Session], user: str) -> set[int]:
    """Delete the faces found in user's files, the tags they gave and the persons they
    made; returns the stored ids of the files that had faces. The files keep their other
    results; their face-finding tasks go, so faces are found again only once the user opts
    back in and the crawl queues them."""
    users_files = (
        select(schema.File.id)
        .join(schema.Root)
        .where(schema.Root.source == NEXTCLOUD_SOURCE, schema.Root.location == user)
    )
    with sessions.begin() as session:
        faces = session.execute(
            select(schema.Face.id, schema.Face.person_id, schema.Face.file_id).where(
                schema.Face.file_id.in_(users_files)
            )
        ).all()
        had_faces = {file_id for _, _, file_id in faces}
        session.execute(delete(schema.Face).where(schema.Face.id.in_([face.id for face in faces])))
        session.execute(
            delete(schema.FileTag).where(
                schema.FileTag.file_id.in_(had_faces), schema.FileTag.analyzer == FACES
            )
        )
        session.execute(  # made again by the crawl after the user opts back in
            delete(schema.Task)
            .where(schema.Task.file_id.in_(users_files))
            .where(schema.Task.analyzer.in_(FACE_FINDING_ANALYZERS))
        )
        persons = {face.person_id for face in faces if face.person_id is not None}
        still_used = set(
            session.scalars(select(schema.Face.person_id).where(schema.Face.person_id.in_(persons)))
        )
        session.execute(
            delete(schema.Person).where(
                (schema.Person.owner == user) | schema.Person.id.in_(persons - still_used)
            )
        )
        return had_faces


def file_tags(session: Session, file_id: int, person_names: bool) -> set[str]:
    """The tags a stored file should carry: its analyzers' tags, and its persons' names."""
    tags = set(session.scalars(select(schema.FileTag.tag).where(schema.FileTag.file_id == file_id)))
    if person_names:
        tags |= set(
            session.scalars(
                select(schema.Person.name)
                .join(schema.Face)
                .where(
                    schema.Face.file_id == file_id,
                    schema.Person.name.is_not(None),
                    schema.Person.hidden.is_(False),
                )
            )
        )
    return tags


def unfinished(sessions: sessionmaker[Session], remote_ids: Collection[int]) -> set[int]:
    """Those of these Nextcloud files that still have pending tasks."""
    with sessions() as session:
        return set(
            session.scalars(
                select(schema.File.remote_id)
                .join(schema.Task)
                .where(schema.File.remote_id.in_(list(remote_ids)))
                .where(schema.Task.status == TaskStatus.PENDING)
            )
        )


def withdraw_pending(sessions: sessionmaker[Session], user: str) -> int:
    """Drop the pending tasks of user's files (the user opted out); the crawl queues them
    again once the user opts back in. Returns how many."""
    with sessions.begin() as session:
        return session.execute(
            delete(schema.Task)
            .where(schema.Task.status == TaskStatus.PENDING)
            .where(
                schema.Task.file_id.in_(
                    select(schema.File.id)
                    .join(schema.Root)
                    .where(schema.Root.source == NEXTCLOUD_SOURCE, schema.Root.location == user)
                )
            )
        ).rowcount


def busy(sessions: sessionmaker[Session], users: Collection[str], now: datetime | None = None) -> int:
    """How many of these users' pending tasks wait for a worker or are being worked on (those
    waiting out a retry delay are not counted)."""
    now = now or datetime.now(UTC)
    with sessions() as session:
        return session.scalar(
            select(func.count(schema.Task.id))
            .join(schema.File)
            .join(schema.Root)
            .where(schema.Root.source == NEXTCLOUD_SOURCE, schema.Root.location.in_(list(users)))
            .where(schema.Task.status == TaskStatus.PENDING)
            .where(
                schema.Task.lease_until.is_(None)
                | schema.Task.worker.is_not(None)
                | (schema.Task.lease_until < now)
            )
        )


def finished_since(
    sessions: sessionmaker[Session], since: datetime
) -> dict[int, tuple[NextcloudFile, datetime]]:
    """The Nextcloud files (by stored id) with an analysis done after since, each with the
    time its latest analysis ended."""
    with sessions() as session:
        rows = session.execute(
            _nextcloud_files()
            .add_columns(schema.Task.updated_at)
            .join(schema.Task, schema.Task.file_id == schema.File.id)
            .where(schema.Task.status == TaskStatus.DONE, schema.Task.updated_at > since)
        ).all()
    files: dict[int, tuple[NextcloudFile, datetime]] = {}
    for row, user, at in rows:
        at = _utc(at)
        if row.id not in files or files[row.id][1] < at:
            files[row.id] = (stored_file(user, row), at)
    return files


def finished_count(sessions: sessionmaker[Session], since: datetime) -> int:
    """How many Nextcloud files had an analysis end (done or failed) after since."""
    with sessions() as session:
        return session.scalar(
            select(func.count(func.distinct(schema.Task.file_id)))
            .join(schema.File)
            .join(schema.Root)
            .where(schema.Root.source == NEXTCLOUD_SOURCE)
            .where(schema.Task.status != TaskStatus.PENDING, schema.Task.updated_at > since)
        )


def _utc(moment: datetime) -> datetime:
    """SQLite gives stored times back without their zone: they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class NextcloudFetcher:
    """Downloads a claimed Nextcloud file, as its user, to a temporary file for a worker.

    Failures that may pass (Nextcloud answering 5xx, a lost or slow connection) are
    :class:`TransientError`; a file too large, gone or forbidden is a :class:`MediaError`.
    """

    sources = (NEXTCLOUD_SOURCE,)

    def __init__(self, max_download_bytes: int):
        self._source = NextcloudSource(max_download_bytes)
        self._runner = asyncio.Runner()  # the worker's thread drives its own event loop

    @contextmanager
    def fetch(self, file: ClaimedFile) -> Iterator[Path]:
        wanted = NextcloudFile(
            user=file.location, path=file.path, file_id=file.remote_id or 0,
            kind=MediaKind(file.kind), size=0, mtime_ns=0, etag="",
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="recognize-") as folder:
            try:
                path = self._runner.run(self._source.download(wanted, Path(folder)))
            except TooLarge as error:
                raise MediaError(f"download failed: {error}") from error
            except NextcloudException as error:
                if error.status_code >= 500 or error.status_code in (408, 429):
                    raise TransientError(f"download failed: {error}") from error
                raise MediaError(f"download failed: {error}") from error
            except Exception as error:  # a timeout, a dropped connection
                raise TransientError(f"download failed: {type(error).__name__}: {error}") from error
            yield path

    def close(self) -> None:
        """End the event loop: the HTTP clients' background tasks (niquests' idle-connection
        watchers) are cancelled rather than destroyed pending when the process exits."""
        self._runner.close()


class SourcesFetcher:
    """Fetches claimed files of local roots and, where credentials are set, of Nextcloud."""

    def __init__(self, *fetchers: FileFetcher):
        self._by_source = {source: f for f in fetchers for source in f.sources}
        self.sources = tuple(self._by_source)

    def fetch(self, file: ClaimedFile) -> AbstractContextManager[Path]:
        return self._by_source[file.source].fetch(file)

    def close(self) -> None:
        for fetcher in set(self._by_source.values()):
            fetcher.close()


def worker_fetcher(settings: Settings) -> FileFetcher:
    """What a worker process fetches with: local files, and Nextcloud's when this process has
    AppAPI's credentials (the ExApp's container, or a machine given the same variables)."""
    fetchers: list[FileFetcher] = [LocalFetcher()]
    if os.environ.get("NEXTCLOUD_URL") and os.environ.get("APP_SECRET"):
        fetchers.append(NextcloudFetcher(settings.max_download_bytes))
    return SourcesFetcher(*fetchers)


async def retag(
    sessions: sessionmaker[Session],
    source: NextcloudSource,
    sink: NextcloudTagSink,
    file_id: int,
    file: NextcloudFile,
    person_names: bool,
) -> None:
    """Make the stored file's tags in Nextcloud match the store, as its user."""
    with sessions() as session:
        tags = file_tags(session, file_id, person_names)
    await sink.apply(source.client(file.user), file.file_id, tags)
