"""Scanning Nextcloud: the users' files into the files and tasks tables, then the analysis.

The same tables and steps as a local scan (:mod:`ex_app.work.scan`), with one root per
Nextcloud user (``source="nextcloud"``, ``location=<user id>``) and paths relative to that
user's home. A file's content fingerprint is its WebDAV etag, so nothing is downloaded to
find changes; a file is downloaded to a temporary file only to be analyzed, then deleted.
The Nextcloud file ids of the recorded files are kept in a :class:`NextcloudIndex`, filled
by each crawl.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from nc_py_api import NextcloudException
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.media.errors import MediaError
from ex_app.sinks.nextcloud_tags import NextcloudTagSink
from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource, TooLarge
from ex_app.store import schema
from ex_app.work.pipeline import FileAnalysis, Pipeline
from ex_app.work.scan import (
    SyncReport,
    find_or_create_root,
    pending_files,
    queue_tasks,
    record_analysis,
    record_file,
)

log = logging.getLogger(__name__)

NEXTCLOUD_SOURCE = "nextcloud"


@dataclass
class NextcloudIndex:
    """The Nextcloud files recorded in the store, by (user, path) and by file id."""

    by_path: dict[tuple[str, str], NextcloudFile] = field(default_factory=dict)
    by_id: dict[int, NextcloudFile] = field(default_factory=dict)

    def add(self, file: NextcloudFile) -> NextcloudFile:
        """Remember the file; a file id known already keeps its user and path, with the new
        size, time and etag. Returns the file as remembered."""
        known = self.by_id.get(file.file_id)
        if known is not None and (known.user, known.path) in self.by_path:
            file = replace(file, user=known.user, path=known.path)
        self.by_id[file.file_id] = file
        self.by_path[(file.user, file.path)] = file
        return file

    def move(self, user: str, old: str, new: str) -> None:
        """Files of user's at old (or below it) are now at new."""
        for (owner, path), file in list(self.by_path.items()):
            if owner == user and (path == old or path.startswith(old + "/")):
                moved = replace(file, path=new + path[len(old):])
                del self.by_path[(owner, path)]
                self.by_path[(owner, moved.path)] = moved
                self.by_id[file.file_id] = moved


def fingerprint(file: NextcloudFile) -> str:
    """What stands for the content hash of a Nextcloud file: its etag."""
    return f"etag:{file.etag}"[:64]


def root_id_for_user(session: Session, user: str) -> int:
    """The id of the user's Nextcloud root, created on first use."""
    return find_or_create_root(session, NEXTCLOUD_SOURCE, user)


def record_files(
    sessions: sessionmaker[Session],
    files: Iterable[NextcloudFile],
    pipeline: Pipeline,
) -> SyncReport:
    """Insert new files, refresh changed ones (dropping their results) and queue their tasks."""
    report = SyncReport()
    with sessions.begin() as session:
        roots: set[int] = set()
        for item in files:
            root_id = root_id_for_user(session, item.user)
            roots.add(root_id)
            record_file(session, root_id, item, fingerprint(item), report)
        session.flush()
        for root_id in roots:
            queue_tasks(session, root_id, pipeline)
    return report


async def sync_nextcloud(
    sessions: sessionmaker[Session],
    source: NextcloudSource,
    users: list[str],
    pipeline: Pipeline,
) -> tuple[NextcloudIndex, SyncReport]:
    """Crawl the users' files into the store; files no longer seen are removed from it.

    The files of a user whose walk did not finish are kept as they are.
    """
    index = NextcloudIndex()
    async for found in source.walk(users):
        index.add(found)
    report = record_files(sessions, index.by_path.values(), pipeline)
    with sessions.begin() as session:
        rows = session.execute(
            select(schema.File.id, schema.Root.location, schema.File.path)
            .join(schema.Root)
            .where(schema.Root.source == NEXTCLOUD_SOURCE)
        )
        gone = [
            file_id
            for file_id, user, path in rows
            if (user, path) not in index.by_path and user not in source.unfinished_users
        ]
        for file_id in gone:
            session.execute(delete(schema.File).where(schema.File.id == file_id))
        report.removed = len(gone)
    return index, report


def move_files(sessions: sessionmaker[Session], user: str, old: str, new: str) -> int:
    """Stored files of user's at old (or below it) take their paths at new; returns how many."""
    with sessions.begin() as session:
        rows = session.scalars(
            select(schema.File)
            .join(schema.Root)
            .where(schema.Root.source == NEXTCLOUD_SOURCE, schema.Root.location == user)
            .where((schema.File.path == old) | schema.File.path.startswith(old + "/"))
        ).all()
        for row in rows:
            row.path = new + row.path[len(old):]
        return len(rows)


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

    def pending(self, index: NextcloudIndex) -> list[tuple[int, NextcloudFile, tuple[str, ...]]]:
        """(stored file id, Nextcloud file, pending analyzers) for the files the index knows."""
        with self.sessions() as session:
            roots = session.execute(
                select(schema.Root.id, schema.Root.location).where(
                    schema.Root.source == NEXTCLOUD_SOURCE
                )
            ).all()
            return [
                (file_id, index.by_path[(user, path)], analyzers)
                for root_id, user in roots
                for file_id, path, analyzers in pending_files(session, root_id)
                if (user, path) in index.by_path
            ]

    async def process(self, index: NextcloudIndex) -> int:
        """Process every pending file, ``jobs`` files at a time; returns how many."""
        work = self.pending(index)
        with tempfile.TemporaryDirectory(prefix="recognize-") as folder:

            for start in range(0, len(work), self.jobs):
                batch = work[start : start + self.jobs]
                await asyncio.gather(
                    *(self.process_file(*item, Path(folder)) for item in batch)
                )
        return len(work)

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
