"""The enabled Nextcloud users' files as a source of media, over WebDAV.

Each user's home is walked folder by folder (Depth 1), so marker files apply exactly as in
a local folder. A file that several users see (shares, group folders) is offered once, for
the first user that sees it; users are walked in sorted order so that choice is stable.
A file's content fingerprint is its WebDAV etag, so nothing is downloaded to find changes;
a file is downloaded to a temporary file only to be analyzed (or shown), then deleted.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nc_py_api import AsyncNextcloudApp, FsNode, NextcloudException, NextcloudExceptionNotFound

from ex_app.media.errors import MediaError
from ex_app.media.kinds import MediaKind, media_kind
from ex_app.sources.fetch import FileGone, Located, TransientError
from ex_app.sources.markers import excluded_kinds
from ex_app.store import schema
from ex_app.store.files import StoredFile

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

    @property
    def root(self) -> str:
        return self.user  # the root of a user's files is the user

    @property
    def remote_id(self) -> int:
        return self.file_id


ETAG_PREFIX = "etag:"


def fingerprint(file: NextcloudFile) -> str:
    """What stands for the content hash of a Nextcloud file: its etag."""
    return f"{ETAG_PREFIX}{file.etag}"[:64]


def stored_file(user: str, row: schema.File) -> NextcloudFile:
    """The Nextcloud file a stored row of user's root stands for."""
    return NextcloudFile(
        user=user, path=row.path, file_id=row.remote_id or 0, kind=MediaKind(row.kind),
        size=row.size, mtime_ns=row.mtime_ns, etag=row.content_hash.removeprefix(ETAG_PREFIX),
    )  # fmt: skip


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

    async def download(self, user: str, path: str, folder: Path, size: int = 0) -> Path:
        """Stream user's file at path into a new temporary file in folder; raises TooLarge
        past the cap (at once when ``size``, the stored size, is over it)."""
        if size > self.max_download_bytes:
            raise TooLarge(f"{size} bytes, more than the {self.max_download_bytes} allowed")
        suffix = Path(path).suffix
        with tempfile.NamedTemporaryFile("wb", dir=folder, suffix=suffix, delete=False) as stream:
            target = Path(stream.name)
            try:
                capped = _CappedWriter(stream, self.max_download_bytes)
                await self.client(user).files.download2stream(path, capped)
            except BaseException:
                stream.close()
                target.unlink(missing_ok=True)
                raise
        return target


def _to_file(user: str, node: FsNode, kind: MediaKind) -> NextcloudFile:
    return NextcloudFile(
        user=user, path=node.user_path.strip("/"), file_id=node.info.fileid, kind=kind,
        size=node.info.size, mtime_ns=int(node.info.last_modified.timestamp()) * 1_000_000_000,
        etag=node.etag,
    )  # fmt: skip


class NextcloudUsers:
    """Some users' files, for :func:`~ex_app.sources.sync.sync` (one root per user, the
    path relative to their home); the files of a user whose walk did not finish are kept."""

    name = schema.Source.NEXTCLOUD

    def __init__(self, source: NextcloudSource, users: Iterable[str]):
        self.source = source
        self.users = list(users)

    def walk(self) -> AsyncIterator[NextcloudFile]:
        return self.source.walk(self.users)

    def fingerprint(self, item: NextcloudFile, stored: StoredFile | None) -> str:
        return fingerprint(item)

    def finished(self) -> list[tuple[str, str | None]]:
        return [(user, None) for user in self.users if user not in self.source.unfinished_users]


class NextcloudFetcher:
    """Downloads a stored Nextcloud file, as its user, to a temporary file: for a worker
    (:meth:`fetch`, in its own event loop) and for the People page (:meth:`download`).

    Failures that may pass (Nextcloud answering 5xx, a lost or slow connection) are
    :class:`TransientError`; a file too large, gone (:class:`FileGone`) or forbidden is a
    :class:`MediaError`.
    """

    sources = (schema.Source.NEXTCLOUD,)

    def __init__(self, max_download_bytes: int):
        self.source = NextcloudSource(max_download_bytes)
        self._runner: asyncio.Runner | None = None  # a worker's thread drives its own loop

    async def download(self, user: str, path: str, folder: Path, size: int = 0) -> Path:
        """:meth:`NextcloudSource.download`, its failures sorted as the class says."""
        try:
            return await self.source.download(user, path, folder, size)
        except TooLarge as error:
            raise MediaError(f"download failed: {error}") from error
        except NextcloudException as error:  # a download's 404 is a plain NextcloudException
            if error.status_code == 404:
                raise FileGone(f"download failed: {error}") from error
            if error.status_code >= 500 or error.status_code in (408, 429):
                raise TransientError(f"download failed: {error}") from error
            raise MediaError(f"download failed: {error}") from error
        except Exception as error:  # a timeout, a dropped connection
            raise TransientError(f"download failed: {type(error).__name__}: {error}") from error

    @contextmanager
    def fetch(self, file: Located) -> Iterator[Path]:
        if self._runner is None:
            self._runner = asyncio.Runner()
        with tempfile.TemporaryDirectory(prefix="recognize-") as folder:
            yield self._runner.run(self.download(file.location, file.path, Path(folder)))

    def close(self) -> None:
        """End the event loop: the HTTP clients' background tasks (niquests' idle-connection
        watchers) are cancelled rather than destroyed pending when the process exits."""
        if self._runner is not None:
            self._runner.close()
