"""The store's roots, files and tasks: recording what a source found, finding work left,
following moves and deletions.

A root is one source's tree (a local folder, a Nextcloud user's files); a file is recorded
once, by its path in its root (and, from Nextcloud, its file id), with a content
fingerprint and one task per enabled analyzer. Every function commits in small
transactions, so a scan killed at any moment is finished by the next one.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np
from sqlalchemy import and_, delete, false, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ex_app.media.kinds import MediaKind
from ex_app.store import schema
from ex_app.store.schema import Source, TaskStatus

if TYPE_CHECKING:
    from ex_app.analyzers.pipeline import Pipeline

SWEEP_BATCH = 2000  # stored ids read at a time when looking for files gone


@dataclass
class SyncReport:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0


class FoundFile(Protocol):
    """A media file a source found: its root's location, its path there, its Nextcloud id."""

    @property
    def root(self) -> str: ...
    @property
    def remote_id(self) -> int | None: ...

    path: str
    kind: MediaKind
    size: int
    mtime_ns: int


@dataclass
class StoredFile:
    """A stored file as one chunk's lookup found it, with its tasks (analyzer: status, version)."""

    id: int
    root_id: int
    location: str
    path: str
    kind: str
    digest: str
    size: int
    mtime_ns: int
    remote_id: int | None
    tasks: dict[str, tuple[str, str | None]] = field(default_factory=dict)


class Recording(Protocol):
    """What recording a source's files asks of the source."""

    name: Source

    def fingerprint(self, item: FoundFile, stored: StoredFile | None) -> str | None:
        """What stands for the item's content (None: unreadable now, left for the next sync)."""


@dataclass
class Recorded:
    """What recording files did: the counts, the Nextcloud ids recorded, their stored ids,
    and the stored ids of the files that got new work (new, changed, or missing tasks)."""

    report: SyncReport = field(default_factory=SyncReport)
    remote_ids: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    fresh: list[int] = field(default_factory=list)


def find_or_create_root(session: Session, source: Source, location: str) -> int:
    """The id of a source's root at location (a folder, a Nextcloud user), created on first use
    (by whichever of two racing transactions, say a crawl and a webhook, commits first)."""
    query = select(schema.Root.id).where(schema.Root.source == source, schema.Root.location == location)
    root_id = session.scalar(query)
    if root_id is None:
        try:
            with session.begin_nested():
                new = insert(schema.Root).values(source=source, location=location)
                root_id = session.scalar(new.returning(schema.Root.id))
        except IntegrityError:
            root_id = session.scalar(query)
    return root_id


def _stored_with_tasks(session: Session, source: Source, where) -> dict[int, StoredFile]:
    """The source's stored files matching where, by stored id, with their tasks: one query."""
    rows = session.execute(
        select(
            schema.File.id, schema.File.root_id, schema.Root.location, schema.File.path,
            schema.File.kind, schema.File.content_hash, schema.File.size, schema.File.mtime_ns,
            schema.File.remote_id, schema.Task.analyzer, schema.Task.status,
            schema.Task.model_version,
        )
        .join(schema.Root, schema.Root.id == schema.File.root_id)
        .outerjoin(schema.Task, schema.Task.file_id == schema.File.id)
        .where(schema.Root.source == source, where)
        .order_by(schema.File.id)
    )  # fmt: skip
    stored: dict[int, StoredFile] = {}
    for row in rows:
        known = stored.get(row.id)
        if known is None:
            known = stored[row.id] = StoredFile(*row[:9])
        if row.analyzer is not None:
            known.tasks[row.analyzer] = (row.status, row.model_version)
    return stored


def record_files(
    sessions: sessionmaker[Session], source: Recording, files: Iterable[FoundFile],
    pipeline: Pipeline,
) -> Recorded:
    """Insert new files, refresh changed ones (dropping their results) and queue their tasks.

    One query finds the chunk's stored files (by Nextcloud id, else by path) with their
    tasks; the database is written only for what differs (a new file, a new fingerprint, a
    missing or outdated task), so recording files that did not change writes nothing. A file
    id recorded already (a share seen by another user first) keeps its user and path. A file
    that another transaction (a crawl beside a webhook) recorded first is found the second time.
    """
    files = list(files)
    try:
        return _record_files(sessions, source, files, pipeline)
    except IntegrityError:
        return _record_files(sessions, source, files, pipeline)


