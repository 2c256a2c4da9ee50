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
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from nc_py_api import NextcloudException
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from ex_app.config import Settings
from ex_app.media.errors import MediaError
from ex_app.media.kinds import MediaKind
from ex_app.sinks.nextcloud_tags import forget_files
from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource, TooLarge
from ex_app.store import outbox, schema
from ex_app.store.schema import TaskStatus
from ex_app.work.claims import ClaimedFile
from ex_app.work.pipeline import FACE_FINDING_ANALYZERS, FACES, Pipeline
from ex_app.work.scan import SyncReport, find_or_create_root
from ex_app.work.worker import FileFetcher, LocalFetcher, TransientError

log = logging.getLogger(__name__)

NEXTCLOUD_SOURCE = "nextcloud"
CRAWL_CHUNK = 200  # files recorded (and sent to the workers) at a time while crawling
ETAG_PREFIX = "etag:"
SWEEP_BATCH = 2000  # stored ids read at a time when looking for files gone


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


@dataclass
class Recorded:
    """What recording files did: the counts, the Nextcloud ids recorded, their stored ids,
    and the stored ids of the files that got new work (new, changed, or missing tasks)."""

    report: SyncReport = field(default_factory=SyncReport)
    remote_ids: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)


@dataclass
class _Stored:
    """A stored file as one chunk's lookup found it, with its tasks (analyzer: status, version)."""

    id: int
    root_id: int
    user: str
    path: str
    kind: str
    digest: str
    size: int
    mtime_ns: int
    remote_id: int | None
    tasks: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def _stored_with_tasks(session: Session, where) -> dict[int, _Stored]:
    """The stored Nextcloud files matching where, by stored id, with their tasks: one query."""
    rows = session.execute(
        select(
            schema.File.id, schema.File.root_id, schema.Root.location, schema.File.path,
            schema.File.kind, schema.File.content_hash, schema.File.size, schema.File.mtime_ns,
            schema.File.remote_id, schema.Task.analyzer, schema.Task.status,
            schema.Task.model_version,
        )
        .join(schema.Root, schema.Root.id == schema.File.root_id)
        .outerjoin(schema.Task, schema.Task.file_id == schema.File.id)
        .where(schema.Root.source == NEXTCLOUD_SOURCE, where)
        .order_by(schema.File.id)
    )  # fmt: skip
    stored: dict[int, _Stored] = {}
    for row in rows:
        known = stored.get(row.id)
        if known is None:
            known = stored[row.id] = _Stored(*row[:9])
        if row.analyzer is not None:
            known.tasks[row.analyzer] = (row.status, row.model_version)
    return stored


