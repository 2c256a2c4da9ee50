"""What a user does to persons: name, merge, move or remove a face, hide, compare.

Every action is stored as a constraint that later groupings obey, not as a one-off edit:
a person the user acted on becomes *confirmed* (never split, dissolved or merged by a
re-grouping), a face the user placed is *pinned*, a face taken out of a person is
*rejected* by it for good, and two persons said to differ are never suggested again.

Every function takes ``owner``: the user acting. Persons and faces of other owners are
:class:`NotFound`, whatever their id, and listings hold only the owner's. ``ANYONE`` (the
default, for the command line run by the administrator) acts on every owner's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sqlalchemy import delete, func, or_, select, true, update
from sqlalchemy.orm import Session

from ex_app.people.clustering import QualityGate
from ex_app.people.grouping import face_owner, refresh_centroids
from ex_app.store import schema


class NotFound(LookupError):
    """No person or face with that id (of this owner)."""


class _Anyone:
    def __repr__(self) -> str:
        return "ANYONE"


ANYONE = _Anyone()  # owner= for acting on every owner's persons
Owner = str | None | _Anyone


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


@dataclass(frozen=True)
class FaceView:
    """A face and where it is in its photo (pixels of the photo as stored)."""

    id: int
    file_id: int
    path: str
    x: float
    y: float
    w: float
    h: float
    photo_width: int | None
    photo_height: int | None
    person_id: int | None
    pinned: bool
    distance: float | None  # to its person's mean face; None when in no person
    seedable: bool  # passes the quality gate
    kind: str  # of its file: "image" or "video"
    frame_time: float | None  # a video's: seconds to the frame the face was found in
    open_url: str | None  # opens the file in Nextcloud (see viewer_link); None for local files


def viewer_link(remote_id: int | None) -> str | None:
    """The URL, relative to Nextcloud's web root, that opens a Nextcloud file in Files' Viewer.

    Nextcloud 30 to 35 (apps/files ``View#showFile``) redirect ``/index.php/f/FILEID`` to the
    file in its current folder with ``openfile=true``, so the link survives moves. The Viewer
    plays a video from its beginning (it gives the player the file's DAV URL alone).
    """
    return None if remote_id is None else f"/index.php/f/{remote_id}"


def owns(owner: Owner, actual: str | None) -> bool:
    return owner is ANYONE or owner == actual


def _owned_by(column, owner: Owner):
    """A WHERE clause keeping rows whose owner column is owner (no clause for ANYONE)."""
    return true() if owner is ANYONE else column == owner  # "== None" is IS NULL


def _person(session: Session, person_id: int, owner: Owner = ANYONE) -> schema.Person:
    person = session.get(schema.Person, person_id)
    if person is None or not owns(owner, person.owner):
        raise NotFound(f"no person {person_id}")
    return person


def face_owner_of(session: Session, face_id: int) -> tuple[schema.Face, str | None] | None:
    """A face and its owner, or None when there is no such face."""
    query = (select(schema.Face, face_owner())
             .join(schema.File, schema.File.id == schema.Face.file_id).join(schema.Root))
    row = session.execute(query.where(schema.Face.id == face_id)).first()
    return None if row is None else (row[0], row[1])


def distinct_pairs_of(person_ids):
    """A WHERE clause keeping the "not the same" pairs these persons are in."""
    pair = schema.DistinctPersons
    return or_(pair.person_id.in_(person_ids), pair.other_id.in_(person_ids))


def _face(session: Session, face_id: int, owner: Owner = ANYONE) -> tuple[schema.Face, str | None]:
    found = face_owner_of(session, face_id)
    if found is None or not owns(owner, found[1]):
        raise NotFound(f"no face {face_id}")
    return found


def check_file(session: Session, file_id: int, owner: Owner) -> schema.File:
    """The file, when it is in owner's files; else NotFound."""
    query = select(schema.File, face_owner()).join(schema.Root).where(schema.File.id == file_id)
    row = session.execute(query).first()
    if row is None or not owns(owner, row[1]):
        raise NotFound(f"no file {file_id}")
    return row[0]


def list_persons(session: Session, include_hidden: bool = False, *,
                 owner: Owner = ANYONE) -> list[PersonSummary]:
    """Persons with their counts: named ones first, then by number of faces."""
    counts = (select(schema.Face.person_id, func.count(schema.Face.id).label("faces"),
                     func.count(func.distinct(schema.Face.file_id)).label("photos"))
              .where(schema.Face.person_id.is_not(None)).group_by(schema.Face.person_id).subquery())
    query = (select(schema.Person, counts.c.faces, counts.c.photos)
             .join(counts, counts.c.person_id == schema.Person.id, isouter=True)
             .where(_owned_by(schema.Person.owner, owner)))
    if not include_hidden:
        query = query.where(schema.Person.hidden.is_(False))
    covers: dict[int, int] = {}
    best_first = (select(schema.Face.person_id, schema.Face.id).join(schema.Person)
                  .where(_owned_by(schema.Person.owner, owner))
                  .order_by(schema.Face.person_id, schema.Face.quality.desc(), schema.Face.id))
    for person_id, face_id in session.execute(best_first):
        covers.setdefault(person_id, face_id)  # the first row of a person is its best face
    summaries = [
        PersonSummary(person.id, person.name, person.hidden, person.confirmed, faces or 0,
                      photos or 0, covers.get(person.id))
        for person, faces, photos in session.execute(query)
    ]
    return sorted(summaries, key=lambda p: (p.name is None, -p.faces, (p.name or "").lower(), p.id))


def rename(session: Session, person_id: int, name: str | None, *, owner: Owner = ANYONE) -> None:
    """Name a person (or clear its name with None or blank); the person becomes confirmed."""
    person = _person(session, person_id, owner)
    person.name = (name or "").strip() or None
    person.confirmed = True


def set_hidden(session: Session, person_id: int, hidden: bool = True, *,
               owner: Owner = ANYONE) -> None:
    """Hide a person from listings (its faces stay with it), or show it again."""
    _person(session, person_id, owner).hidden = hidden


def merge(session: Session, into_id: int, other_ids: list[int], *, owner: Owner = ANYONE) -> None:
    """Put the faces of the other persons into one person, for good."""
    into = _person(session, into_id, owner)
    others = [_person(session, other_id, owner) for other_id in dict.fromkeys(other_ids)
              if other_id != into_id]
    if any(other.owner != into.owner for other in others):
        raise NotFound("persons of different owners are never merged")
    for other in others:
        if into.name is None:
            into.name = other.name
        session.execute(update(schema.Face).where(schema.Face.person_id == other.id)
                        .values(person_id=into.id))
        _repoint_rejections(session, other.id, into.id)
        session.execute(delete(schema.DistinctPersons).where(distinct_pairs_of({other.id})))
        session.delete(other)
    into.confirmed = True
    session.flush()
    refresh_centroids(session, {into.id})


def _repoint_rejections(session: Session, from_id: int, to_id: int) -> None:
    rejection = schema.FaceRejection
    already = select(rejection.face_id).where(rejection.person_id == to_id)
    session.execute(delete(rejection).where(rejection.person_id == from_id,
                                            rejection.face_id.in_(already)))
    session.execute(update(rejection).where(rejection.person_id == from_id).values(person_id=to_id))


def move_face(session: Session, face_id: int, person_id: int | None, *,
              owner: Owner = ANYONE) -> int:
    """Put a face into a person (a new one when person_id is None); returns that person's id.

    The face is pinned there, the person it left rejects it, and both persons become confirmed.
    """
    face, face_owner_name = _face(session, face_id, owner)
    if person_id is None:
        target = schema.Person(confirmed=True, owner=face_owner_name)
        session.add(target)
        session.flush()
    else:
        target = _person(session, person_id, owner)
        if target.owner != face_owner_name:
            raise NotFound(f"no person {person_id} for face {face_id}")
        target.confirmed = True
    left = face.person_id
    if left is not None and left != target.id:
        _reject(session, face)
    face.person_id, face.pinned = target.id, True
    rejection = schema.FaceRejection
    session.execute(delete(rejection).where(rejection.face_id == face.id,
                                            rejection.person_id == target.id))
    session.flush()
    refresh_centroids(session, {target.id, left} - {None})
    return target.id


def remove_face(session: Session, face_id: int, *, owner: Owner = ANYONE) -> None:
    """Take a face out of its person; it never joins that person again."""
    face, _ = _face(session, face_id, owner)
    left = face.person_id
    if left is None:
        return
    _reject(session, face)
    face.person_id, face.pinned = None, False
    session.flush()
    refresh_centroids(session, {left})


def _reject(session: Session, face: schema.Face) -> None:
    left = _person(session, face.person_id)
    left.confirmed = True
    if session.get(schema.FaceRejection, (face.id, left.id)) is None:
        session.add(schema.FaceRejection(face_id=face.id, person_id=left.id))


def mark_distinct(session: Session, person_id: int, other_id: int, *,
                  owner: Owner = ANYONE) -> None:
    """Say two persons are not the same, so they are never suggested for merging."""
    _person(session, person_id, owner)
    _person(session, other_id, owner)
    low, high = sorted((person_id, other_id))
    if session.get(schema.DistinctPersons, (low, high)) is None:
        session.add(schema.DistinctPersons(person_id=low, other_id=high))


def suggest_merges(session: Session, max_distance: float, limit: int = 50, *,
                   owner: Owner = ANYONE, embedder: str | None = None) -> list[MergeSuggestion]:
    """Pairs of visible persons of one owner whose mean faces (of the embedder, when given:
    the one max_distance is for) are close: maybe the same human."""
    query = (select(schema.Face.person_id, schema.Face.embedding, schema.Person.owner)
             .join(schema.Person).order_by(schema.Face.person_id)
             .where(schema.Person.hidden.is_(False), _owned_by(schema.Person.owner, owner)))
    if embedder is not None:
        query = query.where(schema.Face.embedder == embedder)
    rows = session.execute(query).all()
    if not rows:
        return []
    owner_of = {person_id: person_owner for person_id, _, person_owner in rows}
    person_ids = np.array([person_id for person_id, _, _ in rows])
    embeddings = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob, _ in rows])
    persons, starts = np.unique(person_ids, return_index=True)
    centroids = np.add.reduceat(embeddings, starts) / np.diff(np.append(starts, len(rows)))[:, None]
    pairs = select(schema.DistinctPersons.person_id, schema.DistinctPersons.other_id)
    distinct = {(int(a), int(b)) for a, b in session.execute(pairs)}
    index = NearestNeighbors(radius=max_distance).fit(centroids)
    distances, neighbours = index.radius_neighbors(centroids, sort_results=True)
    suggestions = []
    for i, (row_distances, row_neighbours) in enumerate(zip(distances, neighbours)):
        for distance, j in zip(row_distances, row_neighbours):
            pair = (int(persons[i]), int(persons[j]))
            if j > i and pair not in distinct and owner_of[pair[0]] == owner_of[pair[1]]:
                suggestions.append(MergeSuggestion(*pair, distance=float(distance)))
    return sorted(suggestions, key=lambda s: s.distance)[:limit]


