"""The engine: settings, database, model store and pipeline wired together.

The CLI and the ExApp both drive Recognize through this one object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.config import MANIFEST_PATH, Settings
from ex_app.models.manifest import load_manifest
from ex_app.models.store import ModelStore
from ex_app.people.clustering import ClusterParams, QualityGate
from ex_app.people.grouping import regroup_all, update_persons
from ex_app.store import schema
from ex_app.store.database import open_database
from ex_app.work.pipeline import Pipeline
from ex_app.work.scan import SyncReport, process_pending, sync_folder


@dataclass
class ScanReport:
    sync: SyncReport
    processed: int
    persons: int


class Engine:
    """Recognize's state (in settings.data_dir) and the work done on it."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return open_database(self.settings.resolved_database_url)

    @cached_property
    def models(self) -> ModelStore:
        return ModelStore(
            self.settings.models_dir, load_manifest(MANIFEST_PATH), mirror=self.settings.model_mirror
        )

    @cached_property
    def pipeline(self) -> Pipeline:
        return Pipeline(self.settings, self.models)

    def scan(
        self,
        folder: Path,
        on_planned: Callable[[int], None] = lambda count: None,
        on_file_done: Callable[[str], None] = lambda path: None,
    ) -> ScanReport:
        """Record the folder's new and changed files, analyze them, then regroup faces."""
        root_id, sync = sync_folder(self.sessions, folder, self.pipeline)
        processed = process_pending(
            self.sessions, folder, root_id, self.pipeline, on_planned, on_file_done
        )
        return ScanReport(sync=sync, processed=processed, persons=self.regroup())

    def regroup(self, full: bool | None = None) -> int:
        """Group faces into persons; returns the number of persons.

        By default a full re-grouping while the store holds at most
        ``face_full_regroup_limit`` faces, and an incremental update beyond that.
        """
        params = ClusterParams.from_settings(self.settings)
        gate = QualityGate.from_settings(self.settings)
        with self.sessions.begin() as session:
            if full is None:
                faces = session.scalar(select(func.count(schema.Face.id)))
                full = faces <= self.settings.face_full_regroup_limit
            return (regroup_all if full else update_persons)(session, params, gate)
