"""Scanning a folder: record new and changed files, then analyze what is pending.

Every step commits in small transactions, and one file's results are written together with
its task state, so a scan killed at any moment is finished by the next one with nothing
lost and nothing duplicated.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.media.kinds import MediaKind
from ex_app.sources.local import SourceFile, one_local_file, walk_local
from ex_app.store import schema
from ex_app.store.schema import TaskStatus, utcnow
from ex_app.work.pipeline import (
    EMBEDDINGS,
    FACE_FINDING_ANALYZERS,
    LABELLING_ANALYZERS,
    FileAnalysis,
    Pipeline,
)

log = logging.getLogger(__name__)

LOCAL_SOURCE = "local"
SYNC_CHUNK = 200  # files hashed per transaction while syncing


@dataclass
class SyncReport:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def local_file(file: schema.File) -> Path:
    """Where a file of a local root is on disk."""
    return Path(file.root.location) / file.path


def find_or_create_root(session: Session, source: str, location: str) -> int:
    """The id of a source's root at location (a folder, a Nextcloud user), created on first use."""
    root = session.scalar(
        select(schema.Root).where(schema.Root.source == source, schema.Root.location == location)
    )
    if root is None:
        root = schema.Root(source=source, location=location)
        session.add(root)
        session.flush()
    return root.id


def root_id_for(session: Session, folder: Path) -> int:
    """The id of the local root for folder, created on first use."""
    return find_or_create_root(session, LOCAL_SOURCE, str(folder.resolve()))


def sync_folder(
    sessions: sessionmaker[Session],
    folder: Path,
    pipeline: Pipeline,
    on_chunk: Callable[[list[int]], None] = lambda file_ids: None,
    only: str | None = None,
) -> tuple[int, SyncReport]:
    """Bring the files table in line with the folder; returns the root id and what changed.

    Files are recorded, with their pending tasks, in chunks while the walk goes on;
    ``on_chunk`` gets each chunk's new and changed file ids once committed (to send them to
    the workers before the walk ends). ``only``: one file's path in the folder, synced alone
    (the root's other files are left as they are).
    """
    report = SyncReport()
    with sessions.begin() as session:
        root_id = root_id_for(session, folder)
        query = select(schema.File.path, schema.File.size, schema.File.mtime_ns).where(
            schema.File.root_id == root_id
        )
        if only is not None:
            query = query.where(schema.File.path == only)
        known = {path: (size, mtime_ns) for path, size, mtime_ns in session.execute(query)}
    if only is None:
        walk = walk_local(folder)
    else:
        walk = [found] if (found := one_local_file(folder, only)) is not None else []
    seen: set[str] = set()
    batch: list[SourceFile] = []
    for found in walk:
        seen.add(found.path)
        if known.get(found.path) == (found.size, found.mtime_ns):
            report.unchanged += 1
            continue
        batch.append(found)
        if len(batch) >= SYNC_CHUNK:
            on_chunk(_record_found(sessions, folder, root_id, batch, pipeline, report))
            batch = []
    on_chunk(_record_found(sessions, folder, root_id, batch, pipeline, report))
    gone = set(known) - seen
    with sessions.begin() as session:
        for path in gone:
            session.execute(
                delete(schema.File).where(schema.File.root_id == root_id, schema.File.path == path)
            )
        report.removed = len(gone)
        queue_tasks(session, root_id, pipeline)
    return root_id, report


def _record_found(
    sessions: sessionmaker[Session],
    folder: Path,
    root_id: int,
    found: list[SourceFile],
    pipeline: Pipeline,
    report: SyncReport,
) -> list[int]:
    """Insert new files and refresh changed ones (changed content drops its old results),
    with their pending tasks; returns their ids."""
    if not found:
        return []
    with sessions.begin() as session:
        for item in found:
            try:
                digest = content_hash(folder / item.path)
            except OSError:
                continue  # vanished or unreadable since the walk; the next scan sees it again
            record_file(session, root_id, item, digest, report)
        session.flush()
        file_ids = list(
            session.scalars(
                select(schema.File.id).where(
                    schema.File.root_id == root_id,
                    schema.File.path.in_([item.path for item in found]),
                )
            )
        )
        queue_tasks(session, root_id, pipeline, file_ids)
    return file_ids


class FoundFile(Protocol):
    """A file a source found: a local SourceFile or a Nextcloud file."""

    path: str
    kind: MediaKind
    size: int
    mtime_ns: int


def record_file(
    session: Session, root_id: int, item: FoundFile, digest: str, report: SyncReport
) -> None:
    """Insert a new file or refresh a known one; content that changed drops its old results.

    ``digest`` stands for the content: a sha256 here, an etag for Nextcloud.
    """
    row = session.scalar(
        select(schema.File).where(schema.File.root_id == root_id, schema.File.path == item.path)
    )
    if row is None:
        session.add(
            schema.File(
                root_id=root_id,
                path=item.path,
                kind=item.kind.value,
                size=item.size,
                mtime_ns=item.mtime_ns,
                content_hash=digest,
            )
        )
        report.added += 1
        return
    if row.content_hash != digest:
        row.faces.clear()
        row.labels.clear()
        row.tags.clear()
        row.tasks.clear()
        row.content_hash = digest
        report.changed += 1
    else:
        report.unchanged += 1
    row.size, row.mtime_ns = item.size, item.mtime_ns


