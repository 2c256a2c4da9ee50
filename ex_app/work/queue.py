"""The work queue: messages "analyze these files", carried by huey between any number of workers.

The store's tasks table stays the truth about each file's work (pending, done, error); the
queue is only the transport. A message names a batch of files that need the same analyzers
(so the same models), with a priority: Files-menu requests (:data:`REQUEST`) go before the
backlog (:data:`BACKLOG`). Delivery is at least once: a worker claims a file's tasks in the
store before working on them (:mod:`ex_app.work.claims`), so a message delivered twice, or a
file named by two messages, is analyzed once. Work whose message was lost (a worker killed
after taking it) is found again by :meth:`WorkQueue.requeue_lost`.

Backends, by URL: ``sqlite:///PATH`` (the default, a file in the data folder: one machine)
and ``redis://HOST:PORT/DB`` (workers on several machines join it).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from huey import Huey
from huey.storage import PriorityRedisStorage, SqliteStorage
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ex_app.config import Settings
from ex_app.store import schema
from ex_app.store.schema import TaskStatus

BACKLOG = 0  # files found by a crawl or a scan
NEW = 5  # files Nextcloud told of (webhooks: uploads, changes): before the backlog
REQUEST = 10  # files a user asked for (the Files menu): before any backlog
QUEUE_NAME = "recognize"
TASK_NAME = "analyze_files"
PAUSED_KEY = "recognize.paused"

Handler = Callable[[list[int], int], None]
WORK = (schema.Task.file_id, schema.Task.analyzer, schema.Task.priority)  # what _send_grouped takes


def open_huey(url: str, idle_seconds: float) -> Huey:
    """A huey instance on the backend the URL names; Redis waits for messages, not polls."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return Huey(QUEUE_NAME, results=False, storage_class=SqliteStorage, filename=str(path), timeout=30)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return Huey(QUEUE_NAME, results=False, storage_class=PriorityRedisStorage, url=url,
                    blocking=True, read_timeout=max(1, int(idle_seconds)))
    raise ValueError(f"unsupported queue URL {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")


