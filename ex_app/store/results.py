"""What the analyzers found, in the store: writing a file's results, reading a file's tags,
deleting a user's face data."""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.analyzers.pipeline import Pipeline
from ex_app.analyzers.registry import EMBEDDINGS, FACE_FINDING_ANALYZERS, FACES, LABELLING_ANALYZERS
from ex_app.analyzers.results import FileAnalysis
from ex_app.store import outbox, schema
from ex_app.store.files import users_files
from ex_app.store.schema import TaskStatus, utcnow


def record_analysis(
    session: Session, file_id: int, analyzers: tuple[str, ...], analysis: FileAnalysis | str,
    pipeline: Pipeline,
) -> None:
    """Replace the file's results for these analyzers and mark their tasks done or failed
    (a failure here is permanent: the dead-letter state, with its reason); a Nextcloud file
    is marked for the tag sink in the same transaction."""
    file = session.get(schema.File, file_id)
    if file is None:
        return  # deleted meanwhile
    failed = isinstance(analysis, str)
    finds_faces = any(analyzer in FACE_FINDING_ANALYZERS for analyzer in analyzers)
    labels = any(analyzer in LABELLING_ANALYZERS for analyzer in analyzers)
    if finds_faces:
        file.faces.clear()
    if labels:
        file.labels.clear()
    file.tags[:] = [tag for tag in file.tags if tag.analyzer not in analyzers]
    session.flush()
    if not failed:
        file.width, file.height = analysis.width, analysis.height
        if finds_faces:
            file.faces.extend(_face_row(face, analysis.embedder) for face in analysis.faces)
        elif EMBEDDINGS in analyzers:
            for face in file.faces:
                if face.id in analysis.embeddings:
                    face.embedding = np.asarray(analysis.embeddings[face.id], np.float32).tobytes()
                    face.embedder = analysis.embedder
        if labels:
            file.labels.extend(
                schema.Label(label_id=label.id, name=label.name, score=label.score)
                for label in analysis.labels
            )
        for analyzer, tags in analysis.tags.items():
            file.tags.extend(schema.FileTag(analyzer=analyzer, tag=tag) for tag in tags)
    for task in file.tasks:
        if task.analyzer in analyzers:
            task.status = TaskStatus.ERROR if failed else TaskStatus.DONE
            task.error = analysis if failed else None
            task.model_version = pipeline.model_version(task.analyzer)
            task.attempts += 1
            task.updated_at = utcnow()
    if file.remote_id is not None:
        outbox.mark(session, outbox.TAGS, [file_id])


def _face_row(face, embedder: str) -> schema.Face:
    x, y, w, h = (float(v) for v in face.box)
    return schema.Face(
        embedder=embedder, x=x, y=y, w=w, h=h, score=float(face.score),
        quality=float(face.quality), sharpness=float(face.sharpness), pose=float(face.pose),
        landmarks=np.asarray(face.landmarks, dtype=np.float32).tobytes(),
        embedding=np.asarray(face.embedding, dtype=np.float32).tobytes(),
        frame_time=face.frame_time,
    )  # fmt: skip


def delete_face_data(sessions: sessionmaker[Session], user: str) -> set[int]:
    """Delete the faces found in user's files, the tags they gave, the persons they made
    and the faces of the user's contacts; returns the stored ids of the files that had faces.
    The files keep their other results; their face-finding tasks go, so faces are found again
    only once the user opts back in and the crawl queues them."""
    with sessions.begin() as session:
        faces = session.execute(
            select(schema.Face.id, schema.Face.person_id, schema.Face.file_id).where(
                schema.Face.file_id.in_(users_files(user))
            )
        ).all()
        had_faces = {file_id for _, _, file_id in faces}
        session.execute(delete(schema.Face).where(schema.Face.id.in_([face.id for face in faces])))
        face_tags = (schema.FileTag.file_id.in_(had_faces), schema.FileTag.analyzer == FACES)
        session.execute(delete(schema.FileTag).where(*face_tags))
        session.execute(  # made again by the crawl after the user opts back in
            delete(schema.Task)
            .where(schema.Task.file_id.in_(users_files(user)))
            .where(schema.Task.analyzer.in_(FACE_FINDING_ANALYZERS))
        )
        persons = {face.person_id for face in faces if face.person_id is not None}
        still_used = select(schema.Face.person_id).where(schema.Face.person_id.in_(persons))
        persons -= set(session.scalars(still_used))
        unused = (schema.Person.owner == user) | schema.Person.id.in_(persons)
        session.execute(delete(schema.Person).where(unused))
        # the faces of the user's contacts too (read again from the address books on return)
        session.execute(delete(schema.ContactBook).where(schema.ContactBook.owner == user))
        outbox.mark(session, outbox.TAGS, had_faces)  # their tags follow
        return had_faces
