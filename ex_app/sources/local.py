"""A local folder as a source of media files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ex_app.media.kinds import MediaKind, media_kind
from ex_app.sources.fetch import Located, TransientError
from ex_app.sources.markers import excluded_kinds
from ex_app.store import schema
from ex_app.store.files import StoredFile


@dataclass(frozen=True)
class SourceFile:
    """A media file found in a folder: the folder (the root), its path there with '/'
    separators."""

    root: str
    path: str
    kind: MediaKind
    size: int
    mtime_ns: int

    @property
    def remote_id(self) -> None:
        return None  # a Nextcloud id: none here


def walk_local(root: Path) -> Iterator[SourceFile]:
    """Media files below root, in sorted order, honouring marker files; hidden entries skipped.

    Symbolic links to folders are not followed, so a link cannot make the walk loop.
    """
    yield from _walk(root, root, frozenset())


def _walk(root: Path, folder: Path, inherited: frozenset[MediaKind]) -> Iterator[SourceFile]:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return  # unreadable folder: nothing to offer from it
    excluded = inherited | excluded_kinds(e.name for e in entries if e.is_file())
    if excluded == frozenset(MediaKind):
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, Path(entry.path), excluded)
            continue
        kind = media_kind(entry.name)
        if kind is None or kind in excluded or not entry.is_file():
            continue
        try:
            stat = entry.stat()
        except OSError:
            continue  # vanished while walking
        relative = Path(entry.path).relative_to(root).as_posix()
        yield SourceFile(str(root), relative, kind, stat.st_size, stat.st_mtime_ns)


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


class LocalSource:
    """A local folder, or one file in it (``only``: its path there), as a source to sync.

    The content fingerprint is the sha256 of the bytes, read only when a file's size or
    modification time differ from the stored ones.
    """

    name = schema.Source.LOCAL

    def __init__(self, folder: Path, only: str | None = None):
        self.folder = folder.resolve()
        self.location = str(self.folder)
        self.only = only

    async def walk(self) -> AsyncIterator[SourceFile]:
        if self.only is None:
            for item in walk_local(self.folder):
                yield item
            return
        path, kind = self.folder / self.only, media_kind(self.only)
        try:
            stat = path.stat()
        except OSError:
            return  # not there
        if kind is not None and path.is_file():  # as the walk gives it
            yield SourceFile(self.location, self.only, kind, stat.st_size, stat.st_mtime_ns)

    def fingerprint(self, item: SourceFile, stored: StoredFile | None) -> str | None:
        if stored is not None and (stored.size, stored.mtime_ns) == (item.size, item.mtime_ns):
            return stored.digest
        try:
            return content_hash(self.folder / item.path)
        except OSError:
            return None  # vanished or unreadable since the walk; the next scan sees it again

    def finished(self) -> list[tuple[str, str | None]]:
        return [(self.location, self.only)]


def local_file(file: schema.File) -> Path:
    """Where a file of a local root is on disk."""
    return Path(file.root.location) / file.path


class LocalFetcher:
    """Files of local roots are analyzed where they are."""

    sources = (schema.Source.LOCAL,)

    @contextmanager
    def fetch(self, file: Located) -> Iterator[Path]:
        path = Path(file.location) / file.path
        if not path.exists():
            raise TransientError(f"{path} is not there (moved, or its disk is away)")
        yield path

    def close(self) -> None:
        """Holds nothing."""
