"""One sync for every source: bring the store in line with what a source holds.

A source (a local folder, some Nextcloud users' files) is walked; what it finds is recorded
in chunks (:func:`~ex_app.store.files.record_files`: new files, changed content, missing
tasks; nothing is written for what did not change), each chunk's new work handed on at once
so that workers start before the walk ends; once the walk is done, the stored files of the
roots walked to the end that it did not find are forgotten.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session, sessionmaker

from ex_app.store.files import FoundFile, Recording, SyncReport, delete_stored, not_seen, record_files

if TYPE_CHECKING:
    from ex_app.analyzers.pipeline import Pipeline

CHUNK = 200  # files recorded (and sent to the workers) at a time while walking


class Source(Recording, Protocol):
    """Where media files come from: a local folder, some Nextcloud users' files."""

    def walk(self) -> AsyncIterator[FoundFile]:
        """The media files, each once, honouring marker files."""

    def finished(self) -> list[tuple[str, str | None]]:
        """After the walk: the roots (location, and one path there or None for all of it)
        walked to the end, whose stored files not found are forgotten."""


async def sync(
    sessions: sessionmaker[Session],
    source: Source,
    pipeline: Pipeline,
    on_chunk: Callable[[list[int]], None] = lambda fresh: None,
) -> SyncReport:
    """Record the source's files in the store; its files no longer there are removed.

    ``on_chunk`` gets each chunk's files with new work (stored ids), once committed.
    Memory: nothing is kept per file beyond the current chunk but the stored ids seen, 8
    bytes each in an array (a "last seen" column would cost a write per file per sync).
    """
    report = SyncReport()
    seen = array("q")
    chunk: list[FoundFile] = []

    def record_chunk() -> None:
        done = record_files(sessions, source, chunk, pipeline)
        for name in ("added", "changed", "unchanged"):
            setattr(report, name, getattr(report, name) + getattr(done.report, name))
        seen.extend(done.ids)
        if done.fresh:
            on_chunk(done.fresh)
        chunk.clear()

    async for file in source.walk():
        chunk.append(file)
        if len(chunk) >= CHUNK:
            await asyncio.to_thread(record_chunk)
    await asyncio.to_thread(record_chunk)
    gone = await asyncio.to_thread(not_seen, sessions, source.name, source.finished(), seen)
    if gone:
        with sessions.begin() as session:
            delete_stored(session, gone)
    report.removed = len(gone)
    return report