def record_files(
    sessions: sessionmaker[Session],
    files: Iterable[NextcloudFile],
    pipeline: Pipeline,
) -> Recorded:
    """Insert new files, refresh changed ones (dropping their results) and queue their tasks.

    One query finds the chunk's stored files by Nextcloud id with their tasks; the database
    is written only for what differs (a new file, a new etag, a missing or outdated task), so
    recording files that did not change writes nothing. A file id recorded already (a share
    seen by another user first) keeps its user and path.
    """
    recorded = Recorded()
    report = recorded.report
    items: dict[int, NextcloudFile] = {}
    for item in files:  # each file once (a Files-menu selection may name it twice)
        items.setdefault(item.file_id, item)
    if not items:
        return recorded
    versions: dict[str, str] = {}

    def version(analyzer: str) -> str:
        if analyzer not in versions:
            versions[analyzer] = pipeline.model_version(analyzer)
        return versions[analyzer]

    with sessions.begin() as session:
        by_remote: dict[int, _Stored] = {}
        for known in _stored_with_tasks(
            session, schema.File.remote_id.in_(list(items))
        ).values():
            by_remote.setdefault(known.remote_id, known)
        unknown = [item for item in items.values() if item.file_id not in by_remote]
        by_path = _stored_at_paths(session, unknown)
        roots = _roots(session, {item.user for item in unknown if (item.user, item.path) not in by_path})
        changed: list[_Stored] = []
        new: list[tuple[NextcloudFile, schema.File]] = []
        files_of: list[tuple[int, str]] = []  # (stored id, kind) of every file recorded
        for item in items.values():
            known = by_remote.get(item.file_id) or by_path.get((item.user, item.path))
            if known is None:
                row = schema.File(
                    root_id=roots[item.user], path=item.path, kind=item.kind.value,
                    size=item.size, mtime_ns=item.mtime_ns, content_hash=fingerprint(item),
                    remote_id=item.file_id,
                )  # fmt: skip
                session.add(row)
                new.append((item, row))
                report.added += 1
                continue
            values = {}
            if known.digest != fingerprint(item):
                changed.append(known)
                known.tasks = {}
                values["content_hash"] = fingerprint(item)
                report.changed += 1
            else:
                report.unchanged += 1
            if (known.size, known.mtime_ns) != (item.size, item.mtime_ns):
                values |= {"size": item.size, "mtime_ns": item.mtime_ns}
            if known.remote_id != item.file_id:  # a new file at a path known before
                values["remote_id"] = item.file_id
            if values:
                session.execute(update(schema.File).where(schema.File.id == known.id).values(values))
            recorded.remote_ids.append(item.file_id)
            recorded.ids.append(known.id)
            files_of.append((known.id, known.kind))
        _drop_results(session, [known.id for known in changed])
        session.flush()  # the new files get their ids
        for item, row in new:
            recorded.remote_ids.append(item.file_id)
            recorded.ids.append(row.id)
            files_of.append((row.id, row.kind))
        stored_tasks = {known.id: known.tasks for known in (*by_remote.values(), *by_path.values())}
        inserts: list[dict] = []
        for file_id, kind in files_of:
            tasks = stored_tasks.get(file_id, {})
            work = False
            for analyzer in pipeline.enabled_analyzers(MediaKind(kind)):
                status, model = tasks.get(analyzer, (None, None))
                if status is None:
                    inserts.append({"file_id": file_id, "analyzer": analyzer, "model_version": version(analyzer)})
                    work = True
                elif status == TaskStatus.DONE and model != version(analyzer):
                    session.execute(
                        update(schema.Task)
                        .where(schema.Task.file_id == file_id, schema.Task.analyzer == analyzer)
                        .values(status=TaskStatus.PENDING, model_version=version(analyzer))
                    )
                    work = True
            if work:
                recorded.fresh.append(file_id)
        if inserts:
            session.execute(insert(schema.Task), inserts)
    return recorded


def _stored_at_paths(session: Session, items: list[NextcloudFile]) -> dict[tuple[str, str], _Stored]:
    """Stored files at these items' (user, path), for files not found by their Nextcloud id
    (a file replaced by another at the same path); no query when there are none."""
    if not items:
        return {}
    wanted = {(item.user, item.path) for item in items}
    found = _stored_with_tasks(
        session,
        schema.Root.location.in_({user for user, _ in wanted})
        & schema.File.path.in_({path for _, path in wanted}),
    )
    return {(k.user, k.path): k for k in found.values() if (k.user, k.path) in wanted}


def _roots(session: Session, users: set[str]) -> dict[str, int]:
    """The ids of these users' Nextcloud roots, made where missing."""
    return {user: root_id_for_user(session, user) for user in sorted(users)}


def _drop_results(session: Session, file_ids: list[int]) -> None:
    """Content changed: the files' faces, labels, tags and tasks go (new tasks follow)."""
    if file_ids:
        for table in (schema.Face, schema.Label, schema.FileTag, schema.Task):
            session.execute(delete(table).where(table.file_id.in_(file_ids)))