def _record_files(
    sessions: sessionmaker[Session], source: Recording, files: list[FoundFile], pipeline: Pipeline
) -> Recorded:
    recorded = Recorded()
    items: dict[object, FoundFile] = {}
    for item in files:  # each file once (a Files-menu selection may name it twice)
        items.setdefault(item.remote_id if item.remote_id is not None else (item.root, item.path), item)
    if not items:
        return recorded
    version = functools.cache(pipeline.model_version)

    with sessions.begin() as session:
        by_remote: dict[int, StoredFile] = {}
        remote = [item.remote_id for item in items.values() if item.remote_id is not None]
        if remote:
            where = schema.File.remote_id.in_(remote)
            for known in _stored_with_tasks(session, source.name, where).values():
                by_remote.setdefault(known.remote_id, known)
        unknown = [item for item in items.values() if item.remote_id not in by_remote]
        by_path = _stored_at_paths(session, source.name, unknown)
        new_roots = {item.root for item in unknown if (item.root, item.path) not in by_path}
        roots = {root: find_or_create_root(session, source.name, root) for root in sorted(new_roots)}
        changed: list[StoredFile] = []
        new: list[tuple[FoundFile, schema.File]] = []
        kept: list[tuple[FoundFile, int, str]] = []  # (item, stored id, kind) of known files
        for item in items.values():
            known = by_remote.get(item.remote_id) or by_path.get((item.root, item.path))
            digest = source.fingerprint(item, known)
            if digest is None:  # unreadable now: as it was, for the next sync
                if known is not None:
                    recorded.ids.append(known.id)
                continue
            if known is None:
                row = schema.File(
                    root_id=roots[item.root], path=item.path, kind=item.kind.value,
                    size=item.size, mtime_ns=item.mtime_ns, content_hash=digest,
                    remote_id=item.remote_id,
                )  # fmt: skip
                session.add(row)
                new.append((item, row))
                recorded.report.added += 1
                continue
            values = {}
            if known.digest != digest:
                changed.append(known)
                known.tasks = {}
                values["content_hash"] = digest
                recorded.report.changed += 1
            else:
                recorded.report.unchanged += 1
            if (known.size, known.mtime_ns) != (item.size, item.mtime_ns):
                values |= {"size": item.size, "mtime_ns": item.mtime_ns}
            if item.remote_id is not None and known.remote_id != item.remote_id:
                values["remote_id"] = item.remote_id  # a new file at a path known before
            if values:
                session.execute(update(schema.File).where(schema.File.id == known.id).values(values))
            kept.append((item, known.id, known.kind))
        _drop_results(session, [known.id for known in changed])
        session.flush()  # the new files get their ids
        stored_tasks = {known.id: known.tasks for known in (*by_remote.values(), *by_path.values())}
        inserts: list[dict] = []
        for item, file_id, kind in [*kept, *((item, row.id, row.kind) for item, row in new)]:
            if item.remote_id is not None:
                recorded.remote_ids.append(item.remote_id)
            recorded.ids.append(file_id)
            tasks = stored_tasks.get(file_id, {})
            work = False
            for analyzer in pipeline.enabled_analyzers(MediaKind(kind)):
                status, model = tasks.get(analyzer, (None, None))
                if status is None:
                    inserts.append({"file_id": file_id, "analyzer": analyzer,
                                    "model_version": version(analyzer)})
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


def _stored_at_paths(
    session: Session, source: Source, items: list[FoundFile]
) -> dict[tuple[str, str], StoredFile]:
    """Stored files at these items' (root, path), for files not found by their Nextcloud id
    (a local file, a file replaced by another at the same path); no query when there are none."""
    if not items:
        return {}
    wanted = {(item.root, item.path) for item in items}
    roots, paths = {root for root, _ in wanted}, {path for _, path in wanted}
    where = schema.Root.location.in_(roots) & schema.File.path.in_(paths)
    found = _stored_with_tasks(session, source, where)
    return {(k.location, k.path): k for k in found.values() if (k.location, k.path) in wanted}


def _drop_results(session: Session, file_ids: list[int]) -> None:
    """Content changed: the files' faces, labels, tags and tasks go (new tasks follow)."""
    if file_ids:
        for table in (schema.Face, schema.Label, schema.FileTag, schema.Task):
            session.execute(delete(table).where(table.file_id.in_(file_ids)))