def queue_tasks(
    session: Session, root_id: int, pipeline: Pipeline, file_ids: list[int] | None = None
) -> None:
    """A pending task for every enabled analyzer a file lacks, or whose models changed
    (for the root's files, or only these of them)."""
    task_query = select(schema.Task).join(schema.File).where(schema.File.root_id == root_id)
    file_query = select(schema.File.id, schema.File.kind).where(schema.File.root_id == root_id)
    if file_ids is not None:
        task_query = task_query.where(schema.File.id.in_(file_ids))
        file_query = file_query.where(schema.File.id.in_(file_ids))
    tasks = {(task.file_id, task.analyzer): task for task in session.scalars(task_query)}
    for file_id, kind in session.execute(file_query):
        for analyzer in pipeline.enabled_analyzers(kind):
            version = pipeline.model_version(analyzer)
            task = tasks.get((file_id, analyzer))
            if task is None:
                session.add(
                    schema.Task(file_id=file_id, analyzer=analyzer, model_version=version)
                )
            elif task.status == TaskStatus.DONE and task.model_version != version:
                task.status, task.model_version = TaskStatus.PENDING, version


def pending_files(session: Session, root_id: int) -> list[tuple[int, str, tuple[str, ...]]]:
    """(file id, path, pending analyzers) for the root's files with work left, by path."""
    rows = session.execute(
        select(schema.File.id, schema.File.path, schema.Task.analyzer)
        .join(schema.Task)
        .where(schema.File.root_id == root_id, schema.Task.status == TaskStatus.PENDING)
        .order_by(schema.File.path, schema.Task.analyzer)
    )
    work: dict[int, tuple[str, list[str]]] = {}
    for file_id, path, analyzer in rows:
        work.setdefault(file_id, (path, []))[1].append(analyzer)
    return [(file_id, path, tuple(analyzers)) for file_id, (path, analyzers) in work.items()]


def process_pending(
    sessions: sessionmaker[Session],
    folder: Path,
    root_id: int,
    pipeline: Pipeline,
    on_planned: Callable[[int], None] = lambda count: None,
    on_file_done: Callable[[str], None] = lambda path: None,
) -> int:
    """Analyze every pending file of the root (at ``folder``) in this process, without the
    queue and its retries; returns how many files were processed."""
    from ex_app.work.worker import (  # the worker builds on this module
        FileProcessor,
        LocalFetcher,
    )

    processor = FileProcessor(sessions, pipeline, LocalFetcher())
    with sessions() as session:
        work = pending_files(session, root_id)
    on_planned(len(work))
    processed = 0
    for file_id, path, _ in work:
        claimed = processor.claim(file_id)
        if claimed is None:
            continue
        if processor.process(claimed).recorded:
            processed += 1
            on_file_done(path)
    return processed


def record_analysis(
    session: Session,
    file_id: int,
    analyzers: tuple[str, ...],
    analysis: FileAnalysis | str,
    pipeline: Pipeline,
) -> None:
    """Replace the file's results for these analyzers and mark their tasks done or failed
    (a failure here is permanent: the dead-letter state, with its reason)."""
    file = session.get(schema.File, file_id)
    if file is None:
        return  # deleted meanwhile
    failed = isinstance(analysis, str)
    if any(analyzer in FACE_FINDING_ANALYZERS for analyzer in analyzers):
        file.faces.clear()
    if any(analyzer in LABELLING_ANALYZERS for analyzer in analyzers):
        file.labels.clear()
    file.tags[:] = [tag for tag in file.tags if tag.analyzer not in analyzers]
    session.flush()
    if not failed:
        file.width, file.height = analysis.width, analysis.height
        if any(analyzer in FACE_FINDING_ANALYZERS for analyzer in analyzers):
            file.faces.extend(_face_row(face, analysis.embedder) for face in analysis.faces)
        elif EMBEDDINGS in analyzers:
            for face in file.faces:
                if face.id in analysis.embeddings:
                    face.embedding = np.asarray(analysis.embeddings[face.id], np.float32).tobytes()
                    face.embedder = analysis.embedder
        if any(analyzer in LABELLING_ANALYZERS for analyzer in analyzers):
            file.labels.extend(
                schema.Label(label_id=label.id, name=label.name, score=label.score)
                for label in analysis.labels
            )
        for analyzer, tags in analysis.tags.items():
            file.tags.extend(schema.FileTag(analyzer=analyzer, tag=tag) for tag in tags)
    for task in file.tasks:
        if task.analyzer in analyzers:
            task.status = TaskStatus.ERROR if failed else TaskStatus.DONE
            task.error = analysis if failed else None
            task.model_version = pipeline.model_version(task.analyzer)
            task.attempts += 1
            task.updated_at = utcnow()


def _face_row(face, embedder: str) -> schema.Face:
    x, y, w, h = (float(v) for v in face.box)
    return schema.Face(
        embedder=embedder,
        x=x,
        y=y,
        w=w,
        h=h,
        score=float(face.score),
        quality=float(face.quality),
        sharpness=float(face.sharpness),
        pose=float(face.pose),
        landmarks=np.asarray(face.landmarks, dtype=np.float32).tobytes(),
        embedding=np.asarray(face.embedding, dtype=np.float32).tobytes(),
        frame_time=face.frame_time,
    )