class WorkQueue:
    """Sending files to the workers, taking messages off, pausing all workers at once."""

    def __init__(self, settings: Settings):
        self.huey = open_huey(settings.resolved_queue_url, settings.queue.idle_poll_seconds)
        self.blocking = bool(getattr(self.huey.storage, "blocking", False))
        self.batch_size = settings.queue.batch_size
        self.sent = threading.Event()  # set on each send: wakes a worker of this process
        self._handler: Handler | None = None
        self._task = self.huey.task(name=TASK_NAME)(self._dispatch)

    def _dispatch(self, file_ids: list[int], priority: int) -> None:
        if self._handler is None:
            raise RuntimeError("this process does not serve the queue")
        self._handler(file_ids, priority)

    def serve(self, handler: Handler) -> None:
        """Route the messages ``huey.execute`` runs to handler(file_ids, priority)."""
        self._handler = handler

    # Sending.

    def send(self, file_ids: list[int], priority: int = BACKLOG, delay: float | None = None) -> None:
        """Messages for these files (one model set), in batches; delayed ones wait in huey's schedule."""
        for start in range(0, len(file_ids), self.batch_size):
            batch = file_ids[start : start + self.batch_size]
            message = self._task.s(batch, priority, priority=priority, delay=delay)
            if delay:
                self.huey.add_schedule(message)
            else:
                self.huey.enqueue(message)
        self.sent.set()

    def enqueue_files(
        self, sessions: sessionmaker[Session], file_ids: Iterable[int], priority: int = BACKLOG
    ) -> int:
        """Send the pending tasks of these files, at this priority or their own higher one.

        Returns how many files were sent. Files already claimed by a worker are left to it.
        """
        ids = list(file_ids)
        with sessions.begin() as session:
            work: list[tuple[int, str, int]] = []
            for start in range(0, len(ids), 500):
                pending = (
                    schema.Task.file_id.in_(ids[start : start + 500]),
                    schema.Task.status == TaskStatus.PENDING,
                )
                session.execute(update(schema.Task).where(*pending, schema.Task.priority < priority)
                                .values(priority=priority))
                work += session.execute(
                    select(*WORK).where(*pending, schema.Task.lease_until.is_(None))
                ).all()
        return self._send_grouped(work)

    def enqueue_pending(
        self, sessions: sessionmaker[Session], root_id: int | None = None, skip: Iterable[int] = ()
    ) -> int:
        """Send every pending, unclaimed task (of one root, or all); returns how many files."""
        skipped = set(skip)
        query = select(*WORK).where(
            schema.Task.status == TaskStatus.PENDING, schema.Task.lease_until.is_(None)
        )
        if root_id is not None:
            query = query.join(schema.File).where(schema.File.root_id == root_id)
        with sessions() as session:
            work = [row for row in session.execute(query) if row[0] not in skipped]
        return self._send_grouped(work)

    def _send_grouped(self, work: Iterable[tuple[int, str, int]]) -> int:
        """Send (file id, analyzer, priority) rows as messages of files with the same analyzers."""
        per_file: dict[int, tuple[set[str], int]] = {}
        for file_id, analyzer, priority in work:
            analyzers, known = per_file.setdefault(file_id, (set(), priority))
            analyzers.add(analyzer)
            per_file[file_id] = (analyzers, max(known, priority))
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = defaultdict(list)
        for file_id, (analyzers, priority) in sorted(per_file.items()):
            groups[(priority, tuple(sorted(analyzers)))].append(file_id)
        for (priority, _), ids in sorted(groups.items(), reverse=True):
            self.send(ids, priority)
        return len(per_file)

    def requeue_lost(self, sessions: sessionmaker[Session], now: datetime | None = None) -> int:
        """Send again the work no message stands for; returns how many files.

        That is the tasks whose claim ran out or whose worker's process on this host ended
        (killed, say), a retry whose message was lost, and, when the queue and schedule are
        both empty, every pending unclaimed task (a message taken by a worker that died
        before claiming). A duplicate message is harmless.
        """
        from ex_app.work.claims import worker_gone  # claims loads the analyzers: only here

        now = now or datetime.now(UTC)
        with sessions.begin() as session:
            held = session.execute(
                select(schema.Task.id, *WORK, schema.Task.lease_until, schema.Task.worker).where(
                    schema.Task.status == TaskStatus.PENDING, schema.Task.lease_until.is_not(None)
                )
            ).all()
            lost = [row for row in held if _as_utc(row.lease_until) < now or worker_gone(row.worker)]
            for start in range(0, len(lost), 500):
                chunk = [row.id for row in lost[start : start + 500]]
                session.execute(
                    update(schema.Task).where(schema.Task.id.in_(chunk)).values(lease_until=None)
                )
        sent = self._send_grouped((row.file_id, row.analyzer, row.priority) for row in lost)
        if self.huey.pending_count() == 0 and self.huey.scheduled_count() == 0:
            sent += self.enqueue_pending(sessions, skip=(row.file_id for row in lost))
        return sent

    # Taking messages.

    def move_due_retries(self) -> None:
        """Put the scheduled messages whose time has come into the queue."""
        for message in self.huey.read_schedule():
            self.huey.enqueue(message)

    def take(self):
        """The next message, or None (the Redis backend waits up to idle_poll_seconds)."""
        return self.huey.dequeue()

    def waiting_priority(self) -> int | None:
        """The priority of the first message waiting, or None when none waits."""
        first = self.huey.storage.enqueued_items(1)
        return (self.huey.deserialize_task(first[0]).priority or 0) if first else None

    def backlog(self) -> tuple[int, int]:
        """(messages waiting, messages scheduled for later)."""
        return self.huey.pending_count(), self.huey.scheduled_count()

    # Pausing every worker that shares this queue.

    def pause(self) -> None:
        self.huey.put(PAUSED_KEY, True)

    def resume(self) -> None:
        self.huey.delete(PAUSED_KEY)

    @property
    def paused(self) -> bool:
        return bool(self.huey.get(PAUSED_KEY, peek=True))


def _as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