def not_seen(
    sessions: sessionmaker[Session], source: Source, scopes: Iterable[tuple[str, str | None]],
    seen: array,
) -> list[tuple[int, int | None]]:
    """(stored id, Nextcloud id) of the stored files in these scopes (root location, and one
    path there or None for the whole root) whose stored id is not in seen; the stored ids
    are read in batches, never all at once."""
    where = [
        and_(schema.Root.location == location, schema.File.path == path if path else true())
        for location, path in scopes
    ]
    # sorted, with a last id above any stored one so that every id finds its place in it
    ordered = np.append(np.sort(np.frombuffer(seen, dtype=np.int64)), np.iinfo(np.int64).max)
    gone: list[tuple[int, int | None]] = []
    query = select(schema.File.id, schema.File.remote_id).join(schema.Root)
    query = query.where(schema.Root.source == source, or_(false(), *where))
    query = query.execution_options(yield_per=SWEEP_BATCH)
    with sessions() as session:
        for batch in session.execute(query).partitions():
            ids = np.array([file_id for file_id, _ in batch], dtype=np.int64)
            found = ordered[np.searchsorted(ordered, ids)] == ids
            gone += [tuple(row) for row, hit in zip(batch, found, strict=True) if not hit]
    return gone


def delete_stored(session: Session, rows: Iterable[tuple[int, int | None]]) -> None:
    """Delete stored files, (stored id, Nextcloud id) rows: their results go with them, and
    the record of the tags this app gave them in Nextcloud."""
    rows = list(rows)
    for file_id, _remote_id in rows:
        session.execute(delete(schema.File).where(schema.File.id == file_id))
    remote = [remote_id for _id, remote_id in rows if remote_id is not None]
    if remote:
        session.execute(delete(schema.SinkTag).where(schema.SinkTag.remote_id.in_(remote)))


def work_left(
    sessions: sessionmaker[Session], *, root_id: int | None = None,
    sources: Collection[str] | None = None, users: Collection[str] | None = None,
    remote_ids: Collection[int] | None = None, ready_only: bool = False,
) -> bool:
    """Whether a pending task is left: of one root, of roots of these sources, of these
    Nextcloud users, or of these Nextcloud files. ``ready_only``: only those waiting for a
    worker or being worked on (not those waiting out a retry delay). Stops at the first one
    found: asked every second while a backlog of any size is worked through."""
    query = select(schema.Task.id).join(schema.File).join(schema.Root)
    query = query.where(schema.Task.status == TaskStatus.PENDING)
    if root_id is not None:
        query = query.where(schema.File.root_id == root_id)
    if sources is not None:
        query = query.where(schema.Root.source.in_(list(sources)))
    if users is not None:
        query = query.where(schema.Root.source == Source.NEXTCLOUD, schema.Root.location.in_(list(users)))
    if remote_ids is not None:
        query = query.where(schema.File.remote_id.in_(list(remote_ids)))
    if ready_only:
        query = query.where(
            schema.Task.lease_until.is_(None)
            | schema.Task.worker.is_not(None)
            | (schema.Task.lease_until < datetime.now(UTC))
        )
    with sessions() as session:
        return session.scalar(query.limit(1)) is not None


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
        rows = {tuple(row) for query in (by_path, by_id) for row in session.execute(query)}
        delete_stored(session, rows)
        return len(rows)


def _at_path(query, user: str, path: str):
    """The query limited to user's Nextcloud files at path or below it."""
    inside = (schema.File.path == path) | schema.File.path.startswith(path + "/")
    return query.where(schema.Root.source == Source.NEXTCLOUD, schema.Root.location == user, inside)


def users_files(user: str):
    """SQL: the stored ids of user's Nextcloud files."""
    where = (schema.Root.source == Source.NEXTCLOUD, schema.Root.location == user)
    return select(schema.File.id).join(schema.Root).where(*where)


def withdraw_pending(sessions: sessionmaker[Session], user: str) -> int:
    """Drop the pending tasks of user's files (the user opted out); the crawl queues them
    again once the user opts back in. Returns how many."""
    with sessions.begin() as session:
        return session.execute(
            delete(schema.Task)
            .where(schema.Task.status == TaskStatus.PENDING)
            .where(schema.Task.file_id.in_(users_files(user)))
        ).rowcount
