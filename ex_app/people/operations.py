"""What a user does to persons: name, merge, move or remove a face, hide, compare.

Every action is stored as a constraint that later groupings obey, not as a one-off edit:
a person the user acted on becomes *confirmed* (never split, dissolved or merged by a
re-grouping), a face the user placed is *pinned*, a face taken out of a person is
*rejected* by it for good, and two persons said to differ are never suggested again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session
from sklearn.neighbors import NearestNeighbors

from ex_app.people.grouping import refresh_centroids
from ex_app.store import schema


class NotFound(LookupError):
    """No person or face with that id."""


@dataclass(frozen=True)
class PersonSummary:
    id: int
    name: str | None
    hidden: bool
    confirmed: bool
    faces: int
    photos: int
    cover_face_id: int | None  # the person's best face, for its thumbnail


@dataclass(frozen=True)
class MergeSuggestion:
    person_id: int
    other_id: int
    distance: float  # between the two persons' mean embeddings


def _person(session: Session, person_id: int) -> schema.Person:
    person = session.get(schema.Person, person_id)
    if person is None:
        raise NotFound(f"no person {person_id}")
    return person


def _face(session: Session, face_id: int) -> schema.Face:
    face = session.get(schema.Face, face_id)
    if face is None:
        raise NotFound(f"no face {face_id}")
    return face


def list_persons(session: Session, include_hidden: bool = False) -> list[PersonSummary]:
    """Persons with their counts: named ones first, then by number of faces."""
    counts = (
        select(
            schema.Face.person_id,
            func.count(schema.Face.id).label("faces"),
            func.count(func.distinct(schema.Face.file_id)).label("photos"),
        )
        .where(schema.Face.person_id.is_not(None))
        .group_by(schema.Face.person_id)
        .subquery()
    )
    query = select(schema.Person, counts.c.faces, counts.c.photos).join(
        counts, counts.c.person_id == schema.Person.id, isouter=True
    )
    if not include_hidden:
        query = query.where(schema.Person.hidden.is_(False))
    covers: dict[int, int] = {}
    for person_id, face_id in session.execute(
        select(schema.Face.person_id, schema.Face.id)
        .where(schema.Face.person_id.is_not(None))
        .order_by(schema.Face.person_id, schema.Face.quality.desc(), schema.Face.id)
    ):
        covers.setdefault(person_id, face_id)  # the first row of a person is its best face
    summaries = [
        PersonSummary(
            id=person.id,
            name=person.name,
            hidden=person.hidden,
            confirmed=person.confirmed,
            faces=faces or 0,
            photos=photos or 0,
            cover_face_id=covers.get(person.id),
        )
        for person, faces, photos in session.execute(query)
    ]
    return sorted(summaries, key=lambda p: (p.name is None, -p.faces, (p.name or "").lower(), p.id))


def rename(session: Session, person_id: int, name: str | None) -> None:
    """Name a person (or clear its name with None or blank); the person becomes confirmed."""
    person = _person(session, person_id)
    person.name = (name or "").strip() or None
    person.confirmed = True


def set_hidden(session: Session, person_id: int, hidden: bool = True) -> None:
    """Hide a person from listings (its faces stay with it), or show it again."""
    _person(session, person_id).hidden = hidden


def merge(session: Session, into_id: int, other_ids: list[int]) -> None:
    """Put the faces of the other persons into one person, for good."""
    into = _person(session, into_id)
    others = [_person(session, other_id) for other_id in other_ids if other_id != into_id]
    for other in others:
        if into.name is None:
            into.name = other.name
        session.execute(
            update(schema.Face).where(schema.Face.person_id == other.id).values(person_id=into.id)
        )
        _repoint_rejections(session, other.id, into.id)
        session.execute(
            delete(schema.DistinctPersons).where(
                or_(
                    schema.DistinctPersons.person_id == other.id,
                    schema.DistinctPersons.other_id == other.id,
                )
            )
        )
        session.delete(other)
    into.confirmed = True
    session.flush()
    refresh_centroids(session, {into.id})


def _repoint_rejections(session: Session, from_id: int, to_id: int) -> None:
    already = set(
        session.scalars(
            select(schema.FaceRejection.face_id).where(schema.FaceRejection.person_id == to_id)
        )
    )
    for rejection in session.scalars(
        select(schema.FaceRejection).where(schema.FaceRejection.person_id == from_id)
    ).all():
        if rejection.face_id in already:
            session.delete(rejection)
        else:
            rejection.person_id = to_id
    session.flush()


def move_face(session: Session, face_id: int, person_id: int | None) -> int:
    """Put a face into a person (a new one when person_id is None); returns that person's id.

    The face is pinned there, the person it left rejects it, and both persons become confirmed.
    """
    face = _face(session, face_id)
    if person_id is None:
        target = schema.Person(confirmed=True)
        session.add(target)
        session.flush()
    else:
        target = _person(session, person_id)
        target.confirmed = True
    left = face.person_id
    if left is not None and left != target.id:
        _reject(session, face)
    face.person_id, face.pinned = target.id, True
    session.execute(
        delete(schema.FaceRejection).where(
            schema.FaceRejection.face_id == face.id, schema.FaceRejection.person_id == target.id
        )
    )
    session.flush()
    refresh_centroids(session, {target.id} | ({left} if left is not None else set()))
    return target.id


def remove_face(session: Session, face_id: int) -> None:
    """Take a face out of its person; it never joins that person again."""
    face = _face(session, face_id)
    if face.person_id is None:
        return
    left = face.person_id
    _reject(session, face)
    face.person_id, face.pinned = None, False
    session.flush()
    refresh_centroids(session, {left})


def _reject(session: Session, face: schema.Face) -> None:
    left = _person(session, face.person_id)
    left.confirmed = True
    if session.get(schema.FaceRejection, (face.id, left.id)) is None:
        session.add(schema.FaceRejection(face_id=face.id, person_id=left.id))


def mark_distinct(session: Session, person_id: int, other_id: int) -> None:
    """Say two persons are not the same, so they are never suggested for merging."""
    _person(session, person_id)
    _person(session, other_id)
    low, high = sorted((person_id, other_id))
    if session.get(schema.DistinctPersons, (low, high)) is None:
        session.add(schema.DistinctPersons(person_id=low, other_id=high))


def suggest_merges(session: Session, max_distance: float, limit: int = 50) -> list[MergeSuggestion]:
    """Pairs of visible persons whose mean faces are close: maybe the same human."""
    rows = session.execute(
        select(schema.Face.person_id, schema.Face.embedding)
        .join(schema.Person)
        .where(schema.Person.hidden.is_(False))
        .order_by(schema.Face.person_id)
    ).all()
    if not rows:
        return []
    person_ids = np.array([person_id for person_id, _ in rows])
    embeddings = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
    persons, starts = np.unique(person_ids, return_index=True)
    centroids = np.add.reduceat(embeddings, starts) / np.diff(np.append(starts, len(rows)))[:, None]
    distinct = {
        (int(a), int(b))
        for a, b in session.execute(
            select(schema.DistinctPersons.person_id, schema.DistinctPersons.other_id)
        )
    }
    index = NearestNeighbors(radius=max_distance).fit(centroids)
    distances, neighbours = index.radius_neighbors(centroids, sort_results=True)
    suggestions = []
    for i, (row_distances, row_neighbours) in enumerate(zip(distances, neighbours)):
        for distance, j in zip(row_distances, row_neighbours):
            pair = (int(persons[i]), int(persons[j]))
            if j > i and pair not in distinct:
                suggestions.append(MergeSuggestion(*pair, distance=float(distance)))
    return sorted(suggestions, key=lambda s: s.distance)[:limit]
