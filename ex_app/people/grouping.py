"""Grouping the stored faces into persons, obeying every user decision.

Two ways, one rule set (``ex_app.people.clustering``):
- :func:`regroup_all` groups every face that is not in a confirmed person, from scratch;
- :func:`update_persons` groups only the unassigned faces, with every existing person
  standing in as fixed pseudo-faces at its stored prototypes (``clustering.person_prototypes``:
  its mean embedding, or several where its faces lie far apart): new faces join the
  nearest person (found through a nearest-neighbour index over persons, never over all
  faces) or form new persons where enough of them agree.
Faces of one photo are never put in one person, and faces of different owners never share
one: each owner's faces (a Nextcloud user's, or the local scans') are grouped on their own,
and each person records its owner (:func:`face_owner`).
Confirmed persons (the user named, merged or corrected them) and hidden ones are fixed groups
in both: never split, dissolved or merged; a face a person rejected never joins it.
Unconfirmed persons keep their id across a re-grouping when most of their faces stay together.

Only faces of the configured embedder are grouped (each face records its embedder). While an
owner's faces wait to be embedded again (``waiting``: a query of the ids of files with such
work pending, see ``ex_app.store.reembed``), that owner's persons stay as they are; once
none wait, an owner whose persons' centroids come from another embedder is grouped again
from scratch, by the incremental path too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from itertools import combinations

import numpy as np
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from ex_app.people.clustering import (
    UNASSIGNED,
    ClusterParams,
    QualityGate,
    cluster,
    passes_quality_gate,
    person_prototypes,
)
from ex_app.people.distances import EMBEDDER_DISTANCES
from ex_app.store import schema

CENTROID_BATCH = 500  # persons per query when refreshing centroids (SQL parameter limits)


@dataclass
class StoredFaces:
    """Faces read from the store, row-aligned arrays."""

    ids: np.ndarray
    embeddings: np.ndarray
    seedable: np.ndarray
    person_ids: np.ndarray  # UNASSIGNED where the face is in no person
    file_ids: np.ndarray
    owners: np.ndarray  # objects: the owner of each face (str, or None for local scans)

    def of_owner(self, owner: str | None) -> StoredFaces:
        """The faces of one owner."""
        rows = np.array([o == owner for o in self.owners], dtype=bool).reshape(-1)
        return StoredFaces(*(getattr(self, field.name)[rows] for field in fields(self)))

    def distinct_owners(self) -> list[str | None]:
        return list(dict.fromkeys(self.owners.tolist()))

    def same_photo_pairs(self, offset: int = 0) -> np.ndarray:
        """(row, row) pairs of faces found in one photo, rows shifted by offset."""
        rows_of_file: dict[int, list[int]] = {}
        for row, file_id in enumerate(self.file_ids):
            rows_of_file.setdefault(int(file_id), []).append(row + offset)
        pairs = [pair for rows in rows_of_file.values() for pair in combinations(rows, 2)]
        return np.array(pairs, dtype=int).reshape(-1, 2)


def face_owner():
    """SQL expression over a query joined with roots: the Nextcloud user whose files hold a
    face, or NULL for local scans."""
    return case((schema.Root.source == schema.Source.NEXTCLOUD, schema.Root.location), else_=None)


def load_faces(
    session: Session, gate: QualityGate, where=None, embedder: str | None = None
) -> StoredFaces:
    """The faces matching where (all when None) of one embedder (any when None), by id, with
    the gate applied."""
    face = schema.Face
    query = (select(face.id, face.embedding, face.w, face.h, face.score, face.sharpness, face.pose,
                    face.person_id, face.file_id, face_owner())
             .join(schema.File, schema.File.id == face.file_id).join(schema.Root).order_by(face.id))
    if where is not None:
        query = query.where(where)
    if embedder is not None:
        query = query.where(face.embedder == embedder)
    rows = session.execute(query).all()
    if not rows:
        empty = np.empty(0, dtype=int)
        return StoredFaces(empty, np.empty((0, 128), np.float32), empty.astype(bool), empty,
                           empty, np.empty(0, dtype=object))
    columns = list(zip(*rows))
    sizes = np.minimum(np.array(columns[2]), np.array(columns[3]))
    return StoredFaces(
        ids=np.array(columns[0]),
        embeddings=np.stack([np.frombuffer(blob, dtype=np.float32) for blob in columns[1]]),
        seedable=passes_quality_gate(sizes, *map(np.array, columns[4:7]), gate),
        person_ids=np.array([UNASSIGNED if p is None else p for p in columns[7]]),
        file_ids=np.array(columns[8]),
        owners=_objects(columns[9]),
    )


def _objects(values) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def regroup_all(
    session: Session, params: ClusterParams, gate: QualityGate, embedder: str, waiting=None
) -> int:
    """Group every face of the embedder again, each owner's apart (owners with faces waiting
    to be embedded again are left as they are); returns the number of persons afterwards."""
    faces = load_faces(session, gate, embedder=embedder)
    persons = _settle_owners(session)
    held = _owners_of_files(session, waiting)
    claimed: set[int] = set()
    touched: set[int] = set()
    for owner in [owner for owner in faces.distinct_owners() if owner not in held]:
        touched |= _regroup_owner(session, faces.of_owner(owner), persons, owner, params, claimed)
        touched |= _persons_of(session, owner)
    _drop_empty_unconfirmed(session)
    refresh_centroids(session, touched)
    return session.scalar(select(func.count(schema.Person.id)))


def _regroup_owner(
    session: Session, mine: StoredFaces, persons: dict[int, tuple[str | None, bool]],
    owner: str | None, params: ClusterParams, claimed: set[int],
) -> set[int]:
    """Group one owner's faces from scratch around its fixed persons; the persons touched."""
    fixed = {p for p, (o, c) in persons.items() if c and o == owner}
    groups = np.array([p if p in fixed else UNASSIGNED for p in mine.person_ids], dtype=int)
    labels = cluster(mine.embeddings, mine.seedable, params, groups=groups,
                     forbidden=_rejections(session, mine.ids), cannot_link=mine.same_photo_pairs())
    return _write_labels(session, mine, labels, fixed, persons, owner, claimed)


