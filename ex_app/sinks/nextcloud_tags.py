"""Recognize's tags as Nextcloud collaborative system tags on the users' files.

A tag is created once (visible and assignable, so users can search and correct them) and
assigned to a file as a user who sees that file. The store's ``sink_tags`` table remembers
which assignments this app made: only those are ever removed, when the tag no longer
applies. A tag a user gave a file (even one with the same name) is never touched, and a tag
of ours that a user took off is not given back.
"""

from __future__ import annotations

from collections.abc import Iterable

from nc_py_api import AsyncNextcloudApp, NextcloudException
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.store import schema


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

