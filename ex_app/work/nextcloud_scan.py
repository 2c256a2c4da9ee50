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
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from nc_py_api import NextcloudException
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from ex_app.media.errors import MediaError
from ex_app.media.kinds import MediaKind
from ex_app.sinks.nextcloud_tags import NextcloudTagSink, forget_files
from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource, TooLarge
from ex_app.store import schema
from ex_app.store.schema import TaskStatus
from ex_app.work.pipeline import FACE_FINDING_ANALYZERS, FACES, FileAnalysis, Pipeline
from ex_app.work.scan import (
    SyncReport,
    find_or_create_root,
    queue_tasks,
    record_analysis,
    record_file,
)

log = logging.getLogger(__name__)

NEXTCLOUD_SOURCE = "nextcloud"
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


def record_files(
    sessions: sessionmaker[Session],
    files: Iterable[NextcloudFile],
    pipeline: Pipeline,
) -> tuple[SyncReport, list[int]]:
    """Insert new files, refresh changed ones (dropping their results) and queue their tasks.

    A file id recorded already (a share seen by another user first) keeps its user and
    path. Returns what changed and the file ids recorded.
    """
    report = SyncReport()
    recorded: list[int] = []
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
            record_file(session, root_id, item, fingerprint(item), report)
            session.flush()
            row = session.scalar(
                select(schema.File).where(
                    schema.File.root_id == root_id, schema.File.path == item.path
                )
            )
            row.remote_id = item.file_id
            recorded.append(item.file_id)
        session.flush()
        for root_id in roots:
            queue_tasks(session, root_id, pipeline)
    return report, recorded


async def sync_nextcloud(
    sessions: sessionmaker[Session],
    source: NextcloudSource,
    users: list[str],
    pipeline: Pipeline,
) -> SyncReport:
    """Crawl these users' files into the store; their files no longer seen are removed.

    The files of a user whose walk did not finish are kept as they are, and so are the
    files of users not crawled (opted out).
    """
    found = [file async for file in source.walk(users)]
    report, seen = record_files(sessions, found, pipeline)
    seen_ids = set(seen)
    finished = set(users) - source.unfinished_users
    with sessions.begin() as session:
        gone = [
            (row.id, row.remote_id)
            for row, user in session.execute(_nextcloud_files())
            if user in finished and row.remote_id not in seen_ids
        ]
        _delete_rows(session, gone)
        report.removed = len(gone)
    return report


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
    results; their face-finding tasks wait as pending, so faces are found again only if
    the user opts back in."""
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
        session.execute(
            update(schema.Task)
            .where(schema.Task.file_id.in_(users_files))
            .where(schema.Task.analyzer.in_(FACE_FINDING_ANALYZERS))
            .values(status=TaskStatus.PENDING)
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


@dataclass
class NextcloudProcessor:
    """Downloads, analyzes, records and tags the pending Nextcloud files."""

    sessions: sessionmaker[Session]
    source: NextcloudSource
    pipeline: Pipeline
    sink: NextcloudTagSink
    jobs: int = 1
    person_names_as_tags: bool = False
    _analysis_lock: threading.Lock = field(default_factory=threading.Lock)

    def pending(
        self, users: Collection[str], urgent: Collection[int] = ()
    ) -> list[tuple[int, NextcloudFile, tuple[str, ...]]]:
        """(stored file id, Nextcloud file, pending analyzers) of these users' files; the
        urgent file ids first, then by user and path."""
        work: dict[int, tuple[NextcloudFile, list[str]]] = {}
        with self.sessions() as session:
            rows = session.execute(
                _nextcloud_files()
                .add_columns(schema.Task.analyzer)
                .join(schema.Task, schema.Task.file_id == schema.File.id)
                .where(schema.Task.status == TaskStatus.PENDING)
                .where(schema.Root.location.in_(list(users)))
            )
            for row, user, analyzer in rows:
                work.setdefault(row.id, (stored_file(user, row), []))[1].append(analyzer)
        items = [(file_id, file, tuple(sorted(names))) for file_id, (file, names) in work.items()]
        return sorted(items, key=lambda item: (item[1].file_id not in urgent, item[1].user, item[1].path))

    async def process(
        self, users: Collection[str], urgent: Callable[[], frozenset[int]] = frozenset
    ) -> int:
        """Process every pending file of these users, ``jobs`` files at a time; returns how
        many. Files that become urgent meanwhile (a Files menu request) go next."""
        done = 0
        known = urgent()
        work = self.pending(users, known)
        with tempfile.TemporaryDirectory(prefix="recognize-") as folder:
            while work:
                batch, work = work[: self.jobs], work[self.jobs :]
                await asyncio.gather(*(self.process_file(*item, Path(folder)) for item in batch))
                done += len(batch)
                if urgent() != known:
                    known = urgent()
                    work = self.pending(users, known)
        return done

    async def process_file(
        self, file_id: int, file: NextcloudFile, analyzers: tuple[str, ...], folder: Path
    ) -> None:
        """Download one file, analyze it, record the results, then tag it in Nextcloud."""
        analysis: FileAnalysis | str
        try:
            local = await self.source.download(file, folder)
        except (TooLarge, NextcloudException) as error:
            analysis = f"download failed: {error}"
        else:
            try:
                analysis = await asyncio.to_thread(self._analyze, local, analyzers)
            finally:
                local.unlink(missing_ok=True)
        with self.sessions.begin() as session:
            stored = session.get(schema.File, file_id)
            if stored is None or stored.content_hash != fingerprint(file):
                return  # changed or gone meanwhile: its new tasks wait for the next cycle
            record_analysis(session, file_id, analyzers, analysis, self.pipeline)
        if not isinstance(analysis, str):
            await self.retag(file_id, file)

    async def retag(self, file_id: int, file: NextcloudFile) -> None:
        """Make the file's tags in Nextcloud match the store."""
        with self.sessions() as session:
            tags = file_tags(session, file_id, self.person_names_as_tags)
        await self.sink.apply(self.source.client(file.user), file.file_id, tags)

    def _analyze(self, path: Path, analyzers: tuple[str, ...]) -> FileAnalysis | str:
        """The pipeline's analysis, or why it failed (one analysis at a time)."""
        with self._analysis_lock:
            try:
                return self.pipeline.analyze(path, analyzers)
            except MediaError as error:
                return str(error)
            except Exception as error:  # a bug must not stop the scan; the file keeps the reason
                log.exception("analyzing %s failed", path)
                return f"internal error: {type(error).__name__}: {error}"
