"""Queries on contacts' faces: the address books read, their faces, rejected names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ex_app.store import schema
from ex_app.store.schema import utcnow


@dataclass(frozen=True)
class StoredContactFace:
    uid: str
    name: str
    embedding: np.ndarray  # 128 float32


def _owned(column, owner: str | None):
    return column.is_(None) if owner is None else column == owner


def _book(owner: str | None, location: str):
    """SQL: the owner's book at location."""
    return _owned(schema.ContactBook.owner, owner) & (schema.ContactBook.location == location)


def book_state(session: Session, owner: str | None, location: str) -> tuple[str, str] | None:
    """(sync token, embedder) of the book as last read, None when never read."""
    query = select(schema.ContactBook.sync_token, schema.ContactBook.embedder)
    row = session.execute(query.where(_book(owner, location))).first()
    return None if row is None else tuple(row)


def replace_book(
    session: Session, owner: str | None, location: str, sync_token: str, embedder: str,
    faces: list[StoredContactFace],
) -> None:
    """Record the book as read now with these faces, in place of what it held."""
    book = session.scalar(select(schema.ContactBook).where(_book(owner, location)))
    if book is None:
        book = schema.ContactBook(owner=owner, location=location)
        session.add(book)
    book.sync_token, book.embedder, book.read_at = sync_token, embedder, utcnow()
    book.faces = [
        schema.ContactFace(uid=f.uid, name=f.name, embedding=f.embedding.astype(np.float32).tobytes())
        for f in faces
    ]


def forget_books_except(session: Session, owner: str | None, locations: set[str], prefix: str) -> int:
    """Delete the owner's books under prefix that are not in locations (deleted in Nextcloud,
    or no longer the owner's); returns how many."""
    query = select(schema.ContactBook.id, schema.ContactBook.location)
    rows = session.execute(query.where(_owned(schema.ContactBook.owner, owner)))
    gone = [
        book_id for book_id, location in rows
        if location.startswith(prefix) and location not in locations
    ]
    if gone:
        session.execute(delete(schema.ContactBook).where(schema.ContactBook.id.in_(gone)))
    return len(gone)


def contact_faces(session: Session, owner: str | None, embedder: str) -> list[StoredContactFace]:
    """The owner's contacts' faces made by the embedder."""
    rows = session.execute(
        select(schema.ContactFace.uid, schema.ContactFace.name, schema.ContactFace.embedding)
        .join(schema.ContactBook)
        .where(_owned(schema.ContactBook.owner, owner), schema.ContactBook.embedder == embedder)
        .order_by(schema.ContactFace.id)
    ).all()
    return [StoredContactFace(uid, name, np.frombuffer(blob, dtype=np.float32)) for uid, name, blob in rows]


def unnamed_persons(session: Session, owner: str | None, embedder: str) -> list[tuple[int, np.ndarray]]:
    """The owner's persons without a name, shown, with prototypes of the embedder: (id,
    k×128 prototypes)."""
    person = schema.Person
    rows = session.execute(
        select(person.id, person.centroid).where(
            _owned(person.owner, owner), person.name.is_(None), person.hidden.is_(False),
            person.centroid.is_not(None), person.embedder == embedder,
        ).order_by(person.id)
    ).all()
    return [(person_id, np.frombuffer(blob, dtype=np.float32).reshape(-1, 128)) for person_id, blob in rows]


def rejected_names(session: Session, person_ids: list[int]) -> dict[int, set[str]]:
    """Per person, the contact names the user said it is not."""
    rejection = schema.ContactRejection
    found: dict[int, set[str]] = {}
    query = select(rejection.person_id, rejection.name).where(rejection.person_id.in_(person_ids))
    for person_id, name in session.execute(query):
        found.setdefault(person_id, set()).add(name)
    return found


def reject_name(session: Session, person_id: int, name: str) -> None:
    if session.get(schema.ContactRejection, (person_id, name)) is None:
        session.add(schema.ContactRejection(person_id=person_id, name=name))
