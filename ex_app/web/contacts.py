"""The People page's routes for names from contacts: the names offered to the signed-in
user's persons, and the user's answer to each ("Is this Ann Smith?": yes or no).

Asking for the offers first reads the user's own address books over CardDAV, as that user
(:mod:`ex_app.work.contacts`: at most every ``contacts.refresh_seconds``, and only books
whose sync token changed), unless the user opted out of analysis; when Nextcloud cannot be
read, the offers come from what was read before. Another user's person ids raise NotFound
(answered 404).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from nc_py_api import AsyncNextcloudApp, NextcloudException
from pydantic import BaseModel, Field

from ex_app.engine import Engine
from ex_app.models.store import ModelUnavailable
from ex_app.people import contacts
from ex_app.people.clustering import QualityGate
from ex_app.sources.contacts import ContactsError
from ex_app.service.nextcloud_settings import user_choice
from ex_app.web.dependencies import CurrentEngine, User, UserClient
from ex_app.web.people import PathId
from ex_app.work.contacts import read_nextcloud_contacts

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/people/contacts")


class ContactsReader:
    """When each user's address books were last read; one read per user at a time, and one
    photo in the face analyzer at a time (its OpenCV detector is not shared between threads)."""

    def __init__(self) -> None:
        self.read_at: dict[str, float] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.analyzer_lock = threading.Lock()

    async def refresh(self, engine: Engine, nc: AsyncNextcloudApp, user: str) -> None:
        """Read user's changed address books (nc acts as user) unless read lately."""
        s = engine.settings
        async with self.locks.setdefault(user, asyncio.Lock()):
            if time.monotonic() - self.read_at.get(user, -1e18) < s.contacts.refresh_seconds:
                return
            gate = QualityGate.from_settings(s)

            from ex_app.analyzers.faces import face_analyzer  # OpenCV and dlib: on first use

            def embed(photo: bytes):
                with self.analyzer_lock:
                    return contacts.contact_face(
                        engine.pipeline.part(face_analyzer), gate, photo, s.images.max_side, s.images.max_pixels
                    )

            try:
                await read_nextcloud_contacts(engine.sessions, nc, user, embed, s.faces.embedder)
            except (NextcloudException, ContactsError, ModelUnavailable) as error:
                log.warning("the address books of %s could not be read: %s", user, error)
                return
            self.read_at[user] = time.monotonic()


def contacts_reader(request: Request) -> ContactsReader:
    """The app's one reader of address books (made in :func:`ex_app.main.create_app`)."""
    return request.app.state.contacts_reader


Reader = Annotated[ContactsReader, Depends(contacts_reader)]


@router.get("/suggestions")
async def suggestions(owner: User, nc: UserClient, engine: CurrentEngine, reader: Reader) -> dict:
    """The contact name offered to each of the user's unnamed persons, nearest first."""
    settings = engine.settings
    if not settings.contacts.enabled or not (
        await user_choice(nc, settings.nextcloud.users_enabled_by_default)
    ).enabled:
        return {"suggestions": []}
    await reader.refresh(engine, nc, owner)
    with engine.sessions() as session:
        found = contacts.suggest_names(session, owner, settings.faces.embedder, settings.contacts.distance)
    return {"suggestions": [asdict(s) for s in found]}


class AnswerBody(BaseModel):
    name: str = Field(min_length=1, max_length=1000)  # the name the page showed


@router.post("/suggestions/{person_id}/accept")
def accept(owner: User, engine: CurrentEngine, person_id: PathId, body: AnswerBody) -> dict:
    """Name the person with the name offered to it (404 when it is not offered that name)."""
    with engine.sessions.begin() as session:
        contacts.accept(session, person_id, body.name, owner, engine.settings.faces.embedder,
                        engine.settings.contacts.distance)
    return {"person_id": person_id, "name": body.name}


@router.post("/suggestions/{person_id}/reject")
def reject(owner: User, engine: CurrentEngine, person_id: PathId, body: AnswerBody) -> dict:
    """The person is not that contact: the name is never offered to it again."""
    with engine.sessions.begin() as session:
        contacts.reject(session, person_id, body.name, owner)
    return {}
