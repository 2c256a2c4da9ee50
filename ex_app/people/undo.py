"""Undo of a user's last action on persons: the rows it may change, saved before it runs.

A :class:`Snapshot` holds, for the persons and faces an action names, the persons' rows, the
faces' person and pin, and the rejections and "not the same" pairs that involve them.
Restoring it puts those back (persons a merge deleted come back with their ids) and deletes
the persons the action created. Faces the grouping placed meanwhile stay where they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from ex_app.people.grouping import refresh_centroids
from ex_app.people.operations import distinct_pairs_of
from ex_app.store import schema

PERSON_COLUMNS = ("owner", "name", "hidden", "confirmed", "centroid", "created_at")


@dataclass
class Snapshot:
    """What one action may change; ``label`` says which action, for the page."""

    label: str
    persons: dict[int, dict] = field(default_factory=dict)
    faces: dict[int, tuple[int | None, bool]] = field(default_factory=dict)
    rejections: set[tuple[int, int]] = field(default_factory=set)
    distinct: set[tuple[int, int]] = field(default_factory=set)
    created: set[int] = field(default_factory=set)  # persons the action made

    @classmethod
    def take(
        cls, session: Session, label: str, person_ids: set[int], face_ids: set[int] = frozenset()
    ) -> Snapshot:
        snapshot = cls(label)
        persons = select(schema.Person).where(schema.Person.id.in_(person_ids))
        for person in session.scalars(persons):
            snapshot.persons[person.id] = {c: getattr(person, c) for c in PERSON_COLUMNS}
        faces = select(schema.Face.id, schema.Face.person_id, schema.Face.pinned).where(
            or_(schema.Face.id.in_(face_ids), schema.Face.person_id.in_(person_ids)))
        snapshot.faces = {face: (person, pinned) for face, person, pinned in session.execute(faces)}
        rejections = select(schema.FaceRejection.face_id, schema.FaceRejection.person_id)
        snapshot.rejections = set(map(tuple, session.execute(
            rejections.where(_rejections_of(snapshot.faces, person_ids)))))
        pairs = select(schema.DistinctPersons.person_id, schema.DistinctPersons.other_id)
        snapshot.distinct = set(map(tuple, session.execute(
            pairs.where(distinct_pairs_of(person_ids)))))
        return snapshot

    def restore(self, session: Session) -> None:
        """Put the saved rows back and delete the persons the action created."""
        for person_id, values in self.persons.items():
            person = session.get(schema.Person, person_id)
            if person is None:
                session.add(schema.Person(id=person_id, **values))
            else:
                for column, value in values.items():
                    setattr(person, column, value)
        session.flush()
        for face_id, (person_id, pinned) in self.faces.items():
            session.execute(update(schema.Face).where(schema.Face.id == face_id)
                            .values(person_id=person_id, pinned=pinned))
        created = self.created - set(self.persons)
        session.execute(update(schema.Face).where(schema.Face.person_id.in_(created))
                        .values(person_id=None))
        session.execute(delete(schema.Person).where(schema.Person.id.in_(created)))
        persons = set(self.persons)
        session.execute(delete(schema.FaceRejection).where(_rejections_of(self.faces, persons)))
        session.add_all(schema.FaceRejection(face_id=f, person_id=p) for f, p in self.rejections)
        session.execute(delete(schema.DistinctPersons).where(distinct_pairs_of(persons)))
        session.add_all(schema.DistinctPersons(person_id=a, other_id=b) for a, b in self.distinct)
        session.flush()
        refresh_centroids(session, persons)


def _rejections_of(face_ids, person_ids):
    """The rejections of these faces or by these persons."""
    rejection = schema.FaceRejection
    return or_(rejection.face_id.in_(face_ids), rejection.person_id.in_(person_ids))
