"""The ExApp's background work, one cycle at a time: crawl the opted-in users' files (at
start and after each interval) sending what is new to the workers
(:mod:`ex_app.service.worker_pool`), drain the outbox (:mod:`ex_app.store.outbox`: tags,
Files menu notifications) while they work, regroup faces. Files queued by the Files menu or
by webhooks start a cycle at once that does not crawl. Quiet hours skip the cycle (and hold
the workers back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from datetime import datetime

from nc_py_api import AsyncNextcloudApp
from nc_py_api.ex_app.ui.settings import SettingsForm

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.service.nextcloud_settings import UserChoice, admin_settings, user_choice
from ex_app.service.worker_pool import WorkerPool
from ex_app.sinks import nextcloud_notifications
from ex_app.sinks.nextcloud_tags import NextcloudTagSink
from ex_app.sources.nextcloud import NextcloudSource, NextcloudUsers
from ex_app.sources.sync import sync
from ex_app.store import outbox
from ex_app.store.files import (
    SyncReport, delete_files, move_files, record_files, withdraw_pending, work_left,
)
from ex_app.store.progress import measure_progress
from ex_app.store.results import delete_face_data
from ex_app.work.queue import BACKLOG, NEW, REQUEST
from ex_app.work.schedule import in_quiet_hours

log = logging.getLogger(__name__)

DRAIN_SECONDS = 1.0  # how often a cycle drains the outbox while the workers have work
RETRY_SECONDS = 60.0  # when a first cycle that never reached Nextcloud is tried again

AdminForm = Callable[[Settings, str | None], SettingsForm]  # (defaults, progress line)


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


class RecognizeService:
    """Recognize's work over the whole Nextcloud, driven by an asyncio task. ``admin_form``
    is the admin settings form: its fields are read as the admin settings, and it is
    registered again after each cycle with the progress."""

    def __init__(self, base: Settings, admin_form: AdminForm):
        self.base = base
        self.admin_form = admin_form
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
        self._names_as_tags = base.nextcloud.person_names_as_tags
        self._regroup_due = False  # faces were deleted outside a cycle
        self._opted_out: set[str] = set()  # as of the last cycle
        self._choices: dict[str, UserChoice] = {}  # each user's choice as last read
        self._choices_read = float("-inf")  # when all were read (time.monotonic)

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
        form = self.admin_form(self.base, None)
        settings = await admin_settings(AsyncNextcloudApp(), self.base, form)
        if self._engine is None or self._engine.settings != settings:
            self._engine = Engine(settings)
            self._source = NextcloudSource(settings.nextcloud.max_download_bytes)
            self._sink = None
        return self._engine

    @property
    def source(self) -> NextcloudSource:
        if self._source is None:
            self._source = NextcloudSource(self.base.nextcloud.max_download_bytes)
        return self._source

    @property
    def sink(self) -> NextcloudTagSink:
        if self._sink is None:
            engine = self.current_engine
            self._sink = NextcloudTagSink(engine.sessions, {engine.settings.sensitive.tag})
        return self._sink

    def choice_changed(self, user: str) -> None:
        """The user saved a new choice here: the next cycle (started now) reads it."""
        self._choices.pop(user, None)
        self.wake()

    async def _read_choice(self, engine: Engine, user: str) -> UserChoice:
        """The user's choice, from Nextcloud; a change from the last one read is acted on:
        the pending work of a user who opted out is withdrawn, and their face data deleted
        (its tags taken off by the next drain) if they asked."""
        choice = await user_choice(self.source.client(user), engine.settings.nextcloud.users_enabled_by_default)
        if not choice.enabled and self._choices.get(user) != choice:
            await asyncio.to_thread(withdraw_pending, engine.sessions, user)
            if choice.delete_faces:
                await asyncio.to_thread(delete_face_data, engine.sessions, user)
        self._choices[user] = choice
        return choice

    async def active_users(self, engine: Engine, users: list[str]) -> list[str]:
        """Those users whose files are analyzed. Choices are read from Nextcloud once every
        user_choice_refresh_seconds (a user's personal settings form saves them there without
        telling the ExApp), and at once for a new user or one who chose on the People page."""
        if time.monotonic() - self._choices_read >= engine.settings.nextcloud.user_choice_refresh_seconds:
            self._choices = {user: self._choices[user] for user in users if user in self._choices}
            self._choices_read = time.monotonic()
            stale = users
        else:
            stale = [user for user in users if user not in self._choices]
        for user in stale:
            await self._read_choice(engine, user)
        return [user for user in users if self._choices[user].enabled]

    async def run_cycle(self, crawl: bool = True, follow_until: float | None = None) -> CycleReport:
        """Crawl (unless told not to), have the workers analyze the pending files, drain the
        outbox while they do, regroup faces, drain what that marked.

        The workers are followed until they have nothing left or, once the crawl is done,
        until ``follow_until`` (a ``time.monotonic()`` time): a backlog of hours is taken in
        turns, each ending with a regrouping and the admin form's progress, and the next
        crawl comes at its interval."""
        async with self._cycle_lock:
            engine = await self.engine()
            settings = engine.settings
            await asyncio.to_thread(self.workers.ensure, settings)  # they keep quiet hours too
            if in_quiet_hours(settings.worker.quiet_hours, datetime.now()):
                return CycleReport(quiet=True)
            between = await self._drain(engine)  # what was marked since the last cycle
            everyone = await self.source.users()
            users = await self.active_users(engine, everyone)
            returning = [user for user in users if user in self._opted_out]  # crawled now
            self._opted_out = set(everyone) - set(users)
            crawling = None
            if crawl or returning:  # a returning user's withdrawn work is queued again
                walked = NextcloudUsers(self.source, users if crawl else returning)
                crawling = asyncio.create_task(sync(  # each chunk is queued as the walk goes on
                    engine.sessions, walked, engine.pipeline,
                    on_chunk=partial(engine.queue.enqueue_files, engine.sessions, priority=BACKLOG),
                ))  # fmt: skip
            try:  # what the workers finish is tagged while the walk goes on
                processed = await self._follow_workers(engine, users, crawling, follow_until)
            finally:
                if crawling is not None and not crawling.done():
                    crawling.cancel()
            synced = crawling.result() if crawling is not None and crawl else None
            regroup = processed or between or self._regroup_due
            self._regroup_due = False
            persons = await asyncio.to_thread(engine.regroup) if regroup else 0
            if settings.nextcloud.person_names_as_tags != self._names_as_tags:
                with engine.sessions.begin() as session:  # names come or go on every such file
                    outbox.mark(session, outbox.TAGS, outbox.person_tags(session))
                self._names_as_tags = settings.nextcloud.person_names_as_tags
            await self._drain(engine)
            with engine.sessions() as session:  # the admin form tells the work's state
                progress = "; ".join(p.line() for p in measure_progress(session)) or "nothing analyzed yet"
            form = self.admin_form(self.base, f"Progress: {progress}.")
            await AsyncNextcloudApp().ui.settings.register_form(form)
            return CycleReport(sync=synced, processed=processed, persons=persons,
                               opted_out=len(everyone) - len(users))

    async def _follow_workers(
        self, engine: Engine, users: list[str], crawling: asyncio.Task | None, until: float | None
    ) -> int:
        """Until the crawl (if any) is done and the workers have no work left for these
        users, or it is ``until``: drain the outbox. Returns how many files' tags were drained."""
        drained = 0
        while True:
            walking = crawling is not None and not crawling.done()
            # before draining: the last file is drained
            working = work_left(engine.sessions, users=users, ready_only=True)
            drained += await self._drain(engine)
            if crawling is not None and crawling.done():
                crawling.result()  # a failed crawl fails the cycle
            if not walking and (not working or (until is not None and time.monotonic() >= until)):
                return drained
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), DRAIN_SECONDS)
                self._wake.clear()

    async def _drain(self, engine: Engine) -> int:
        """Tag the files marked for it, tell the users whose requests are done; returns how
        many files' tags were drained. Failed Nextcloud calls leave their marks for later."""
        settings = engine.settings
        drained = await self.sink.drain(
            self.source.client, settings.nextcloud.person_names_as_tags, settings.queue.retry_delay_seconds
        )
        await nextcloud_notifications.drain(engine.sessions, settings.queue.retry_delay_seconds)
        return drained

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
        source = NextcloudUsers(self.source, [user])
        recorded = record_files(engine.sessions, source, found, engine.pipeline)
        if request and recorded.ids:
            with engine.sessions.begin() as session:
                outbox.mark_request(session, user, recorded.ids)
        ids, priority = (recorded.ids, REQUEST) if request else (recorded.fresh, NEW)
        await asyncio.to_thread(engine.queue.enqueue_files, engine.sessions, ids, priority)
        self.wake()
        return len(recorded.remote_ids)

    async def moved(self, user: str, old: str, new: str) -> None:
        """A file or folder of user's was moved within their files: its results follow it."""
        move_files((await self.engine()).sessions, user, old.strip("/"), new.strip("/"))

    async def deleted(self, user: str, path: str, remote_id: int) -> int:
        """A file or folder of user's was deleted: its faces and results go now; returns how
        many files were forgotten. Persons are regrouped by the next cycle."""
        count = delete_files((await self.engine()).sessions, user, path.strip("/"), remote_id)
        if count:
            self._regroup_due = True
            self.wake()
        return count

    async def _loop(self) -> None:
        """A crawl at start and then one an interval after each crawl began; in between,
        cycles that follow what the crawl, the Files action and webhooks queued. A cycle ends
        when the next crawl is due even if the workers are still busy, so a long backlog does
        not hold back crawls (files deleted or added without an event), regroupings and the
        progress. A wake runs a cycle at once and leaves the time of the next crawl as it was."""
        crawl_due = True  # a crawl that failed or met quiet hours is due until one is done
        next_crawl = time.monotonic()
        while True:
            self._wake.clear()
            started = time.monotonic()
            crawl = crawl_due or started >= next_crawl
            if crawl:  # the interval is not an admin-form setting: the base settings hold it
                next_crawl = started + self.base.nextcloud.crawl_interval_seconds
            try:
                self.last_cycle = await self.run_cycle(crawl=crawl, follow_until=next_crawl)
                crawl_due = crawl and self.last_cycle.sync is None
                self.last_error = None
                self.cycles += 1
            except Exception as error:  # Nextcloud away, a bug: log it, try again later
                log.exception("recognize cycle failed")
                self.last_error = f"{type(error).__name__}: {error}"
                crawl_due = crawl
                if crawl and self._engine is None:  # Nextcloud never reached: sooner
                    next_crawl = started + RETRY_SECONDS
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_crawl - time.monotonic()))
