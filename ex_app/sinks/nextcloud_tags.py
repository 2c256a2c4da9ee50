"""Recognize's tags as Nextcloud collaborative system tags on the users' files.

A tag is created once (visible and assignable, so users can search and correct them) and
assigned to a file as a user who sees that file. The store's ``sink_tags`` table remembers
which assignments this app made: only those are ever removed, when the tag no longer
applies. A tag a user gave a file (even one with the same name) is never touched, and a tag
of ours that a user took off is not given back.

The files whose tags must be made again are the outbox's ``TAGS`` marks
(:mod:`ex_app.store.outbox`): :meth:`NextcloudTagSink.drain` works through them.

A *restricted* tag (the sensitive-photo filter's) is visible but not user-assignable: only
admins, and members of the groups an admin lets assign it, can assign or remove it. Only an
admin may create one, so this app creates it acting as a member of Nextcloud's ``admin``
group; it still assigns it as the file's user, which Nextcloud allows where that user may
assign the tag (README: "Sensitive photos").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable

from nc_py_api import AsyncNextcloudApp, NextcloudException
from nc_py_api.files import SystemTag
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.store import outbox, schema

log = logging.getLogger(__name__)


class TagRefused(Exception):
    """Nextcloud would not let this app create or assign a restricted tag; says what to do."""


class NextcloudTagSink:
    """Makes a file's Recognize tags in Nextcloud match the tags found for it.

    ``restricted``: names of the tags to create restricted (visible, not user-assignable).
    """

    def __init__(self, sessions: sessionmaker[Session], restricted: Collection[str] = ()):
        self.sessions = sessions
        self.restricted = frozenset(restricted)
        self._tag_ids: dict[str, int] = {}
        self._admin: AsyncNextcloudApp | None = None

    def assigned(self, remote_id: int) -> set[str]:
        """The tags this app assigned to the Nextcloud file and has not taken off."""
        with self.sessions() as session:
            return set(session.scalars(select(schema.SinkTag.tag).where(schema.SinkTag.remote_id == remote_id)))

    async def apply(self, nc: AsyncNextcloudApp, remote_id: int, tags: Iterable[str]) -> None:
        """Assign the missing tags and remove the ones this app set that no longer apply;
        ``nc`` acts as a user who can see the file."""
        wanted = set(tags)
        ours = self.assigned(remote_id)
        if wanted == ours:
            return  # nothing to assign or take off: Nextcloud is not asked
        present = {tag.display_name for tag in await nc.files.get_tags(remote_id)}
        for name in sorted(wanted - present - ours):  # ours but absent: a user removed it
            tag_id = await self.tag_id(nc, name)
            try:
                await nc.files.assign_tag(remote_id, tag_id)
            except NextcloudException as error:
                if error.status_code != 403 or name not in self.restricted:
                    raise
                raise TagRefused(
                    f"Nextcloud does not let {await nc.user!r} assign the restricted tag {name!r} "
                    f"(id {tag_id}, HTTP 403): an admin adds that user's groups to the tag's "
                    'groups (README: "Sensitive photos")'
                ) from error
            with self.sessions.begin() as session:
                session.merge(schema.SinkTag(remote_id=remote_id, tag=name))
        for name in sorted(ours - wanted):
            if name in present:
                await nc.files.unassign_tag(remote_id, await self.tag_id(nc, name))
            with self.sessions.begin() as session:
                session.execute(delete(schema.SinkTag).where(schema.SinkTag.remote_id == remote_id,
                                                             schema.SinkTag.tag == name))

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
                try:
                    if file := due.get(file_id):
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
        """The id of the tag with this name and this app's visibility for it, created (as an
        admin, for a restricted one) if there is none."""
        if name not in self._tag_ids:
            self._tag_ids.update(self._ours(await nc.files.list_tags()))
        if name not in self._tag_ids:
            restricted = name in self.restricted
            creator = await self.admin() if restricted else nc
            try:
                await creator.files.create_tag(name, user_visible=True, user_assignable=not restricted)
            except NextcloudException as error:
                if error.status_code != 409:  # 409: made meanwhile by someone else
                    raise
            self._tag_ids.update(self._ours(await creator.files.list_tags()))
        return self._tag_ids[name]

    def _ours(self, tags: Iterable[SystemTag]) -> dict[str, int]:
        """Tag ids by name, of the tags with the visibility this app gives that name."""
        return {t.display_name: t.tag_id for t in tags
                if t.user_visible and t.user_assignable != (t.display_name in self.restricted)}

    async def admin(self) -> AsyncNextcloudApp:
        """This app acting as a member of Nextcloud's admin group (looked up once)."""
        if self._admin is None:
            for user in await AsyncNextcloudApp().users_list():
                client = AsyncNextcloudApp(user=user)
                if "admin" in (await client.users.get_user()).groups:
                    self._admin = client
                    break
            else:
                raise TagRefused("no member of Nextcloud's admin group to create restricted tags")
        return self._admin

