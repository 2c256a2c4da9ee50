"""The ExApp's background work: crawl all users, send what is new to the workers, tag what
they finish, group faces; repeat.

Analysis is done by worker processes (``recognize worker``, :mod:`ex_app.work.worker`)
started here, ``jobs`` of them, on the work queue; workers on other machines may join the
same queue and database. One cycle runs at a time: it reads the admin settings and the
users' choices (opted in or out; read again every few minutes), crawls every opted-in
user's files (at start and after each interval) sending the new and changed files to the
queue as it goes, and until the crawl is done and the workers have no work left for those
users, tags each file in Nextcloud as it is finished and tells each user whose Files menu
request is done what was found. Then faces are regrouped. Files queued by the Files menu
(first) or by webhooks (ahead of the backlog) start a cycle at once that does not crawl.
Quiet hours skip the cycle (and hold the workers back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nc_py_api import AsyncNextcloudApp
from sqlalchemy import select

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.sinks.nextcloud_notifications import FilesRequest, notify, request_summary
from ex_app.sinks.nextcloud_tags import NextcloudTagSink
from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource
from ex_app.store import schema
from ex_app.web.admin_settings import admin_settings, settings_form
from ex_app.web.personal_settings import UserChoice, user_choice
from ex_app.work.nextcloud_scan import (
    NEXTCLOUD_SOURCE,
    busy,
    delete_face_data,
    delete_files,
    finished_count,
    finished_since,
    move_files,
    record_files,
    retag,
    stored_file,
    sync_nextcloud,
    unfinished,
    withdraw_pending,
)
from ex_app.work.progress import measure_progress
from ex_app.work.queue import BACKLOG, NEW, REQUEST
from ex_app.work.scan import SyncReport
from ex_app.work.schedule import in_quiet_hours

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often a cycle looks at what the workers finished
TAG_OVERLAP = timedelta(seconds=30)  # each look also reaches this far behind the last one
WORKER_STOP_SECONDS = 30  # a worker finishes its file in this time after SIGTERM, or is killed


class OptedOut(Exception):
    """The user chose in their personal settings that their files are not analyzed."""


@dataclass
class CycleReport:
    """What one cycle did; ``quiet`` when quiet hours skipped it."""

    quiet: bool = False
    sync: SyncReport | None = None
    processed: int = 0
    persons: int = 0
    opted_out: int = 0  # users whose files were left alone


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment of a worker process: this one's (AppAPI's credentials included) and
    the settings in force, as RECOGNIZE_* variables."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"RECOGNIZE_{name.upper()}"] = text
    return env


class WorkerPool:
    """The ExApp's own worker processes, started on the settings in force."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self._processes: list[subprocess.Popen] = []

    def ensure(self, settings: Settings) -> None:
        """Workers for these settings: started if none run, restarted if the settings changed."""
        if settings != self.settings:
            self.stop()
        self._processes = [p for p in self._processes if p.poll() is None]
        while len(self._processes) < settings.jobs:
            self._processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ex_app", "worker"], env=worker_environment(settings)
                )
            )
        self.settings = settings

    def stop(self) -> None:
        """Let each worker finish its file and stop (killed after WORKER_STOP_SECONDS)."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes = []
        self.settings = None


class RecognizeService:
    """Recognize's work over the whole Nextcloud, driven by an asyncio task."""

    def __init__(self, base: Settings):
        self.base = base
        self.requests: list[FilesRequest] = []  # Files menu requests not yet notified
        self.last_cycle: CycleReport | None = None
        self.cycles = 0  # cycles finished, quiet ones included
        self.last_error: str | None = None
        self.workers = WorkerPool()
        self._engine: Engine | None = None
        self._source: NextcloudSource | None = None
        self._sink: NextcloudTagSink | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._cycle_lock = asyncio.Lock()
        self._names_as_tags = base.person_names_as_tags
        self._regroup_due = False  # faces were deleted outside a cycle
        self._untagged: dict[int, NextcloudFile] = {}  # finished, tagging failed: tried again
        self._opted_out: set[str] = set()  # as of the last cycle
        self._choices: dict[str, UserChoice] = {}  # each user's choice as last read
        self._choices_read = float("-inf")  # when all were read (time.monotonic)
        self._tagged: dict[int, datetime] = {}  # file id: the finish time it was tagged for
        self._tagged_until = datetime.now(UTC)  # every file finished before this is tagged

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background loop (no-op while it runs)."""
        if not self.running:
            self._task = asyncio.create_task(self._loop(), name="recognize")

    async def stop(self) -> None:
        """Cancel the loop, wait for it to end, and stop the workers."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(self.workers.stop)

    def wake(self) -> None:
        """Start the next cycle now rather than after the interval."""
        self._wake.set()

    @property
    def current_engine(self) -> Engine:
        """The last cycle's engine, else one on the ExApp's own settings; no Nextcloud call."""
        if self._engine is None:
            self._engine = Engine(self.base)
        return self._engine

    async def engine(self) -> Engine:
        """The engine for the current admin settings (rebuilt when they change)."""
        settings = await admin_settings(AsyncNextcloudApp(), self.base)
        if self._engine is None or self._engine.settings != settings:
            self._engine = Engine(settings)
            self._source = NextcloudSource(settings.max_download_bytes)
            self._sink = None
        return self._engine

    @property
    def source(self) -> NextcloudSource:
        if self._source is None:
            self._source = NextcloudSource(self.base.max_download_bytes)
        return self._source

    @property
    def sink(self) -> NextcloudTagSink:
        if self._sink is None:
            engine = self.current_engine
            self._sink = NextcloudTagSink(engine.sessions, {engine.settings.sensitive_tag})
        return self._sink

    def choice_changed(self, user: str) -> None:
        """The user saved a new choice here: the next cycle (started now) reads it."""
        self._choices.pop(user, None)
        self.wake()

    async def _read_choice(self, engine: Engine, user: str) -> UserChoice:
        """The user's choice, from Nextcloud; a change from the last one read is acted on:
        the pending work of a user who opted out is withdrawn, and their face data deleted
        (its tags taken off) if they asked."""
        choice = await user_choice(self.source.client(user), engine.settings.users_enabled_by_default)
        if not choice.enabled and self._choices.get(user) != choice:
            await asyncio.to_thread(withdraw_pending, engine.sessions, user)
            if choice.delete_faces:
                had_faces = await asyncio.to_thread(delete_face_data, engine.sessions, user)
                await self._retag(engine, self._stored(engine, had_faces))
        self._choices[user] = choice
        return choice

    async def active_users(self, engine: Engine, users: list[str]) -> list[str]:
        """Those users whose files are analyzed. Choices are read from Nextcloud once every
        user_choice_refresh_seconds (a user's personal settings form saves them there without
        telling the ExApp), and at once for a new user or one who chose on the People page."""
        if time.monotonic() - self._choices_read >= engine.settings.user_choice_refresh_seconds:
            self._choices = {user: self._choices[user] for user in users if user in self._choices}
            self._choices_read = time.monotonic()
            stale = users
        else:
            stale = [user for user in users if user not in self._choices]
        for user in stale:
            await self._read_choice(engine, user)
        return [user for user in users if self._choices[user].enabled]

    async def run_cycle(self, crawl: bool = True) -> CycleReport:
        """Crawl (unless told not to), have the workers analyze the pending files, tag them,
        regroup faces, refresh tags of face photos."""
        async with self._cycle_lock:
            engine = await self.engine()
            settings = engine.settings
            await asyncio.to_thread(self.workers.ensure, settings)  # they keep quiet hours too
            if in_quiet_hours(settings.quiet_hours, datetime.now()):
                return CycleReport(quiet=True)
            started = datetime.now(UTC)
            everyone = await self.source.users()
            users = await self.active_users(engine, everyone)
            returning = [user for user in users if user in self._opted_out]  # crawled now
            self._opted_out = set(everyone) - set(users)
            crawling = None
            if crawl or returning:  # a returning user's withdrawn work is queued again

                def send(fresh: list[int]) -> None:  # each chunk as the walk goes on
                    engine.queue.enqueue_files(engine.sessions, fresh, BACKLOG)

                crawling = asyncio.create_task(sync_nextcloud(
                    engine.sessions, self.source, users if crawl else returning,
                    engine.pipeline, on_chunk=send,
                ))  # fmt: skip
            try:  # what the workers finish is tagged while the walk goes on
                await self._follow_workers(engine, users, crawling)
            finally:
                if crawling is not None and not crawling.done():
                    crawling.cancel()
            sync = crawling.result() if crawling is not None and crawl else None
            processed = finished_count(engine.sessions, started)
            regroup = processed or self._regroup_due
            self._regroup_due = False
            persons = await asyncio.to_thread(engine.regroup) if regroup else 0
            names_changed = settings.person_names_as_tags != self._names_as_tags
            if names_changed or (regroup and settings.person_names_as_tags):
                await self._retag(engine, self._stored(engine, self._face_photos(engine)))
            self._names_as_tags = settings.person_names_as_tags
            await self._notify_finished_requests(engine)
            with engine.sessions() as session:
                progress = measure_progress(session)
            await AsyncNextcloudApp().ui.settings.register_form(settings_form(self.base, progress))
            return CycleReport(
                sync=sync, processed=processed, persons=persons, opted_out=len(everyone) - len(users)
            )

    async def _follow_workers(
        self, engine: Engine, users: list[str], crawling: asyncio.Task | None = None
    ) -> None:
        """Until the crawl (if any) is done and the workers have no work left for these
        users: tag what they finish, tell users whose requests are done."""
        while True:
            walking = crawling is not None and not crawling.done()
            working = busy(engine.sessions, users)  # before tagging: the last file gets tagged
            self._untagged.update(self._newly_finished(engine))
            await self._retag(engine, dict(self._untagged))
            await self._notify_finished_requests(engine)
            if crawling is not None and crawling.done():
                crawling.result()  # a failed crawl fails the cycle
            if not working and not walking:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), WATCH_SECONDS)
                self._wake.clear()
            except TimeoutError:
                pass

    def _newly_finished(self, engine: Engine) -> dict[int, NextcloudFile]:
        """Files finished since the last look and not tagged for that finish yet. The look
        reaches TAG_OVERLAP back, for a worker whose commit came after a later one's."""
        finished = finished_since(engine.sessions, self._tagged_until - TAG_OVERLAP)
        new = {
            file_id: file
            for file_id, (file, at) in finished.items()
            if self._tagged.get(file_id, datetime.min.replace(tzinfo=UTC)) < at
        }
        self._tagged.update({file_id: at for file_id, (_file, at) in finished.items()})
        if finished:
            self._tagged_until = max(self._tagged_until, *(at for _file, at in finished.values()))
        horizon = self._tagged_until - TAG_OVERLAP
        self._tagged = {file_id: at for file_id, at in self._tagged.items() if at >= horizon}
        return new

    async def queue(self, user: str, paths: list[str], request: bool = False) -> int:
        """Record the media at these paths of user's (folders: recursively) and send them to
        the workers, without a crawl; returns how many files were recorded. A Files menu
        ``request`` goes first and ends with a notification to the user; other files (from
        webhooks) go ahead of the backlog.
        Raises OptedOut when the user opted out, FileNotFoundError when user sees no such
        path."""
        engine = await self.engine()
        if not (await self._read_choice(engine, user)).enabled:
            raise OptedOut(f"{user} opted out of Recognize in their personal settings")
        found = [file for path in paths for file in await self.source.media_at(user, path)]
        recorded = record_files(engine.sessions, found, engine.pipeline)
        if request and recorded.remote_ids:
            self.requests.append(FilesRequest(user, frozenset(recorded.remote_ids)))
        await asyncio.to_thread(
            engine.queue.enqueue_files,
            engine.sessions,
            recorded.ids if request else recorded.fresh,
            REQUEST if request else NEW,
        )
        self.wake()
        return len(recorded.remote_ids)

    async def moved(self, user: str, old: str, new: str) -> None:
        """A file or folder of user's was moved within their files: its results follow it."""
        engine = await self.engine()
        move_files(engine.sessions, user, old.strip("/"), new.strip("/"))

    async def deleted(self, user: str, path: str, remote_id: int) -> int:
        """A file or folder of user's was deleted: its faces and results go now; returns how
        many files were forgotten. Persons are regrouped by the next cycle."""
        engine = await self.engine()
        count = delete_files(engine.sessions, user, path.strip("/"), remote_id)
        if count:
            self._regroup_due = True
            self.wake()
        return count

    def _face_photos(self, engine: Engine) -> set[int]:
        """The stored ids of the Nextcloud files with faces."""
        with engine.sessions() as session:
            return set(
                session.scalars(
                    select(schema.File.id)
                    .join(schema.Root)
                    .join(schema.Face)
                    .where(schema.Root.source == NEXTCLOUD_SOURCE)
                    .distinct()
                )
            )

    def _stored(self, engine: Engine, file_ids: set[int]) -> dict[int, NextcloudFile]:
        """The Nextcloud files these stored ids stand for."""
        with engine.sessions() as session:
            rows = session.execute(
                select(schema.File, schema.Root.location)
                .join(schema.Root)
                .where(schema.File.id.in_(file_ids), schema.File.remote_id.is_not(None))
            ).all()
        return {row.id: stored_file(user, row) for row, user in rows}

    async def _retag(self, engine: Engine, files: dict[int, NextcloudFile]) -> None:
        """Make these stored files' tags in Nextcloud match the store; those that fail (say,
        Nextcloud away) are tried again in a while."""
        names = engine.settings.person_names_as_tags
        for file_id, file in files.items():
            try:
                await retag(engine.sessions, self.source, self.sink, file_id, file, names)
            except Exception as error:  # noqa: BLE001 (Nextcloud away: the next look tries again)
                log.warning("tagging %s of %s failed: %s", file.path, file.user, error)
                self._untagged[file_id] = file
            else:
                self._untagged.pop(file_id, None)

    async def _notify_finished_requests(self, engine: Engine) -> None:
        """Tell each user whose Files menu request has no work left what was found."""
        for request in list(self.requests):
            if unfinished(engine.sessions, request.remote_ids):
                continue
            subject, message = request_summary(engine.sessions, request.remote_ids)
            await notify(AsyncNextcloudApp(user=request.user), subject, message)
            self.requests.remove(request)

    async def _loop(self) -> None:
        """A crawl at start and an interval after each one; in between, cycles that only
        follow what the Files action and webhooks queued. A wake runs such a cycle at once and
        leaves the time of the next crawl as it was."""
        crawl_due = True  # a crawl that failed or met quiet hours is due until one is done
        next_crawl = time.monotonic()
        while True:
            self._wake.clear()
            crawl = crawl_due or time.monotonic() >= next_crawl
            try:
                self.last_cycle = await self.run_cycle(crawl=crawl)
                crawl_due = crawl and self.last_cycle.sync is None
                self.last_error = None
                self.cycles += 1
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Nextcloud away, a bug: log it, try again later
                log.exception("recognize cycle failed")
                self.last_error = f"{type(error).__name__}: {error}"
                crawl_due = crawl
            if crawl:
                interval = self._engine.settings.crawl_interval_seconds if self._engine else 60
                next_crawl = time.monotonic() + interval
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_crawl - time.monotonic()))
            except TimeoutError:
                pass
