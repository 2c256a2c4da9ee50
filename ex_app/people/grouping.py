"""Grouping faces into persons.

A first, conservative grouping: density-based clustering (DBSCAN) of the face embeddings,
so a person forms only where enough mutually close faces agree, and the rest stay unassigned.
Named persons keep their faces; only unnamed persons are regrouped.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ex_app.store import schema

UNASSIGNED = -1


def cluster_embeddings(embeddings: np.ndarray, max_distance: float, min_faces: int) -> np.ndarray:
    """A cluster number per embedding (UNASSIGNED for faces in no cluster)."""
    if len(embeddings) == 0:
        return np.empty(0, dtype=int)
    return DBSCAN(eps=max_distance, min_samples=min_faces).fit_predict(embeddings)


def regroup_persons(session: Session, max_distance: float, min_faces: int) -> int:
    """Regroup every face that is not in a named person; returns the number of persons made.

    Clusters become persons in the order of their oldest face, so the same faces always
    give the same persons.
    """
    named = select(schema.Person.id).where(schema.Person.name.is_not(None))
    session.execute(
        update(schema.Face)
        .where(schema.Face.person_id.is_not(None), schema.Face.person_id.not_in(named))
        .values(person_id=None)
    )
    session.execute(
        schema.Person.__table__.delete().where(schema.Person.name.is_(None))
    )
    rows = session.execute(
        select(schema.Face.id, schema.Face.embedding)
        .where(schema.Face.person_id.is_(None))
        .order_by(schema.Face.id)
    ).all()
    if not rows:
        return 0
    embeddings = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
    clusters = cluster_embeddings(embeddings, max_distance, min_faces)
    persons: dict[int, schema.Person] = {}
    for (face_id, _), cluster in zip(rows, clusters):
        if cluster == UNASSIGNED:
            continue
        if cluster not in persons:
            persons[cluster] = schema.Person()
            session.add(persons[cluster])
            session.flush()
        session.execute(
            update(schema.Face).where(schema.Face.id == face_id).values(person_id=persons[cluster].id)
        )
    return len(persons)
