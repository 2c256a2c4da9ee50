"""The engine: settings, database, model store and pipeline wired together.

The CLI and the ExApp both drive Recognize through this one object.
"""

from __future__ import annotations

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
from ex_app.store.schema import TaskStatus

if TYPE_CHECKING:  # the analyzers' libraries load when work is done: commands that only
    # read the store start quickly
    from ex_app.work.pipeline import Pipeline
    from ex_app.work.queue import WorkQueue
    from ex_app.work.scan import SyncReport
    from ex_app.work.worker import AfterRecorded, FileFetcher, Worker

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
        return ModelStore(
            self.settings.models_dir, load_manifest(MANIFEST_PATH), mirror=self.settings.model_mirror
        )

    @cached_property
    def pipeline(self) -> Pipeline:
        from ex_app.work.pipeline import Pipeline

        return Pipeline(self.settings, self.models)

    @cached_property
    def queue(self) -> WorkQueue:
        from ex_app.work.queue import WorkQueue

        return WorkQueue(self.settings)

    def worker(
        self,
        fetcher: FileFetcher | None = None,
        after_recorded: AfterRecorded | None = None,
        *,
        obey_schedule: bool = True,
        on_file_done: Callable[[str], None] = lambda path: None,
    ) -> Worker:
        """A worker on this engine's queue and store (local files unless told how to fetch);
        the models it needs are fetched first."""
        from ex_app.work.worker import FileProcessor, LocalFetcher, Worker

        self.fetch_models()
        self.plan_reembedding()
        processor = FileProcessor.from_settings(
            self.settings, self.sessions, self.pipeline, fetcher or LocalFetcher(), after_recorded
        )
        return Worker(
            self.settings, self.queue, processor, obey_schedule=obey_schedule, on_file_done=on_file_done
        )

    def fetch_models(self) -> None:
        """Fetch the enabled analyzers' models (the store lets one process of the host fetch
        each); a model that cannot be had is only logged here (optional ones may be missing)."""
        from ex_app.media.kinds import MediaKind
        from ex_app.work.pipeline import analyzer_models

        names = sorted(
            {
                name
                for kind in MediaKind
                for analyzer in self.pipeline.enabled_analyzers(kind)
                for name in analyzer_models(analyzer, self.settings.face_embedder)
            }
        )
        for name in names:
            try:
                self.models.fetch(name)
            except ModelUnavailable as error:  # an analysis that needs it stops the worker
                log.warning("%s", error)

    def scan(
        self,
        folder: Path,
        on_planned: Callable[[int], None] = lambda count: None,
        on_file_done: Callable[[str], None] = lambda path: None,
        wait: bool = True,
        only: str | None = None,
    ) -> ScanReport:
        """Record the folder's new and changed files and send them to the workers in chunks.

        With ``wait``, this process works too, while the walk goes on, until the folder's
        files are all analyzed (quiet hours and pause do not hold back a scan asked for);
        then faces are regrouped. ``on_planned`` gets the number of files sent so far.
        ``only``: one file's path in the folder, scanned alone.
        """
        from ex_app.work.queue import BACKLOG
        from ex_app.work.scan import sync_folder

        sent: set[int] = set()
        crawl: dict = {}

        def send(file_ids: list[int]) -> None:
            self.queue.enqueue_files(self.sessions, file_ids, BACKLOG)
            sent.update(file_ids)
            on_planned(len(sent))

        def walk() -> None:
            try:
                root_id, sync = sync_folder(self.sessions, folder, self.pipeline, send, only)
                self.queue.enqueue_pending(self.sessions, root_id, skip=sent)
                crawl.update(root_id=root_id, sync=sync)
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
        worker.run(until=lambda: not walker.is_alive() and self._settled(crawl))
        walker.join()
        if "error" in crawl:
            raise crawl["error"]
        return ScanReport(
            sync=crawl["sync"], processed=worker.processed, persons=self.regroup(), failed=worker.failed
        )

    def _settled(self, crawl: dict) -> bool:
        """Whether the walk failed or left no pending task in its root."""
        if "root_id" not in crawl:
            return True
        with self.sessions() as session:
            return not session.scalar(
                select(func.count(schema.Task.id))
                .join(schema.File)
                .where(schema.File.root_id == crawl["root_id"], schema.Task.status == TaskStatus.PENDING)
            )

    def regroup(self, full: bool | None = None) -> int:
        """Group faces into persons; returns the number of persons.

        By default a full re-grouping while the store holds at most
        ``face_full_regroup_limit`` faces, and an incremental update beyond that. Files
        whose persons' names change are marked for the tag sink.
        """
        from ex_app.people.clustering import ClusterParams, QualityGate
        from ex_app.people.grouping import regroup_all, update_persons
        from ex_app.store.outbox import person_tag_changes
        from ex_app.work.reembed import waiting_files

        params = ClusterParams.from_settings(self.settings)
        gate = QualityGate.from_settings(self.settings)
        embedder = self.settings.face_embedder
        with self.sessions.begin() as session, person_tag_changes(session):
            if full is None:
                faces = session.scalar(select(func.count(schema.Face.id)))
                full = faces <= self.settings.face_full_regroup_limit
            group = regroup_all if full else update_persons
            return group(session, params, gate, embedder, waiting=waiting_files(embedder))

    def plan_reembedding(self) -> int:
        """Queue the embedding again of every stored face of another embedder than the
        configured one (ex_app.work.reembed); returns how many files."""
        from ex_app.work.queue import BACKLOG
        from ex_app.work.reembed import plan_reembedding

        if not self.settings.faces_enabled:
            return 0
        with self.sessions.begin() as session:
            file_ids = plan_reembedding(session, self.pipeline, self.settings.face_embedder)
        if file_ids:
            log.info(
                "%d files hold faces of another embedder than %s: embedding them again",
                len(file_ids), self.settings.face_embedder,
            )
            self.queue.enqueue_files(self.sessions, file_ids, BACKLOG)
        return len(file_ids)
