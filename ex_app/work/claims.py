"""Claims on a file's tasks: how a worker takes work in the store, ends it, or gives it back.

A claim sets the tasks' ``worker`` and ``lease_until``; only pending tasks that nobody holds
(no lease, or one that ran out) can be claimed, in one conditional UPDATE, so two workers
never hold the same task. Results are written together with the end of the claim, and only
while the claim is still this worker's: a file is recorded once, however often its message
was delivered.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psutil
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ex_app.analyzers.pipeline import Pipeline
from ex_app.analyzers.results import FileAnalysis
from ex_app.store import schema
from ex_app.store.outbox import MAX_RETRY_DELAY
from ex_app.store.results import record_analysis
from ex_app.store.schema import TaskStatus, utcnow


def worker_name() -> str:
    """Unique among the workers of all hosts: host, process id and start, a random part."""
    process = psutil.Process()
    return f"{socket.gethostname()}:{process.pid}:{int(process.create_time())}:{uuid.uuid4().hex[:4]}"


def worker_gone(name: str | None) -> bool:
    """Whether name is a worker of this host whose process has ended (its claims are void)."""
    if not name:
        return False
    host, _, rest = name.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        return int(psutil.Process(int(pid)).create_time()) != int(start.partition(":")[0])
    except psutil.NoSuchProcess:
        return True


@dataclass(frozen=True)
class ClaimedFile:
    """A file a worker holds, with what it needs to fetch and analyze it."""

    file_id: int
    source: str  # its root's source: "local", "nextcloud"
    location: str  # its root's location: a folder, a Nextcloud user
    path: str  # inside the root
    kind: str
    content_hash: str
    remote_id: int | None  # the Nextcloud file id
    analyzers: tuple[str, ...]
    priority: int
    attempts: int  # transient failures so far


def claim_file(
    session: Session, file_id: int, worker: str, lease: timedelta, now: datetime | None = None
) -> ClaimedFile | None:
    """Claim the file's pending tasks nobody holds; None when there are none."""
    now = now or datetime.now(UTC)
    claimed = session.execute(update(schema.Task).where(
        schema.Task.file_id == file_id, schema.Task.status == TaskStatus.PENDING,
        or_(schema.Task.lease_until.is_(None), schema.Task.lease_until < now),
    ).values(lease_until=now + lease, worker=worker))
    if not claimed.rowcount:
        return None
    tasks = session.scalars(_held(file_id, worker)).all()
    file = session.get(schema.File, file_id)
    return ClaimedFile(
        file_id=file_id, source=file.root.source, location=file.root.location, path=file.path,
        kind=file.kind, content_hash=file.content_hash, remote_id=file.remote_id,
        analyzers=tuple(sorted(task.analyzer for task in tasks)),
        priority=max(task.priority for task in tasks),
        attempts=max(task.attempts for task in tasks),
    )


def _held(file_id: int, worker: str):
    return select(schema.Task).where(
        schema.Task.file_id == file_id, schema.Task.worker == worker,
        schema.Task.status == TaskStatus.PENDING, schema.Task.lease_until.is_not(None),
    )


def still_held(session: Session, claimed: ClaimedFile, worker: str) -> list[schema.Task] | None:
    """The claimed tasks while this worker still holds all of them and the content is the
    same; None when the file changed, vanished or another worker took over."""
    file = session.get(schema.File, claimed.file_id)
    if file is None or file.content_hash != claimed.content_hash:
        return None
    tasks = [t for t in session.scalars(_held(claimed.file_id, worker)) if t.analyzer in claimed.analyzers]
    return tasks if len(tasks) == len(claimed.analyzers) else None


def finish(
    session: Session, claimed: ClaimedFile, worker: str, analysis: FileAnalysis | str,
    pipeline: Pipeline,
) -> bool:
    """Record the results (or the permanent error) and end the claim; False when the claim was
    lost meanwhile (nothing is written then)."""
    tasks = still_held(session, claimed, worker)
    if tasks is None:
        return False
    record_analysis(session, claimed.file_id, claimed.analyzers, analysis, pipeline)
    for task in tasks:
        task.lease_until = None
    return True


def fail_transiently(
    session: Session, claimed: ClaimedFile, worker: str, error: str, max_attempts: int,
    retry_delay: float,
) -> float | None:
    """Count a failure that may pass (Nextcloud away, database locked).

    Returns the seconds until the retry, which the claim waits for; None when the file has
    had its attempts (it goes to the dead-letter state with the error) or the claim was lost.
    """
    tasks = still_held(session, claimed, worker)
    if tasks is None:
        return None
    attempts = claimed.attempts + 1
    delay = min(retry_delay * 2 ** (attempts - 1), MAX_RETRY_DELAY)
    dead = attempts >= max_attempts
    for task in tasks:
        task.attempts = attempts
        task.updated_at = utcnow()
        if dead:
            task.status = TaskStatus.ERROR
            task.error = f"gave up after {attempts} attempts: {error}"
            task.lease_until = None
        else:  # no worker holds it while it waits
            task.error = error
            task.lease_until = datetime.now(UTC) + timedelta(seconds=delay)
            task.worker = None
    return None if dead else delay


def release(session: Session, claimed: ClaimedFile, worker: str) -> None:
    """Give the claim back untouched (the worker stops, or cannot work at all)."""
    session.execute(update(schema.Task).where(
        schema.Task.file_id == claimed.file_id, schema.Task.worker == worker,
        schema.Task.status == TaskStatus.PENDING,
    ).values(lease_until=None))


def revive_dead(session: Session) -> list[int]:
    """Dead-lettered tasks become pending with fresh attempts; returns their file ids."""
    dead = schema.Task.status == TaskStatus.ERROR
    file_ids = sorted(set(session.scalars(select(schema.Task.file_id).where(dead))))
    session.execute(update(schema.Task).where(dead).values(
        status=TaskStatus.PENDING, error=None, attempts=0, lease_until=None
    ))
    return file_ids
