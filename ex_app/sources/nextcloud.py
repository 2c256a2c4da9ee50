"""The enabled Nextcloud users' files as a source of media, over WebDAV.

Each user's home is walked folder by folder (Depth 1), so marker files apply exactly as in
a local folder. A file that several users see (shares, group folders) is offered once, for
the first user that sees it; users are walked in sorted order so that choice is stable.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from nc_py_api import AsyncNextcloudApp, FsNode, NextcloudException, NextcloudExceptionNotFound

from ex_app.media.kinds import MediaKind, media_kind
from ex_app.sources.markers import excluded_kinds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NextcloudFile:
    """A media file in a user's home: its path there (no leading '/'), and its file id."""

    user: str
    path: str
    file_id: int
    kind: MediaKind
    size: int
    mtime_ns: int
    etag: str


class TooLarge(Exception):
    """A download went past the size cap."""


class _CappedWriter:
    """A binary file that refuses to grow past a cap."""

    def __init__(self, stream, cap: int):
        self._stream, self._cap, self._written = stream, cap, 0

    def write(self, data: bytes) -> int:
        self._written += len(data)
        if self._written > self._cap:
            raise TooLarge(f"larger than the {self._cap} bytes allowed")
        return self._stream.write(data)


class NextcloudSource:
    """Walks users' homes and downloads files, as those users, through AppAPI."""

    def __init__(self, max_download_bytes: int):
        self.max_download_bytes = max_download_bytes
        self._clients: dict[str, AsyncNextcloudApp] = {}
        self.unfinished_users: set[str] = set()  # of the last walk

    def client(self, user: str) -> AsyncNextcloudApp:
        """A Nextcloud client acting as user (one per user, so walks never mix users)."""
        if user not in self._clients:
            self._clients[user] = AsyncNextcloudApp(user=user)
        return self._clients[user]

    async def users(self) -> list[str]:
        """The ids of all users, sorted."""
        return sorted(await AsyncNextcloudApp().users_list())

    async def walk(self, users: Iterable[str]) -> AsyncIterator[NextcloudFile]:
        """Media files of these users, each file id once, honouring marker files.

        A user whose files cannot be listed (disabled, storage away) is logged and left in
        :attr:`unfinished_users`, and the walk goes on with the next user.
        """
        seen: set[int] = set()
        self.unfinished_users = set()
        for user in users:
            try:
                async for found in self.walk_folder(user, ""):
                    if found.file_id not in seen:
                        seen.add(found.file_id)
                        yield found
            except NextcloudException as error:
                log.warning("could not walk the files of %s: %s", user, error)
                self.unfinished_users.add(user)

    async def walk_folder(
        self, user: str, folder: str, inherited: frozenset[MediaKind] = frozenset()
    ) -> AsyncIterator[NextcloudFile]:
        """Media files below one of user's folders, in sorted order; hidden entries skipped.

        Markers in the folder's parents are not looked at; pass what they exclude as
        ``inherited`` (see :meth:`excluded_above`).
        """
        try:
            nodes = sorted(await self.client(user).files.listdir(folder), key=lambda n: n.name)
        except NextcloudExceptionNotFound:
            return  # gone since its parent was listed

        excluded = inherited | excluded_kinds(n.name for n in nodes if not n.is_dir)
        if excluded == frozenset(MediaKind):
            return
        for node in nodes:
            if node.name.startswith("."):
                continue
            if node.is_dir:
                async for found in self.walk_folder(user, node.user_path.rstrip("/"), excluded):
                    yield found
                continue
            kind = media_kind(node.name)
            if kind is not None and kind not in excluded:
                yield _to_file(user, node, kind)

    async def media_at(self, user: str, path: str) -> list[NextcloudFile]:
        """The media file at path, or a folder's media recursively, as the walk would offer
        them (markers above included, hidden entries skipped); [] when there is none.
        Raises FileNotFoundError when user cannot see anything at path."""
        path = path.strip("/")
        if any(part.startswith(".") for part in path.split("/")):
            return []
        try:
            node = await self.client(user).files.by_path(path)
        except NextcloudException as error:
            if error.status_code != 404:
                raise
            node = None
        if node is None:
            raise FileNotFoundError(f"{user} has no file at {path!r}")
        excluded = await self.excluded_above(user, path)
        if node.is_dir:
            return [found async for found in self.walk_folder(user, path, excluded)]
        kind = media_kind(node.name)
        return [_to_file(user, node, kind)] if kind is not None and kind not in excluded else []

    async def excluded_above(self, user: str, path: str) -> frozenset[MediaKind]:
        """The media kinds that marker files in path's folder and its parents exclude."""
        excluded: set[MediaKind] = set()
        parts = path.strip("/").split("/")
        for depth in range(len(parts)):
            folder = "/".join(parts[:depth])
            nodes = await self.client(user).files.listdir(folder)
            excluded |= excluded_kinds(n.name for n in nodes if not n.is_dir)
        return frozenset(excluded)

    async def download(self, file: NextcloudFile, folder: Path) -> Path:
        """Stream the file into a new temporary file in folder; raises TooLarge past the cap."""
        if file.size > self.max_download_bytes:
            raise TooLarge(f"{file.size} bytes, more than the {self.max_download_bytes} allowed")
        suffix = Path(file.path).suffix
        with tempfile.NamedTemporaryFile("wb", dir=folder, suffix=suffix, delete=False) as stream:
            target = Path(stream.name)
            try:
                await self.client(file.user).files.download2stream(
                    file.path, _CappedWriter(stream, self.max_download_bytes)
                )
            except BaseException:
                stream.close()
                target.unlink(missing_ok=True)
                raise
        return target


def _to_file(user: str, node: FsNode, kind: MediaKind) -> NextcloudFile:
    return NextcloudFile(
        user=user,
        path=node.user_path.strip("/"),
        file_id=node.info.fileid,
        kind=kind,
        size=node.info.size,
        mtime_ns=int(node.info.last_modified.timestamp()) * 1_000_000_000,
        etag=node.etag,
    )