def update_persons(
    session: Session, params: ClusterParams, gate: QualityGate, embedder: str, waiting=None
) -> int:
    """Group the unassigned faces of the embedder, joining existing persons of their owner
    first; an owner whose persons were built on another embedder's vectors is grouped again
    from scratch. Returns the persons count."""
    held = _owners_of_files(session, waiting)
    stale = _owners_with_stale_persons(session, embedder) - held
    loose_all = load_faces(session, gate, where=schema.Face.person_id.is_(None), embedder=embedder)
    persons = _settle_owners(session) if len(loose_all.ids) or stale else {}
    claimed: set[int] = set()
    if stale:
        everything = load_faces(session, gate, embedder=embedder)
        for owner in stale:
            touched = _regroup_owner(session, everything.of_owner(owner), persons, owner, params,
                                     claimed)
            _drop_empty_unconfirmed(session)
            refresh_centroids(session, touched | _persons_of(session, owner))
    for owner in loose_all.distinct_owners():
        if owner in held or owner in stale:
            continue
        loose = loose_all.of_owner(owner)
        rows = session.execute(select(schema.Person.id, schema.Person.centroid).where(
            schema.Person.centroid.is_not(None), schema.Person.owner == owner  # IS NULL for None
        )).all()
        prototypes = [np.frombuffer(blob, dtype=np.float32).reshape(-1, 128) for _, blob in rows]
        person_ids = np.repeat(np.array([p for p, _ in rows], dtype=int),
                               [len(found) for found in prototypes])
        pseudo = len(person_ids)
        labels = cluster(
            np.vstack([*prototypes, loose.embeddings]),
            np.concatenate([np.zeros(pseudo, bool), loose.seedable]), params,
            groups=np.concatenate([person_ids, np.full(len(loose.ids), UNASSIGNED)]),
            forbidden=_rejections(session, loose.ids) + np.array([pseudo, 0]),
            cannot_link=loose.same_photo_pairs(offset=pseudo),
        )[pseudo:]
        fixed = set(person_ids.tolist())
        refresh_centroids(session, _write_labels(session, loose, labels, fixed, persons, owner,
                                                 claimed))
    return session.scalar(select(func.count(schema.Person.id)))


def _owners_of_files(session: Session, file_ids) -> set[str | None]:
    """The owners of the files a query of file ids selects (none when it is None)."""
    if file_ids is None:
        return set()
    return set(session.scalars(select(face_owner()).select_from(schema.File).join(schema.Root)
                               .where(schema.File.id.in_(file_ids)).distinct()))


def _persons_of(session: Session, owner: str | None) -> set[int]:
    return set(session.scalars(select(schema.Person.id).where(schema.Person.owner == owner)))


def _owners_with_stale_persons(session: Session, embedder: str) -> set[str | None]:
    """Owners holding a person whose centroid was computed from another embedder's faces."""
    return set(session.scalars(select(schema.Person.owner).distinct().where(
        schema.Person.centroid.is_not(None), schema.Person.embedder != embedder)))


