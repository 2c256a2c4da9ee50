"""Recognize's tags as Nextcloud collaborative system tags on the users' files.

A tag is created once (visible and assignable, so users can search and correct them) and
assigned to a file as a user who sees that file. The store's ``sink_tags`` table remembers
which assignments this app made: only those are ever removed, when the tag no longer
applies. A tag a user gave a file (even one with the same name) is never touched, and a tag
of ours that a user took off is not given back.

The files whose tags must be made again are the outbox's ``TAGS`` marks
(:mod:`ex_app.store.outbox`): :meth:`NextcloudTagSink.drain` works through them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from nc_py_api import AsyncNextcloudApp, NextcloudException
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.store import outbox, schema

log = logging.getLogger(__name__)


class NextcloudTagSink:
    """Makes a file's Recognize tags in Nextcloud match the tags found for it."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions
        self._tag_ids: dict[str, int] = {}

    def assigned(self, remote_id: int) -> set[str]:
        """The tags this app assigned to the Nextcloud file and has not taken off."""
        with self.sessions() as session:
            return set(
                session.scalars(
                    select(schema.SinkTag.tag).where(schema.SinkTag.remote_id == remote_id)
                )
            )

    async def apply(self, nc: AsyncNextcloudApp, remote_id: int, tags: Iterable[str]) -> None:
        """Assign the missing tags and remove the ones this app set that no longer apply.

        ``nc`` acts as a user who can see the file.
        """
        wanted = set(tags)
        ours = self.assigned(remote_id)
        if wanted == ours:
            return  # nothing to assign or take off: Nextcloud is not asked
        present = {tag.display_name for tag in await nc.files.get_tags(remote_id)}
        for name in sorted(wanted - present - ours):  # ours but absent: a user removed it
            await nc.files.assign_tag(remote_id, await self.tag_id(nc, name))
            with self.sessions.begin() as session:
                session.merge(schema.SinkTag(remote_id=remote_id, tag=name))
        for name in sorted(ours - wanted):
            if name in present:
                await nc.files.unassign_tag(remote_id, await self.tag_id(nc, name))
            with self.sessions.begin() as session:
                session.execute(
                    delete(schema.SinkTag).where(
                        schema.SinkTag.remote_id == remote_id, schema.SinkTag.tag == name
                    )
                )

    async def drain(
        self, client: Callable[[str], AsyncNextcloudApp], person_names: bool, retry_delay: float
    ) -> int:
        """Make the tags of the files marked for this sink match the store, each as its user
        (``client(user)``); a file whose Nextcloud calls fail keeps its marks for a later
        drain (after retry_delay seconds, doubled each time). Returns how many files were done.
        """
        finished = 0
        while True:
            with self.sessions.begin() as session:
                marks = outbox.take(session, outbox.TAGS)
                due = outbox.tags_due(session, {m.file_id for m in marks}, person_names)
            if not marks:
                return finished
            by_file: dict[int, list[schema.SinkOutbox]] = {}
            for held in marks:
                by_file.setdefault(held.file_id, []).append(held)
            for file_id, held in by_file.items():
                file = due.get(file_id)
                try:
                    if file is not None:
                        await self.apply(client(file.user), file.remote_id, file.tags)
                except Exception as error:  # noqa: BLE001 (Nextcloud away: a later drain tries again)
                    log.warning("tagging %s of %s failed: %s", file.path, file.user, error)
                    with self.sessions.begin() as session:
                        outbox.retry(session, held, retry_delay)
                else:
                    with self.sessions.begin() as session:
                        outbox.done(session, held)
                    finished += 1

    async def tag_id(self, nc: AsyncNextcloudApp, name: str) -> int:
        """The id of the collaborative tag with this name, created if there is none."""
        if name not in self._tag_ids:
            self._tag_ids.update({t.display_name: t.tag_id for t in await nc.files.list_tags()})
        if name not in self._tag_ids:
            try:
                await nc.files.create_tag(name, user_visible=True, user_assignable=True)
            except NextcloudException as error:
                if error.status_code != 409:  # 409: made meanwhile by someone else
                    raise
            self._tag_ids[name] = (await nc.files.tag_by_name(name)).tag_id
        return self._tag_ids[name]

