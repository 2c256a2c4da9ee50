"""Fetching a stored file to local disk for the time of its analysis: one fetcher per source.

A fetcher raises :class:`TransientError` for failures that may pass (Nextcloud answering
5xx, a lost connection, a disk away) and a :class:`~ex_app.media.errors.MediaError` for a
file that cannot be had (too large, :class:`FileGone`, forbidden).
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from ex_app.media.errors import MediaError


class TransientError(Exception):
    """A failure that may pass: the file is tried again later."""


class FileGone(MediaError):
    """The file is no longer there."""


class Located(Protocol):
    """A stored file: its root's source and location (a folder, a user), its path there."""

    source: str
    location: str
    path: str


class FileFetcher(Protocol):
    """Makes a stored file available on local disk for the time of its analysis."""

    sources: Collection[str]  # the root sources it can fetch from ("local", "nextcloud")

    def fetch(self, file: Located) -> AbstractContextManager[Path]: ...

    def close(self) -> None:
        """Let go of what fetching holds (connections, an event loop); called once, at the end."""


class SourcesFetcher:
    """Fetches files of each source with that source's fetcher."""

    def __init__(self, *fetchers: FileFetcher):
        self._by_source = {source: f for f in fetchers for source in f.sources}
        self.sources = tuple(self._by_source)

    def fetch(self, file: Located) -> AbstractContextManager[Path]:
        return self._by_source[file.source].fetch(file)

    def close(self) -> None:
        for fetcher in set(self._by_source.values()):
            fetcher.close()

