"""Recognize's tags as Nextcloud collaborative system tags on the users' files.

A tag is created once (visible and assignable, so users can search and correct them) and
assigned to a file as a user who sees that file. A small ledger remembers which
assignments this app made: only those are ever removed, when the tag no longer applies. A
tag a user gave a file (even one with the same name) is never touched, and a tag of ours
that a user took off is not given back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from nc_py_api import AsyncNextcloudApp, NextcloudException


class TagLedger:
    """Which tags this app assigned to which Nextcloud file ids (a SQLite file)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS assigned"
            " (file_id INTEGER, tag TEXT, PRIMARY KEY (file_id, tag))"
        )

    def tags(self, file_id: int) -> set[str]:
        rows = self._db.execute("SELECT tag FROM assigned WHERE file_id = ?", (file_id,))
        return {tag for (tag,) in rows}

    def add(self, file_id: int, tag: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO assigned VALUES (?, ?)", (file_id, tag))

    def remove(self, file_id: int, tag: str) -> None:
        self._db.execute("DELETE FROM assigned WHERE file_id = ? AND tag = ?", (file_id, tag))

    def close(self) -> None:
        self._db.close()


class NextcloudTagSink:
    """Makes a file's Recognize tags in Nextcloud match the tags found for it."""

    def __init__(self, ledger: TagLedger):
        self.ledger = ledger
        self._tag_ids: dict[str, int] = {}

    async def apply(self, nc: AsyncNextcloudApp, file_id: int, tags: Iterable[str]) -> None:
        """Assign the missing tags and remove the ones this app set that no longer apply.

        ``nc`` acts as a user who can see the file.
        """
        wanted = set(tags)
        ours = self.ledger.tags(file_id)
        present = {tag.display_name for tag in await nc.files.get_tags(file_id)}
        for name in sorted(wanted - present - ours):  # ours but absent: a user removed it
            await nc.files.assign_tag(file_id, await self.tag_id(nc, name))
            self.ledger.add(file_id, name)
        for name in sorted(ours - wanted):
            if name in present:
                await nc.files.unassign_tag(file_id, await self.tag_id(nc, name))
            self.ledger.remove(file_id, name)

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
