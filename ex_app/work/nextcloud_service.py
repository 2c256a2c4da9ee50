"""The ExApp's background work: crawl all users, analyze what is new, group, tag; repeat.

One cycle runs at a time. A full cycle crawls every user's files first; it runs at start
and after each interval. Files queued by the Files menu action or by webhooks start a
cycle at once that only processes what is pending. Admin settings are read at the start
of each cycle; quiet hours skip the cycle. Stopping cancels the cycle: a file being
analyzed keeps its pending task and is done by the next start.
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
from ex_app.sinks.nextcloud_tags import NextcloudTagSink, TagLedger
from ex_app.sources.nextcloud import NextcloudSource
from ex_app.store import schema
from ex_app.web.admin_settings import admin_settings
from ex_app.work.nextcloud_scan import (
    NextcloudIndex,
    NextcloudProcessor,
    move_files,
    record_files,
    sync_nextcloud,
)
from ex_app.work.scan import SyncReport

log = logging.getLogger(__name__)

LEDGER_FILE = "nextcloud_tags.sqlite"


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


class RecognizeService:
    """Recognize's work over the whole Nextcloud, driven by an asyncio task."""

    def __init__(self, base: Settings):
        self.base = base
        self.index = NextcloudIndex()
        self.last_cycle: CycleReport | None = None
        self.cycles = 0  # cycles finished, quiet ones included
        self.last_error: str | None = None
        self._engine: Engine | None = None
        self._ledger: TagLedger | None = None
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
        if self._ledger is None:
            self._ledger = TagLedger(settings.data_dir / LEDGER_FILE)
        return NextcloudProcessor(
            sessions=engine.sessions,
            source=NextcloudSource(settings.max_download_bytes),
            pipeline=engine.pipeline,
            sink=NextcloudTagSink(self._ledger),
            jobs=settings.jobs,
            person_names_as_tags=settings.person_names_as_tags,
        )

    async def run_cycle(self, crawl: bool = True) -> CycleReport:
        """Crawl (unless told not to), analyze the pending files, regroup faces, refresh tags
        of face photos."""
        async with self._cycle_lock:
            engine = await self.engine()
            settings = engine.settings
            if in_quiet_hours(settings.quiet_hours, datetime.now()):
                return CycleReport(quiet=True)
            processor = self.processor(engine)
            sync = None
            if crawl:
                users = await processor.source.users()
                self.index, sync = await sync_nextcloud(
                    engine.sessions, processor.source, users, engine.pipeline
                )
            processed = await processor.process(self.index)
            persons = await asyncio.to_thread(engine.regroup) if processed else 0
            names_changed = settings.person_names_as_tags != self._names_as_tags
            if names_changed or (processed and settings.person_names_as_tags):
                await self._retag_face_photos(engine, processor)
            self._names_as_tags = settings.person_names_as_tags
            return CycleReport(sync=sync, processed=processed, persons=persons)

    async def queue(self, user: str, paths: list[str]) -> int:
        """Record the media at these paths of user's (folders: recursively) and process them
        soon, without a crawl; returns how many files were recorded."""
        engine = await self.engine()
        source = NextcloudSource(engine.settings.max_download_bytes)
        found = [file for path in paths for file in await source.media_at(user, path)]
        recorded = [self.index.add(file) for file in found]
        record_files(engine.sessions, recorded, engine.pipeline)
        self.wake()
        return len(recorded)

    async def moved(self, user: str, old: str, new: str) -> None:
        """A file or folder of user's was moved within their files: its results follow it."""
        engine = await self.engine()
        move_files(engine.sessions, user, old.strip("/"), new.strip("/"))
        self.index.move(user, old.strip("/"), new.strip("/"))

    async def _retag_face_photos(self, engine: Engine, processor: NextcloudProcessor) -> None:
        with engine.sessions() as session:
            rows = session.execute(
                select(schema.File.id, schema.Root.location, schema.File.path)
                .join(schema.Root)
                .join(schema.Face)
                .distinct()
            ).all()
        for file_id, user, path in rows:
            file = self.index.by_path.get((user, path))
            if file is not None:
                await processor.retag(file_id, file)

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

    def close(self) -> None:
        """Release the tag ledger."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
