"""Marker files that keep media out of Recognize: the marker's folder and everything below it."""

from __future__ import annotations

from collections.abc import Iterable

from ex_app.media.kinds import MediaKind

MARKERS: dict[str, frozenset[MediaKind]] = {
    ".nomedia": frozenset(MediaKind),
    ".noimage": frozenset({MediaKind.IMAGE}),
    ".nomusic": frozenset({MediaKind.AUDIO}),
    ".novideo": frozenset({MediaKind.VIDEO}),
}


def excluded_kinds(file_names: Iterable[str]) -> frozenset[MediaKind]:
    """The media kinds that the marker files among these names exclude."""
    return frozenset().union(*(MARKERS.get(name, ()) for name in file_names))
