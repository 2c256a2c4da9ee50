"""Grouping the stored faces into persons, obeying every user decision.

Two ways, one rule set (``ex_app.people.clustering``):
- :func:`regroup_all` groups every face that is not in a confirmed person, from scratch;
- :func:`update_persons` groups only the unassigned faces, with every existing person
  standing in as one fixed pseudo-face at its stored mean embedding: new faces join the
  nearest person (found through a nearest-neighbour index over persons, never over all
  faces) or form new persons where enough of them agree.
Faces of one photo are never put in one person, and faces of different owners never share
one: each owner's faces (a Nextcloud user's, or the local scans') are grouped on their own,
and each person records its owner (:func:`face_owner`).
Confirmed persons (the user named, merged or corrected them) are fixed groups in both: never
split, dissolved or merged; a face a person rejected never joins it. Unconfirmed persons keep
their id across a re-grouping when most of their faces stay together.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from ex_app.people.clustering import (
    UNASSIGNED,
    ClusterParams,
    QualityGate,
    cluster,
    passes_quality_gate,
)
from ex_app.store import schema
from ex_app.work.nextcloud_scan import NEXTCLOUD_SOURCE

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
        return StoredFaces(
            self.ids[rows], self.embeddings[rows], self.seedable[rows],
            self.person_ids[rows], self.file_ids[rows], self.owners[rows],
        )

    def distinct_owners(self) -> list[str | None]:
        return list(dict.fromkeys(self.owners.tolist()))

    def same_photo_pairs(self, offset: int = 0) -> np.ndarray:
        """(row, row) pairs of faces found in one photo, rows shifted by offset."""
        rows_of_file: dict[int, list[int]] = {}
        for row, file_id in enumerate(self.file_ids):
            rows_of_file.setdefault(int(file_id), []).append(row + offset)
        pairs = [
            (a, b)
            for rows in rows_of_file.values()
            for i, a in enumerate(rows)
            for b in rows[i + 1 :]
        ]
        return np.array(pairs, dtype=int).reshape(-1, 2)


def face_owner():
    """SQL expression over a query joined with roots: the Nextcloud user whose files hold a
    face, or NULL for local scans."""
    return case((schema.Root.source == NEXTCLOUD_SOURCE, schema.Root.location), else_=None)


def load_faces(session: Session, gate: QualityGate, where=None) -> StoredFaces:
    """The faces matching where (all when None), by id, with the gate applied."""
    query = select(
        schema.Face.id,
        schema.Face.embedding,
        schema.Face.w,
        schema.Face.h,
        schema.Face.score,
        schema.Face.sharpness,
        schema.Face.pose,
        schema.Face.person_id,
        schema.Face.file_id,
        face_owner(),
    ).join(schema.File, schema.File.id == schema.Face.file_id).join(schema.Root).order_by(
        schema.Face.id
    )
    if where is not None:
        query = query.where(where)
    rows = session.execute(query).all()
    if not rows:
        empty = np.empty(0, dtype=int)
        return StoredFaces(
            empty, np.empty((0, 128), np.float32), empty.astype(bool), empty, empty,
            np.empty(0, dtype=object),
        )
    columns = list(zip(*rows))
    sizes = np.minimum(np.array(columns[2]), np.array(columns[3]))
    return StoredFaces(
        ids=np.array(columns[0]),
        embeddings=np.stack([np.frombuffer(blob, dtype=np.float32) for blob in columns[1]]),
        seedable=passes_quality_gate(
            sizes, np.array(columns[4]), np.array(columns[5]), np.array(columns[6]), gate
        ),
        person_ids=np.array([UNASSIGNED if p is None else p for p in columns[7]]),
        file_ids=np.array(columns[8]),
        owners=_objects(columns[9]),
    )


def _objects(values) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def regroup_all(session: Session, params: ClusterParams, gate: QualityGate) -> int:
    """Group every face again, each owner's apart; returns the number of persons afterwards."""
    faces = load_faces(session, gate)
    persons = _settle_owners(session)
    claimed: set[int] = set()
    touched: set[int] = set()
    for owner in faces.distinct_owners():
        mine = faces.of_owner(owner)
        confirmed = {p for p, (o, c) in persons.items() if c and o == owner}
        groups = np.array([p if p in confirmed else UNASSIGNED for p in mine.person_ids], dtype=int)
        labels = cluster(
            mine.embeddings,
            mine.seedable,
            params,
            groups=groups,
            forbidden=_rejections(session, mine.ids),
            cannot_link=mine.same_photo_pairs(),
        )
        reusable = {p for p, (o, c) in persons.items() if not c and o == owner} - claimed
        touched |= _write_labels(session, mine, labels, confirmed, reusable, owner, claimed)
    _drop_empty_unconfirmed(session)
    refresh_centroids(session, touched)
    return session.scalar(select(func.count(schema.Person.id)))