def _settle_owners(session: Session) -> dict[int, tuple[str | None, bool]]:
    """Give each person the owner all its faces share (persons from before owners were
    recorded); returns person id → (owner, fixed): fixed when confirmed or hidden."""
    owners: dict[int, set[str | None]] = {}
    placed = (select(schema.Face.person_id, face_owner())
              .join(schema.File, schema.File.id == schema.Face.file_id).join(schema.Root)
              .where(schema.Face.person_id.is_not(None)).distinct())
    for person_id, owner in session.execute(placed):
        owners.setdefault(person_id, set()).add(owner)
    persons = {}
    for person_id, owner, confirmed, hidden in session.execute(
        select(schema.Person.id, schema.Person.owner, schema.Person.confirmed, schema.Person.hidden)
    ):
        found = owners.get(person_id, set())
        if len(found) == 1 and owner not in found:
            owner = next(iter(found))
            session.execute(update(schema.Person).where(schema.Person.id == person_id)
                            .values(owner=owner))
        persons[person_id] = (owner, bool(confirmed or hidden))
    return persons


def _rejections(session: Session, face_ids: np.ndarray) -> np.ndarray:
    """(face row, person id) for each rejection of the given faces."""
    row_of_face = {int(face_id): row for row, face_id in enumerate(face_ids)}
    rejection = schema.FaceRejection
    rejections = session.execute(select(rejection.face_id, rejection.person_id))
    pairs = [(row_of_face[face], person) for face, person in rejections if face in row_of_face]
    return np.array(pairs, dtype=int).reshape(-1, 2)


def _write_labels(
    session: Session, faces: StoredFaces, labels: np.ndarray, fixed: set[int],
    persons: dict[int, tuple[str | None, bool]], owner: str | None, claimed: set[int],
) -> set[int]:
    """Store one owner's cluster labels as persons; returns the ids of persons whose faces
    changed.

    Labels that are fixed person ids stay as they are; every other label becomes a person
    of owner, reusing the unfixed person of owner (of ``persons``) most of its faces were in
    when no other label claimed it. Persons used are added to ``claimed``.
    """
    reusable = {p for p, (o, c) in persons.items() if not c and o == owner}
    persons_of_label: dict[int, int] = {}
    for label in _in_order_of_first_face(labels):
        if label in fixed:
            persons_of_label[label] = label
            continue
        previous = Counter(int(p) for p in faces.person_ids[labels == label] if p in reusable)
        reuse = next((p for p, _ in previous.most_common() if p not in claimed), None)
        if reuse is None:
            person = schema.Person(owner=owner)
            session.add(person)
            session.flush()
            reuse = person.id
        claimed.add(reuse)
        persons_of_label[label] = reuse
    touched: set[int] = set()
    for face_id, old, label in zip(faces.ids, faces.person_ids, labels):
        new = UNASSIGNED if label == UNASSIGNED else persons_of_label[int(label)]
        if new != old:
            session.execute(update(schema.Face).where(schema.Face.id == int(face_id))
                            .values(person_id=None if new == UNASSIGNED else new))
            touched |= {int(p) for p in (old, new) if p != UNASSIGNED}
    return touched


def _in_order_of_first_face(labels: np.ndarray) -> list[int]:
    assigned = labels[labels != UNASSIGNED]
    _, first = np.unique(assigned, return_index=True)
    return [int(assigned[i]) for i in sorted(first)]


def _drop_empty_unconfirmed(session: Session) -> None:
    """Unconfirmed persons left without faces are gone; confirmed or hidden ones stay."""
    with_faces = select(schema.Face.person_id).where(schema.Face.person_id.is_not(None))
    session.execute(delete(schema.Person).where(
        schema.Person.confirmed.is_(False), schema.Person.hidden.is_(False),
        ~schema.Person.id.in_(with_faces),
    ))


def refresh_centroids(session: Session, person_ids: set[int]) -> None:
    """Recompute the stored prototypes of these persons from their faces.

    They are the prototypes (``clustering.person_prototypes``, at the embedder's link
    distance) of its faces of one embedder, the one most of them have (all of them but while
    faces are being embedded again), stored as k × 128 float32 with that embedder.
    """
    ordered = sorted(person_ids)
    for start in range(0, len(ordered), CENTROID_BATCH):
        batch = ordered[start : start + CENTROID_BATCH]
        vectors: dict[int, dict[str, list[np.ndarray]]] = {}
        query = (select(schema.Face.person_id, schema.Face.embedding, schema.Face.embedder)
                 .where(schema.Face.person_id.in_(batch)))
        for person_id, blob, embedder in session.execute(query):
            vector = np.frombuffer(blob, dtype=np.float32)
            vectors.setdefault(person_id, {}).setdefault(embedder, []).append(vector)
        for person_id in batch:
            prototypes, embedder = None, None
            if person_id in vectors:
                embedder, faces = max(vectors[person_id].items(), key=lambda item: len(item[1]))
                link = EMBEDDER_DISTANCES[embedder].link
                prototypes = person_prototypes(np.stack(faces), link).astype(np.float32).tobytes()
            session.execute(update(schema.Person).where(schema.Person.id == person_id)
                            .values(centroid=prototypes, embedder=embedder))
