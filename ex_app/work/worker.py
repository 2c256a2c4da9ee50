"""Workers: take messages off the queue, claim each file, fetch, analyze, record.

What differs between sources is the fetcher (:mod:`ex_app.sources.fetch`): it gives a local
path for a claimed file (a local root: the file itself; Nextcloud: a download to a temporary
file) and raises :class:`TransientError` for failures that may pass (a 5xx answer, a lost
connection).

A worker hands back, untouched, the files of sources its fetcher does not know (they wait
for a worker that does), so local scans and Nextcloud work can share one queue.

Errors are sorted once: a :class:`MediaError` (a bad file), the per-file time limit and
bugs are permanent (the file goes to the dead-letter state at once, with the reason);
:class:`TransientError`, ``OSError`` and a locked or unreachable database are retried with
a doubling delay, and dead-lettered after ``max_attempts``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ex_app.analyzers.pipeline import Pipeline
from ex_app.analyzers.registry import EMBEDDINGS
from ex_app.analyzers.results import FileAnalysis, StoredFace
from ex_app.config import QueueSettings, Settings
from ex_app.media.errors import MediaError
from ex_app.models.store import ModelUnavailable
from ex_app.sources.fetch import FileFetcher, SourcesFetcher, TransientError
from ex_app.sources.local import LocalFetcher
from ex_app.store.reembed import stored_faces
from ex_app.work import claims
from ex_app.work.claims import ClaimedFile
from ex_app.work.neighbour import CpuBudget, FileTimeLimit, cpu_budget, time_limit
from ex_app.work.queue import WorkQueue
from ex_app.work.schedule import in_quiet_hours

log = logging.getLogger(__name__)


@dataclass
class Processed:
    """What processing a claimed file came to."""

    recorded: bool  # its results (or permanent error) are in the store
    retry_in: float | None = None  # seconds until it is tried again, after a failure that may pass
    failed: bool = False  # recorded with a permanent error (a bad file, the time limit)


@dataclass
class FileProcessor:
    """One file from claim to recorded outcome; the same for a queue worker and a direct run."""

    sessions: sessionmaker[Session]
    pipeline: Pipeline
    fetcher: FileFetcher
    queue: QueueSettings  # the lease, the time limit, the attempts and their delay
    cpu: CpuBudget
    name: str = field(default_factory=claims.worker_name)

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: sessionmaker[Session], pipeline: Pipeline, fetcher: FileFetcher
    ) -> FileProcessor:
        return cls(sessions, pipeline, fetcher, settings.queue, cpu_budget(settings))

    def claim(self, file_id: int) -> ClaimedFile | None:
        lease = timedelta(seconds=self.queue.lease_seconds)
        with self.sessions.begin() as session:
            return claims.claim_file(session, file_id, self.name, lease)

    def process(self, claimed: ClaimedFile) -> Processed:
        """Fetch, analyze and record a claimed file."""
        try:
            stored = ()
            if EMBEDDINGS in claimed.analyzers:
                with self.sessions() as session:
                    stored = tuple(stored_faces(session, claimed.file_id))
            with self.fetcher.fetch(claimed) as path:
                analysis: FileAnalysis | str = self._analyze(path, claimed.analyzers, stored)
        except (TransientError, OSError, OperationalError) as error:
            log.warning("%s failed, may retry: %s", claimed.path, error)
            with self.sessions.begin() as session:
                delay = claims.fail_transiently(
                    session, claimed, self.name, _reason(error), self.queue.max_attempts,
                    self.queue.retry_delay_seconds,
                )
            return Processed(recorded=False, retry_in=delay)
        except MediaError as error:
            analysis = str(error)
        except ModelUnavailable:
            self.release(claimed)
            raise
        with self.sessions.begin() as session:
            recorded = claims.finish(session, claimed, self.name, analysis, self.pipeline)
        return Processed(recorded=recorded, failed=recorded and isinstance(analysis, str))

    def _analyze(
        self, path: Path, analyzers: tuple[str, ...], stored: tuple[StoredFace, ...] = ()
    ) -> FileAnalysis | str:
        """The analysis, or the permanent error to record (time limit, memory, a bug);
        ``stored``: the file's faces, for embedding them again."""
        try:
            with self.cpu.slot(), time_limit(self.queue.file_time_limit_seconds):
                return self.pipeline.analyze(path, analyzers, stored)
        except (FileTimeLimit, MemoryError) as error:
            return f"{type(error).__name__}: {error}"
        except (MediaError, ModelUnavailable, OSError, TransientError):
            raise
        except Exception as error:  # a bug must not stop the worker; the file keeps the reason
            log.exception("analyzing %s failed", path)
            return f"internal error: {type(error).__name__}: {error}"

    def release(self, claimed: ClaimedFile) -> None:
        with self.sessions.begin() as session:
            claims.release(session, claimed, self.name)


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, TransientError) else f"{type(error).__name__}: {error}"


