"""Which kind of media a file is, by its name: what decides the analyzers it goes through."""

from __future__ import annotations

from enum import StrEnum
from pathlib import PurePath


class MediaKind(StrEnum):
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".bmp"})
AUDIO_SUFFIXES = frozenset({".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".wav"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".3gp"})


_SUFFIXES = {MediaKind.IMAGE: IMAGE_SUFFIXES, MediaKind.AUDIO: AUDIO_SUFFIXES,
             MediaKind.VIDEO: VIDEO_SUFFIXES}


def media_kind(path: str | PurePath) -> MediaKind | None:
    """The kind of media a file name announces, or None for files Recognize ignores."""
    suffix = PurePath(path).suffix.lower()
    return next((kind for kind, suffixes in _SUFFIXES.items() if suffix in suffixes), None)
