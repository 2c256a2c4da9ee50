"""Embedding stored faces again when the face embedder changes (a new default, or the admin's).

Every face records the embedder that made it. At a worker's start, :func:`plan_reembedding`
gives each photo holding faces of another embedder a pending ``embeddings`` task: ordinary
queued work, with progress and retries like any analyzer's. A worker decodes the photo and
embeds each stored face again from its stored box and landmarks (no detection): the faces keep
their ids, so every decision on them (persons, names, merges, moves, removals, hidden
persons, "not the same") stays. A video's faces cannot be found again without their frames:
its video task runs again instead.

While an owner has faces waiting to be embedded again, grouping leaves that owner's persons
as they are (:func:`waiting_files`); once all are done, the next grouping re-forms them.
"""

from __future__ import annotations

from contextlib import suppress

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ex_app.analyzers.pipeline import Pipeline
from ex_app.analyzers.registry import EMBEDDINGS, FACE_FINDING_ANALYZERS, face_finder
from ex_app.analyzers.results import StoredFace
from ex_app.media.kinds import MediaKind
from ex_app.store import schema
from ex_app.store.schema import TaskStatus


def plan_reembedding(session: Session, pipeline: Pipeline, embedder: str) -> list[int]:
    """Pending work for every file with faces of another embedder; returns those file ids.

    A photo gets an ``embeddings`` task (made or set pending again); a video's video task is
    set pending (its faces are found again). Files whose faces are already being found again
    are left alone. Several workers starting at once make each task once.
    """
    version = pipeline.model_version(EMBEDDINGS)
    planned = []
    others = select(schema.Face.file_id).where(schema.Face.embedder != embedder)
    for file_id, kind in session.execute(
        select(schema.File.id, schema.File.kind).where(schema.File.id.in_(others)).order_by(schema.File.id)
    ).all():
        query = select(schema.Task).where(schema.Task.file_id == file_id)
        tasks = {task.analyzer: task for task in session.scalars(query)}
        finding = tasks.get(face_finder(kind))
        if finding is not None and finding.status == TaskStatus.PENDING:
            planned.append(file_id)
            continue
        if kind == MediaKind.VIDEO:
            if finding is not None:
                finding.status, finding.error, finding.attempts = TaskStatus.PENDING, None, 0
                planned.append(file_id)
            continue
        task = tasks.get(EMBEDDINGS)
        if task is None:
            with suppress(IntegrityError), session.begin_nested():  # or another worker did meanwhile
                session.add(schema.Task(file_id=file_id, analyzer=EMBEDDINGS, model_version=version))
        elif task.status == TaskStatus.DONE or task.model_version != version:
            task.status, task.model_version, task.error, task.attempts = (
                TaskStatus.PENDING, version, None, 0,
            )
        planned.append(file_id)
    return planned


def stored_faces(session: Session, file_id: int) -> list[StoredFace]:
    """The faces stored for a file, with what embedding them again needs."""
    face = schema.Face
    rows = session.execute(
        select(face.id, face.x, face.y, face.w, face.h, face.score, face.landmarks)
        .where(face.file_id == file_id)
        .order_by(face.id)
    )
    return [
        StoredFace(face_id, (x, y, w, h), score, np.frombuffer(landmarks, np.float32).reshape(5, 2))
        for face_id, x, y, w, h, score, landmarks in rows
    ]


def waiting_files(embedder: str):
    """SQL: ids of files with faces of another embedder and work pending on them."""
    others = select(schema.Face.file_id).where(schema.Face.embedder != embedder)
    return select(schema.Task.file_id).where(
        schema.Task.status == TaskStatus.PENDING,
        schema.Task.analyzer.in_((*FACE_FINDING_ANALYZERS, EMBEDDINGS)),
        schema.Task.file_id.in_(others),
    )