async def sync_nextcloud(
    sessions: sessionmaker[Session],
    source: NextcloudSource,
    users: list[str],
    pipeline: Pipeline,
    on_chunk: Callable[[list[int]], None] = lambda fresh: None,
) -> SyncReport:
    """Crawl these users' files into the store; their files no longer seen are removed.

    Files are recorded in chunks as the walk finds them; ``on_chunk`` gets each chunk's
    files with new work (stored ids), so workers can start before the walk ends. The files
    of a user whose walk did not finish are kept as they are, and so are the files of users
    not crawled (opted out).

    Memory: nothing is kept per file beyond the current chunk but the Nextcloud ids seen, 8
    bytes each in an array, to find the stored files no longer there once the walk is done
    (a "last seen" column would cost a write per file per crawl).
    """
    report = SyncReport()
    seen = array("q")
    chunk: list[NextcloudFile] = []

    def record_chunk() -> None:
        done = record_files(sessions, chunk, pipeline)
        for name in ("added", "changed", "unchanged"):
            setattr(report, name, getattr(report, name) + getattr(done.report, name))
        seen.extend(done.remote_ids)
        if done.fresh:
            on_chunk(done.fresh)
        chunk.clear()

    async for file in source.walk(users):
        chunk.append(file)
        if len(chunk) >= CRAWL_CHUNK:
            await asyncio.to_thread(record_chunk)
    await asyncio.to_thread(record_chunk)
    finished = [user for user in users if user not in source.unfinished_users]
    gone = await asyncio.to_thread(_not_seen, sessions, finished, seen)
    if gone:
        with sessions.begin() as session:
            _delete_rows(session, gone)
    report.removed = len(gone)
    return report


def _not_seen(
    sessions: sessionmaker[Session], users: list[str], seen: array
) -> list[tuple[int, int | None]]:
    """(stored id, Nextcloud id) of these users' stored files whose id is not in seen;
    the stored ids are read in batches, never all at once."""
    ordered = np.sort(np.frombuffer(seen, dtype=np.int64)) if len(seen) else np.zeros(0, np.int64)
    gone: list[tuple[int, int | None]] = []
    query = (
        select(schema.File.id, schema.File.remote_id)
        .join(schema.Root)
        .where(schema.Root.source == NEXTCLOUD_SOURCE, schema.Root.location.in_(users))
        .execution_options(yield_per=SWEEP_BATCH)
    )
    with sessions() as session:
        for batch in session.execute(query).partitions():
            remote = np.array([r or -1 for _, r in batch], dtype=np.int64)
            at = np.searchsorted(ordered, remote).clip(max=max(len(ordered) - 1, 0))
            found = ordered[at] == remote if len(ordered) else np.zeros(len(batch), bool)
            gone += [tuple(row) for row, hit in zip(batch, found, strict=True) if not hit]
    return gone


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
    made; returns the stored ids of the files that had faces (marked for the tag sink). The
    files keep their other results; their face-finding tasks go, so faces are found again
    only once the user opts back in and the crawl queues them."""
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
        outbox.mark(session, outbox.TAGS, had_faces)  # their tags follow
        return had_faces


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


def busy(sessions: sessionmaker[Session], users: Collection[str], now: datetime | None = None) -> bool:
    """Whether any of these users' pending tasks waits for a worker or is being worked on
    (those waiting out a retry delay do not count). Stops at the first one found: asked
    every second while a backlog of any size is worked through."""
    now = now or datetime.now(UTC)
    with sessions() as session:
        return session.scalar(
            select(schema.Task.id)
            .join(schema.File)
            .join(schema.Root)
            .where(schema.Root.source == NEXTCLOUD_SOURCE, schema.Root.location.in_(list(users)))
            .where(schema.Task.status == TaskStatus.PENDING)
            .where(
                schema.Task.lease_until.is_(None)
                | schema.Task.worker.is_not(None)
                | (schema.Task.lease_until < now)
            )
            .limit(1)
        ) is not None


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