def update_persons(session: Session, params: ClusterParams, gate: QualityGate) -> int:
    """Group the unassigned faces, joining existing persons of their owner first; returns the
    persons count."""
    loose_all = load_faces(session, gate, where=schema.Face.person_id.is_(None))
    persons = _settle_owners(session) if len(loose_all.ids) else {}
    claimed: set[int] = set()
    for owner in loose_all.distinct_owners():
        loose = loose_all.of_owner(owner)
        rows = session.execute(
            select(schema.Person.id, schema.Person.centroid).where(
                schema.Person.centroid.is_not(None),
                schema.Person.owner.is_(None) if owner is None else schema.Person.owner == owner,
            )
        ).all()
        person_ids = np.array([person_id for person_id, _ in rows], dtype=int)
        centroids = [np.frombuffer(blob, dtype=np.float32) for _, blob in rows]
        pseudo = len(person_ids)
        rejections = _rejections(session, loose.ids)
        labels = cluster(
            np.vstack([*centroids, loose.embeddings]) if pseudo else loose.embeddings,
            np.concatenate([np.zeros(pseudo, bool), loose.seedable]),
            params,
            groups=np.concatenate([person_ids, np.full(len(loose.ids), UNASSIGNED)]),
            forbidden=rejections + np.array([pseudo, 0]),
            cannot_link=loose.same_photo_pairs(offset=pseudo),
        )[pseudo:]
        reusable = {p for p, (o, c) in persons.items() if not c and o == owner} - claimed
        touched = _write_labels(
            session, loose, labels, set(person_ids.tolist()), reusable, owner, claimed
        )
        refresh_centroids(session, touched)
    return session.scalar(select(func.count(schema.Person.id)))


def _settle_owners(session: Session) -> dict[int, tuple[str | None, bool]]:
    """Give each person the owner all its faces share (persons from before owners were
    recorded); returns person id → (owner, confirmed)."""
    owners: dict[int, set[str | None]] = {}
    for person_id, owner in session.execute(
        select(schema.Face.person_id, face_owner())
        .join(schema.File, schema.File.id == schema.Face.file_id)
        .join(schema.Root)
        .where(schema.Face.person_id.is_not(None))
        .distinct()
    ):
        owners.setdefault(person_id, set()).add(owner)
    persons = {}
    for person_id, owner, confirmed in session.execute(
        select(schema.Person.id, schema.Person.owner, schema.Person.confirmed)
    ):
        found = owners.get(person_id, set())
        if len(found) == 1 and owner not in found:
            owner = next(iter(found))
            session.execute(
                update(schema.Person).where(schema.Person.id == person_id).values(owner=owner)
            )
        persons[person_id] = (owner, confirmed)
    return persons


def _rejections(session: Session, face_ids: np.ndarray) -> np.ndarray:
    """(face row, person id) for each rejection of the given faces."""
    row_of_face = {int(face_id): row for row, face_id in enumerate(face_ids)}
    pairs = [
        (row_of_face[face_id], person_id)
        for face_id, person_id in session.execute(
            select(schema.FaceRejection.face_id, schema.FaceRejection.person_id)
        )
        if face_id in row_of_face
    ]
    return np.array(pairs, dtype=int).reshape(-1, 2)


def _write_labels(
    session: Session,
    faces: StoredFaces,
    labels: np.ndarray,
    fixed: set[int],
    reusable: set[int],
    owner: str | None,
    claimed: set[int],
) -> set[int]:
    """Store one owner's cluster labels as persons; returns the ids of persons whose faces
    changed.

    Labels that are fixed person ids stay as they are; every other label becomes a person
    of owner, reusing the unconfirmed person of owner (in ``reusable``) most of its faces
    were in when that one is free. Persons used are added to ``claimed``.
    """
    persons_of_label: dict[int, int] = {}
    for label in _in_order_of_first_face(labels):
        if label in fixed:
            persons_of_label[label] = label
            continue
        previous = Counter(
            int(p) for p in faces.person_ids[labels == label] if p != UNASSIGNED and p in reusable
        )
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
            session.execute(
                update(schema.Face)
                .where(schema.Face.id == int(face_id))
                .values(person_id=None if new == UNASSIGNED else new)
            )
            touched |= {int(p) for p in (old, new) if p != UNASSIGNED}
    return touched


def _in_order_of_first_face(labels: np.ndarray) -> list[int]:
    assigned = labels[labels != UNASSIGNED]
    _, first = np.unique(assigned, return_index=True)
    return [int(assigned[i]) for i in sorted(first)]


def _drop_empty_unconfirmed(session: Session) -> None:
    """Unconfirmed persons left without faces are gone; confirmed ones stay (a named nobody)."""
    session.execute(
        delete(schema.Person).where(
            schema.Person.confirmed.is_(False),
            ~schema.Person.id.in_(
                select(schema.Face.person_id).where(schema.Face.person_id.is_not(None))
            ),
        )
    )


def refresh_centroids(session: Session, person_ids: set[int]) -> None:
    """Recompute the stored mean embedding of these persons from their faces."""
    ordered = sorted(person_ids)
    for start in range(0, len(ordered), CENTROID_BATCH):
        batch = ordered[start : start + CENTROID_BATCH]
        sums: dict[int, np.ndarray] = {}
        counts: Counter[int] = Counter()
        for person_id, blob in session.execute(
            select(schema.Face.person_id, schema.Face.embedding).where(
                schema.Face.person_id.in_(batch)
            )
        ):
            embedding = np.frombuffer(blob, dtype=np.float32)
            sums[person_id] = sums.get(person_id, 0) + embedding
            counts[person_id] += 1
        for person_id in batch:
            centroid = sums[person_id] / counts[person_id] if person_id in sums else None
            session.execute(
                update(schema.Person)
                .where(schema.Person.id == person_id)
                .values(centroid=None if centroid is None else centroid.astype(np.float32).tobytes())
            )
