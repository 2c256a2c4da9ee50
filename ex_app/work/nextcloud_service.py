"""The ExApp's background work: crawl all users, analyze what is new, group, tag; repeat.

One cycle runs at a time. A full cycle crawls every user's files first; it runs at start
and after each interval. Files queued by the Files menu action or by webhooks start a
cycle at once that only processes what is pending; Files menu requests go ahead of the
backlog, and the user gets a notification when their request is done. Admin settings and
each user's choice (personal settings: opted in or out) are read at the start of each
cycle; quiet hours skip the cycle. Stopping cancels the cycle: a file being analyzed keeps
its pending task and is done by the next start.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from nc_py_api import AsyncNextcloudApp
from sqlalchemy import select

from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.sinks.nextcloud_notifications import FilesRequest, notify, request_summary
from ex_app.sinks.nextcloud_tags import NextcloudTagSink
from ex_app.sources.nextcloud import NextcloudSource
from ex_app.store import schema
from ex_app.web.admin_settings import admin_settings
from ex_app.web.personal_settings import user_choice
from ex_app.work.nextcloud_scan import (
    NEXTCLOUD_SOURCE,
    NextcloudProcessor,
    delete_face_data,
    delete_files,
    move_files,
    record_files,
    stored_file,
    sync_nextcloud,
    unfinished,
)
from ex_app.work.scan import SyncReport

log = logging.getLogger(__name__)


class OptedOut(Exception):
    """The user chose in their personal settings that their files are not analyzed."""


def in_quiet_hours(quiet_hours: str, now: datetime) -> bool:
    """Whether now falls in "start-end" hours (end excluded; "22-6" spans midnight)."""
    if not quiet_hours:
        return False
    start, end = (int(hour) for hour in quiet_hours.split("-"))
    if start <= end:
        return start <= now.hour < end
    return now.hour >= start or now.hour < end


@dataclass
class CycleReport:
    """What one cycle did; ``quiet`` when quiet hours skipped it."""

    quiet: bool = False
    sync: SyncReport | None = None
    processed: int = 0
    persons: int = 0
    opted_out: int = 0  # users whose files were left alone


class RecognizeService:
    """Recognize's work over the whole Nextcloud, driven by an asyncio task."""

    def __init__(self, base: Settings):
        self.base = base
        self.requests: list[FilesRequest] = []  # Files menu requests not yet notified
        self.last_cycle: CycleReport | None = None
        self.cycles = 0  # cycles finished, quiet ones included
        self.last_error: str | None = None
        self._engine: Engine | None = None
        self._regroup_due = False  # faces were deleted outside a cycle
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._cycle_lock = asyncio.Lock()
        self._names_as_tags = base.person_names_as_tags

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background loop (no-op while it runs)."""
        if not self.running:
            self._task = asyncio.create_task(self._loop(), name="recognize")

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

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
        return self._engine

    def processor(self, engine: Engine) -> NextcloudProcessor:
        settings = engine.settings
        return NextcloudProcessor(
            sessions=engine.sessions,
            source=NextcloudSource(settings.max_download_bytes),
            pipeline=engine.pipeline,
            sink=NextcloudTagSink(engine.sessions),
            jobs=settings.jobs,
            person_names_as_tags=settings.person_names_as_tags,
        )

    def urgent(self) -> frozenset[int]:
        """The file ids of the open Files menu requests."""
        return frozenset(i for request in self.requests for i in request.remote_ids)

    async def active_users(
        self, engine: Engine, processor: NextcloudProcessor, users: list[str]
    ) -> list[str]:
        """Those users whose files are analyzed; the face data of users who opted out and
        asked for it is deleted (and its tags taken off)."""
        active = []
        for user in users:
            client = processor.source.client(user)
            choice = await user_choice(client, engine.settings.users_enabled_by_default)
            if choice.enabled:
                active.append(user)
            elif choice.delete_faces:
                had_faces = await asyncio.to_thread(delete_face_data, engine.sessions, user)
                await self._retag(engine, processor, had_faces)
        return active

    async def run_cycle(self, crawl: bool = True) -> CycleReport:
        """Crawl (unless told not to), analyze the pending files, regroup faces, refresh tags
        of face photos."""
        async with self._cycle_lock:
            engine = await self.engine()
            settings = engine.settings
            if in_quiet_hours(settings.quiet_hours, datetime.now()):
                return CycleReport(quiet=True)
            processor = self.processor(engine)
            everyone = await processor.source.users()
            users = await self.active_users(engine, processor, everyone)
            sync = None
            if crawl:
                sync = await sync_nextcloud(engine.sessions, processor.source, users, engine.pipeline)
            processed = await processor.process(users, self.urgent)
            regroup = processed or self._regroup_due
            self._regroup_due = False
            persons = await asyncio.to_thread(engine.regroup) if regroup else 0
            names_changed = settings.person_names_as_tags != self._names_as_tags
            if names_changed or (regroup and settings.person_names_as_tags):
                await self._retag(engine, processor, self._face_photos(engine))
            self._names_as_tags = settings.person_names_as_tags
            await self._notify_finished_requests(engine)
            return CycleReport(
                sync=sync,
                processed=processed,
                persons=persons,
                opted_out=len(everyone) - len(users),
            )

    async def queue(self, user: str, paths: list[str], request: bool = False) -> int:
        """Record the media at these paths of user's (folders: recursively) and process them
        soon, without a crawl; returns how many files were recorded. A Files menu
        ``request`` goes ahead of the backlog and ends with a notification to the user.
        Raises OptedOut when the user opted out."""
        engine = await self.engine()
        source = NextcloudSource(engine.settings.max_download_bytes)
        if not (await user_choice(source.client(user), engine.settings.users_enabled_by_default)).enabled:
            raise OptedOut(f"{user} opted out of Recognize in their personal settings")
        found = [file for path in paths for file in await source.media_at(user, path)]
        _, recorded = record_files(engine.sessions, found, engine.pipeline)
        if request and recorded:
            self.requests.append(FilesRequest(user, frozenset(recorded)))
        self.wake()
        return len(recorded)

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

    async def _retag(self, engine: Engine, processor: NextcloudProcessor, file_ids: set[int]) -> None:
        """Make these stored files' tags in Nextcloud match the store."""
        with engine.sessions() as session:
            rows = session.execute(
                select(schema.File, schema.Root.location)
                .join(schema.Root)
                .where(schema.File.id.in_(file_ids), schema.File.remote_id.is_not(None))
            ).all()
        for row, user in rows:
            await processor.retag(row.id, stored_file(user, row))

    async def _notify_finished_requests(self, engine: Engine) -> None:
        """Tell each user whose Files menu request has no work left what was found."""
        for request in list(self.requests):
            if unfinished(engine.sessions, request.remote_ids):
                continue
            subject, message = request_summary(engine.sessions, request.remote_ids)
            await notify(AsyncNextcloudApp(user=request.user), subject, message)
            self.requests.remove(request)

    async def _loop(self) -> None:
        """A crawl at start and after each interval; in between, cycles that only process
        what the Files action and webhooks queued."""
        crawl = True  # due until one is done
        while True:
            self._wake.clear()
            try:
                self.last_cycle = await self.run_cycle(crawl=crawl)
                crawl = crawl and self.last_cycle.sync is None
                self.last_error = None
                self.cycles += 1
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Nextcloud away, a bug: log it, try again later
                log.exception("recognize cycle failed")
                self.last_error = f"{type(error).__name__}: {error}"
            interval = self._engine.settings.crawl_interval_seconds if self._engine else 60
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                crawl = True
