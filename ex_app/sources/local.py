"""A local folder as a source of media files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ex_app.media.kinds import MediaKind, media_kind
from ex_app.sources.markers import excluded_kinds


@dataclass(frozen=True)
class SourceFile:
    """A media file found in a source: its path relative to the root, with '/' separators."""

    path: str
    kind: MediaKind
    size: int
    mtime_ns: int


def walk_local(root: Path) -> Iterator[SourceFile]:
    """Media files below root, in sorted order, honouring marker files; hidden entries skipped.

    Symbolic links to folders are not followed, so a link cannot make the walk loop.
    """
    yield from _walk(root, root, frozenset())


def one_local_file(root: Path, path: str) -> SourceFile | None:
    """The media file at root/path (a relative path, '/' separators) as the walk gives it;
    None when it is no media file or is not there."""
    kind = media_kind(path)
    try:
        stat = (root / path).stat()
    except OSError:
        return None
    if kind is None or not (root / path).is_file():
        return None
    return SourceFile(path=path, kind=kind, size=stat.st_size, mtime_ns=stat.st_mtime_ns)


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
        yield SourceFile(
            path=Path(entry.path).relative_to(root).as_posix(),
            kind=kind,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
        )
