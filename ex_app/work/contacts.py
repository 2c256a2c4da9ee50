"""Reading contacts into the store: a user's Nextcloud address books, or a local .vcf file.

A Nextcloud address book is read again only when its sync token changed since the last read
(or the face embedder did); each contact photo's one clear face is embedded
(:func:`ex_app.people.contacts.contact_face`) and the book's faces replace what it held.
Books the user no longer has are forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nc_py_api import AsyncNextcloudApp
from sqlalchemy.orm import Session, sessionmaker

from ex_app.sources import contacts as source
from ex_app.store import contacts as store

log = logging.getLogger(__name__)

NEXTCLOUD_BOOKS = "/addressbooks/"  # where the locations of Nextcloud address books start
EmbedPhoto = Callable[[bytes], tuple[np.ndarray | None, str]]


@dataclass
class ContactsRead:
    """What a read found: books read (unchanged ones are skipped), contacts, faces kept, and
    why other contacts' photos were not used."""

    books: int = 0
    unchanged: int = 0
    contacts: int = 0
    faces: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # contact name → why


def embed_contacts(contacts: list[source.Contact], embed: EmbedPhoto, report: ContactsRead
                   ) -> list[store.StoredContactFace]:
    """The faces of the contacts' photos; the others are noted in the report."""
    faces = []
    for contact in contacts:
        report.contacts += 1
        if contact.photo is None:
            report.skipped[contact.name] = contact.problem or "no photo"
            continue
        embedding, problem = embed(contact.photo)
        if embedding is None:
            report.skipped[contact.name] = problem
            continue
        faces.append(store.StoredContactFace(contact.uid, contact.name, embedding))
    report.faces += len(faces)
    return faces


async def read_nextcloud_contacts(sessions: sessionmaker[Session], nc: AsyncNextcloudApp,
                                  user: str, embed: EmbedPhoto, embedder: str) -> ContactsRead:
    """Read the user's own address books whose sync token changed (nc acts as user)."""
    report = ContactsRead()
    books = await source.address_books(nc, user)
    for book in books:
        with sessions() as session:
            known = store.book_state(session, user, book.path)
        if known == (book.sync_token, embedder):
            report.unchanged += 1
            continue
        contacts = await source.contacts_of(nc, book)
        faces = await asyncio.to_thread(embed_contacts, contacts, embed, report)
        with sessions.begin() as session:
            store.replace_book(session, user, book.path, book.sync_token, embedder, faces)
        report.books += 1
    with sessions.begin() as session:
        store.forget_books_except(session, user, {b.path for b in books}, NEXTCLOUD_BOOKS)
    if report.books:
        log.info("%s: %d address books read, %d contacts, %d faces", user, report.books,
                 report.contacts, report.faces)
    return report


def import_vcf(sessions: sessionmaker[Session], path: Path, owner: str | None, embed: EmbedPhoto,
               embedder: str) -> ContactsRead:
    """Read a .vcf file as an address book of owner (None: the local scans' persons);
    raises source.ContactsError when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise source.ContactsError(f"cannot read {path}: {error.strerror or error}") from error
    contacts = source.parse_vcards(text)
    if not contacts and "BEGIN:VCARD" not in text.upper():
        raise source.ContactsError(f"{path} holds no vCard")
    report = ContactsRead(books=1)
    faces = embed_contacts(contacts, embed, report)
    with sessions.begin() as session:
        store.replace_book(session, owner, str(path.resolve()), "", embedder, faces)
    return report