def _face_views(session: Session, where, gate: QualityGate, limit: int | None = None) -> list[FaceView]:
    query = (select(schema.Face, schema.File.path, schema.File.width, schema.File.height,
                    schema.Person.centroid, schema.File.kind, schema.File.remote_id)
             .join(schema.File, schema.File.id == schema.Face.file_id).join(schema.Root)
             .join(schema.Person, schema.Person.id == schema.Face.person_id, isouter=True)
             .where(where).order_by(schema.File.path, schema.Face.id).limit(limit))
    views = []
    for face, path, width, height, centroid, kind, remote_id in session.execute(query):
        distance = None
        if centroid is not None:
            embedding = np.frombuffer(face.embedding, dtype=np.float32)
            prototypes = np.frombuffer(centroid, dtype=np.float32).reshape(-1, embedding.shape[0])
            distance = float(np.linalg.norm(prototypes - embedding, axis=1).min())
        views.append(FaceView(
            id=face.id, file_id=face.file_id, path=path, x=face.x, y=face.y, w=face.w, h=face.h,
            photo_width=width, photo_height=height, person_id=face.person_id, pinned=face.pinned,
            distance=distance, seedable=gate.admits(face), kind=kind, frame_time=face.frame_time,
            open_url=viewer_link(remote_id),
        ))
    return views


def person_faces(session: Session, person_id: int, gate: QualityGate, *,
                 owner: Owner = ANYONE) -> list[FaceView]:
    """A person's faces, by photo."""
    _person(session, person_id, owner)
    return _face_views(session, schema.Face.person_id == person_id, gate)


def unassigned_faces(session: Session, gate: QualityGate, limit: int = 500, *,
                     owner: Owner = ANYONE) -> list[FaceView]:
    """Faces in no person (noise, or below the quality gate), at most limit."""
    loose = schema.Face.person_id.is_(None) & _owned_by(face_owner(), owner)
    return _face_views(session, loose, gate, limit)


def unsure_faces(session: Session, gate: QualityGate, join_distance: float, limit: int = 500, *,
                 owner: Owner = ANYONE) -> list[FaceView]:
    """Faces the grouping put in a person but would not have let join it on their own: not
    placed by the user and farther than join_distance from the person's mean face; farthest
    first."""
    placed = schema.Face.person_id.is_not(None) & schema.Face.pinned.is_(False)
    faces = _face_views(session, placed & _owned_by(schema.Person.owner, owner), gate)
    unsure = [f for f in faces if f.distance is not None and f.distance > join_distance]
    return sorted(unsure, key=lambda f: -f.distance)[:limit]