def worker_fetcher(settings: Settings) -> FileFetcher:
    """What a worker process fetches with: local files, and Nextcloud's when this process has
    AppAPI's credentials (the ExApp's container, or a machine given the same variables)."""
    fetchers: list[FileFetcher] = [LocalFetcher()]
    if os.environ.get("NEXTCLOUD_URL") and os.environ.get("APP_SECRET"):
        from ex_app.sources.nextcloud import NextcloudFetcher  # nc_py_api: only where used

        fetchers.append(NextcloudFetcher(settings.nextcloud.max_download_bytes))
    return SourcesFetcher(*fetchers)


class Worker:
    """The loop of one worker process: messages off the queue until told to stop."""

    def __init__(
        self, settings: Settings, queue: WorkQueue, processor: FileProcessor, *,
        obey_schedule: bool = True, on_file_done: Callable[[str], None] = lambda path: None,
    ):
        self.settings = settings
        self.queue = queue
        self.processor = processor
        self.obey_schedule = obey_schedule
        self.on_file_done = on_file_done
        self.processed = 0  # files recorded by this worker (failed ones included)
        self.failed = 0  # of them, recorded with a permanent error
        self.stopping = threading.Event()
        self.fatal: Exception | None = None  # what stopped the worker, raised by run()
        self._held_back: str | None = None
        self._next_requeue = 0.0  # monotonic time of the next look for lost work
        self._idle = 0.1  # seconds of the next wait on an empty queue (doubling)
        queue.serve(self._run_batch)

    @property
    def name(self) -> str:
        return self.processor.name

    def stop_on_signals(self) -> None:
        """SIGTERM and SIGINT finish the current file, hand the rest back and stop."""
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: self.stopping.set())

    def held_back(self) -> str | None:
        """Why work waits now ("paused", "quiet hours"), or None."""
        if not self.obey_schedule:
            return None
        if in_quiet_hours(self.settings.worker.quiet_hours, datetime.now()):
            return "quiet hours"
        return "paused" if self.queue.paused else None

    def run(self, until: Callable[[], bool] | None = None) -> int:
        """Work until stopped (or until ``until()`` says so); returns the files analyzed.

        The queue or database being away (a Redis restart, say) is logged and waited out.
        """
        log.info("worker %s started", self.name)
        while not self.stopping.is_set():
            try:
                if self._step(until):
                    break
            except Exception:  # the backend away, or a bug: the worker stays up
                log.exception("worker %s: trying again in %g s", self.name, self.settings.queue.idle_poll_seconds)
                self.stopping.wait(self.settings.queue.idle_poll_seconds)
        log.info("worker %s stopped after %d files", self.name, self.processed)
        if self.fatal is not None:
            raise self.fatal
        return self.processed

    def _step(self, until: Callable[[], bool] | None) -> bool:
        """Run one message, or wait a while for one; True when ``until()`` says stop."""
        reason = self.held_back()
        if reason != self._held_back:
            log.warning("worker %s: %s", self.name, reason or "working")
            self._held_back = reason
        if reason:
            self.stopping.wait(self.settings.queue.idle_poll_seconds)
            return False
        if time.monotonic() >= self._next_requeue:
            self.queue.requeue_lost(self.processor.sessions)
            self._next_requeue = time.monotonic() + self.settings.queue.requeue_interval_seconds
        self.queue.move_due_retries()
        message = self.queue.take()
        if message is not None:
            self._idle = 0.1
            self.queue.huey.execute(message)
            return False
        if until is not None and until():
            return True
        if not self.queue.blocking:  # the Redis backend already waited in take()
            self.queue.sent.clear()
            self.queue.sent.wait(self._idle)
            self._idle = min(self._idle * 2, self.settings.queue.idle_poll_seconds)
        return False

    def _run_batch(self, file_ids: list[int], priority: int) -> None:
        """Claim and process the message's files one by one; what is left when the worker
        must stop, or when a more urgent message waits, goes back to the queue."""
        for index, file_id in enumerate(file_ids):
            if self._must_yield(priority):
                self.queue.send(file_ids[index:], priority)
                return
            claimed = self.processor.claim(file_id)
            if claimed is None:
                continue  # done, or held by another worker
            if claimed.source not in self.processor.fetcher.sources:  # for another worker
                self.processor.release(claimed)
                self.queue.send([file_id], priority, delay=self.settings.queue.idle_poll_seconds)
                continue
            try:
                processed = self.processor.process(claimed)
            except ModelUnavailable as error:  # no file can be analyzed here: stop
                self.queue.send(file_ids[index:], priority)
                self.fatal = error
                self.stopping.set()
                return
            if processed.retry_in is not None:
                self.queue.send([file_id], claimed.priority, delay=processed.retry_in)
            if processed.recorded:
                self.processed += 1
                self.failed += processed.failed
                self.on_file_done(claimed.path)

    def _must_yield(self, priority: int) -> bool:
        if self.stopping.is_set() or self.held_back():
            return True
        waiting = self.queue.waiting_priority()
        return waiting is not None and waiting > priority
