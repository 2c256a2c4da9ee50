"""The engine: settings, database, model store and pipeline wired together; the CLI and the
ExApp both drive Recognize through this one object."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.config import MANIFEST_PATH, Settings
from ex_app.models.manifest import load_manifest
from ex_app.models.store import ModelStore, ModelUnavailable
from ex_app.store import schema

if TYPE_CHECKING:  # the analyzers' libraries load when work is done: commands that only
    # read the store start quickly
    from ex_app.sources.fetch import FileFetcher
    from ex_app.store.files import SyncReport
    from ex_app.analyzers.pipeline import Pipeline
    from ex_app.work.queue import WorkQueue
    from ex_app.work.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class ScanReport:
    sync: SyncReport
    processed: int  # files recorded, failed ones included
    persons: int
    failed: int = 0  # files recorded with a permanent error


class Engine:
    """Recognize's state (in settings.data_dir) and the work done on it."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from ex_app.store.database import open_database

        return open_database(self.settings.resolved_database_url)

    @cached_property
    def models(self) -> ModelStore:
        return ModelStore(self.settings.models_dir, load_manifest(MANIFEST_PATH),
                          mirror=self.settings.model_mirror)

    @cached_property
    def pipeline(self) -> Pipeline:
        from ex_app.analyzers.pipeline import Pipeline

        return Pipeline(self.settings, self.models)

    @cached_property
    def queue(self) -> WorkQueue:
        from ex_app.work.queue import WorkQueue

        return WorkQueue(self.settings)

    def worker(self, fetcher: FileFetcher | None = None, *, obey_schedule: bool = True,
               on_file_done: Callable[[str], None] = lambda path: None) -> Worker:
        """A worker on this engine's queue and store (local files unless told how to fetch);
        the models it needs are fetched and loaded first."""
        from ex_app.sources.local import LocalFetcher
        from ex_app.work.worker import FileProcessor, Worker

        self.fetch_models()
        self.pipeline.load()
        self.plan_reembedding()
        processor = FileProcessor.from_settings(self.settings, self.sessions, self.pipeline,
                                                fetcher or LocalFetcher())
        return Worker(self.settings, self.queue, processor, obey_schedule=obey_schedule,
                      on_file_done=on_file_done)

    def fetch_models(self) -> None:
        """Fetch the models the enabled analyzers need (the store lets one process of the host
        fetch each; optional analyzers run when theirs are here); a model that cannot be had is
        only logged here."""
        from ex_app.analyzers.registry import needed_models

        for name in needed_models(self.settings)[0]:
            try:
                self.models.fetch(name)
            except ModelUnavailable as error:  # an analysis that needs it stops the worker
                log.warning("%s", error)

    def scan(self, folder: Path, on_planned: Callable[[int], None] = lambda count: None,
             on_file_done: Callable[[str], None] = lambda path: None, wait: bool = True,
             only: str | None = None) -> ScanReport:
        """Record the folder's new and changed files and send them to the workers in chunks.

        With ``wait``, this process works too, while the walk goes on, until the folder's
        files are all analyzed (quiet hours and pause do not hold back a scan asked for);
        then faces are regrouped. ``on_planned`` gets the number of files sent so far.
        ``only``: one file's path in the folder, scanned alone.
        """
        from ex_app.store.files import work_left
        from ex_app.work.queue import BACKLOG

        sent: set[int] = set()
        crawl: dict = {}

        def send(file_ids: list[int]) -> None:
            self.queue.enqueue_files(self.sessions, file_ids, BACKLOG)
            sent.update(file_ids)
            on_planned(len(sent))

        def walk() -> None:
            try:
                root_id, report = self.sync_local(folder, send, only)
                self.queue.enqueue_pending(self.sessions, root_id, skip=sent)
                crawl.update(root_id=root_id, sync=report)
            except Exception as error:  # noqa: BLE001 (raised again in the caller, below)
                crawl["error"] = error
            finally:
                self.queue.sent.set()

        if not wait:
            walk()
            if "error" in crawl:
                raise crawl["error"]
            return ScanReport(sync=crawl["sync"], processed=0, persons=0)
        walker = threading.Thread(target=walk, name="recognize-walk", daemon=True)
        walker.start()
        worker = self.worker(obey_schedule=False, on_file_done=on_file_done)

        def settled() -> bool:  # the walk is over, and failed or left no pending task in its root
            return not walker.is_alive() and (
                "root_id" not in crawl or not work_left(self.sessions, root_id=crawl["root_id"])
            )

        worker.run(until=settled)
        walker.join()
        if "error" in crawl:
            raise crawl["error"]
        return ScanReport(sync=crawl["sync"], processed=worker.processed, persons=self.regroup(),
                          failed=worker.failed)

    def sync_local(self, folder: Path,
                   on_chunk: Callable[[list[int]], None] = lambda file_ids: None,
                   only: str | None = None) -> tuple[int, SyncReport]:
        """Bring the store in line with the folder (or its one file ``only``); returns the
        root's id and what changed. ``on_chunk``: see :func:`ex_app.sources.sync.sync`."""
        from ex_app.sources.local import LocalSource
        from ex_app.sources.sync import sync
        from ex_app.store.files import find_or_create_root

        source = LocalSource(folder, only)
        report = asyncio.run(sync(self.sessions, source, self.pipeline, on_chunk))
        with self.sessions.begin() as session:
            return find_or_create_root(session, source.name, source.location), report

    def regroup(self, full: bool | None = None) -> int:
        """Group faces into persons; returns the number of persons.

        By default a full re-grouping while the store holds at most
        ``faces.full_regroup_limit`` faces, and an incremental update beyond that. Files
        whose persons' names change are marked for the tag sink.
        """
        from ex_app.people.clustering import ClusterParams, QualityGate
        from ex_app.people.grouping import regroup_all, update_persons
        from ex_app.store.outbox import person_tag_changes
        from ex_app.store.reembed import waiting_files

        params = ClusterParams.from_settings(self.settings)
        gate = QualityGate.from_settings(self.settings)
        embedder = self.settings.faces.embedder
        with self.sessions.begin() as session, person_tag_changes(session):
            if full is None:
                faces = session.scalar(select(func.count(schema.Face.id)))
                full = faces <= self.settings.faces.full_regroup_limit
            group = regroup_all if full else update_persons
            return group(session, params, gate, embedder, waiting=waiting_files(embedder))

    def plan_reembedding(self) -> int:
        """Queue the embedding again of every stored face of another embedder than the
        configured one (ex_app.store.reembed); returns how many files."""
        from ex_app.store.reembed import plan_reembedding
        from ex_app.work.queue import BACKLOG

        if not self.settings.faces.enabled:
            return 0
        with self.sessions.begin() as session:
            file_ids = plan_reembedding(session, self.pipeline, self.settings.faces.embedder)
        if file_ids:
            log.info("%d files hold faces of another embedder than %s: embedding them again",
                     len(file_ids), self.settings.faces.embedder)
            self.queue.enqueue_files(self.sessions, file_ids, BACKLOG)
        return len(file_ids)
