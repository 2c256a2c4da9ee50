"""Decode one file and run the registry's analyzers on it: the pure middle of the flow.

A file is decoded once for all analyzers (:class:`Media`), what several use (object labels,
the place) is found once, and models are loaded once per pipeline, lazily. Nothing here
touches the database. Optional analyzers run only where their model files are already here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import Any, TypeVar

from ex_app.analyzers.registry import (ANALYZERS, BY_NAME, EMBEDDINGS, embedder_models,
                                       models_version)
from ex_app.analyzers.results import FileAnalysis, StoredFace
from ex_app.config import Settings
from ex_app.media.gps import read_gps
from ex_app.media.images import DecodedImage, decode_image
from ex_app.media.kinds import MediaKind, media_kind
from ex_app.media.video import VideoInfo, probe_video
from ex_app.models.runtime import InferenceSession, open_session
from ex_app.models.store import ModelStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Media:
    """One file as its analyzers share it: decoded once per kind, each finding made once."""

    def __init__(self, path: Path, kind: MediaKind, pipeline: Pipeline):
        self.path, self.kind, self.pipeline = path, kind, pipeline
        self.settings = pipeline.settings
        self._found: dict[Callable, Any] = {}

    def once(self, step: Callable[[Media], T]) -> T:
        """step(self), computed on the first call only (object labels, the place...)."""
        if step not in self._found:
            self._found[step] = step(self)
        return self._found[step]

    @cached_property
    def image(self) -> DecodedImage:
        s = self.settings.images
        return decode_image(self.path, max_side=s.max_side, max_pixels=s.max_pixels)

    @cached_property
    def video_info(self) -> VideoInfo:
        """ffprobe's view (the video analyzer sets it from its own probe first)."""
        return probe_video(self.path, self.settings.video.decode_timeout_seconds)

    @cached_property
    def position(self) -> tuple[float, float] | None:
        """Latitude and longitude: a photo's GPS tags, a video's location."""
        if self.kind == MediaKind.VIDEO:
            return self.video_info.location
        found = read_gps(self.path)
        return None if found is None else (found.latitude, found.longitude)


class Pipeline:
    """Turns a file on disk into a :class:`FileAnalysis`, for the analyzers asked for."""

    def __init__(self, settings: Settings, models: ModelStore):
        self.settings, self.models = settings, models
        self._available: dict[str, bool] = {}
        self._parts: dict[Callable, Any] = {}

    def part(self, make: Callable[[Pipeline], T]) -> T:
        """make(self), made once: an analyzer's function, a model several share (faces...)."""
        if make not in self._parts:
            self._parts[make] = make(self)
        return self._parts[make]

    def session(self, model: str) -> InferenceSession:
        """An inference session of the model, with the settings' threads and engine."""
        inference = self.settings.inference
        return open_session(self.models.path(model), inference.threads, inference.engine)

    def load(self) -> None:
        """Load the models of every enabled analyzer that can run here (a worker does so
        before its first file, so that too little memory shows at once)."""
        for entry in ANALYZERS:
            if entry.enabled(self.settings) and self.available(entry.name):
                self.part(entry.build)

    def enabled_analyzers(self, kind: MediaKind) -> tuple[str, ...]:
        return tuple(
            a.name for a in ANALYZERS
            if kind in a.kinds and a.enabled(self.settings) and self.available(a.name))

    def available(self, analyzer: str) -> bool:
        """Whether an analyzer can run here: optional ones need their model files present
        (looked at once per pipeline, nothing downloaded; missing, one log line)."""
        entry = BY_NAME[analyzer]
        if not entry.optional:
            return True
        if analyzer not in self._available:
            missing = entry.missing(self.settings, self.models)
            if missing:
                log.info("analyzer %s skipped: %s on this machine (see `recognize models fetch`)",
                         analyzer, missing)
            self._available[analyzer] = not missing
        return self._available[analyzer]

    def model_version(self, analyzer: str) -> str:
        """A short fingerprint of the model files (or data) an analyzer runs with."""
        if analyzer == EMBEDDINGS:
            return models_version(embedder_models(self.settings), self.models)
        return BY_NAME[analyzer].version(self.settings, self.models)

    def analyze(
        self, path: Path, analyzers: tuple[str, ...], stored: tuple[StoredFace, ...] = ()
    ) -> FileAnalysis:
        """Decode the file at path and run the analyzers; raises MediaError for a bad file.

        ``stored``: the file's stored faces, embedded again for the EMBEDDINGS task.
        """
        entries = [entry for entry in ANALYZERS if entry.name in analyzers]  # the registry's order
        # A name without a known suffix: the analyzers say what it is.
        kind = media_kind(path) or next(
            (k for k in MediaKind if all(k in entry.kinds for entry in entries)), MediaKind.IMAGE)
        media = Media(path, kind, self)
        result = FileAnalysis()
        for entry in entries:
            result.tags[entry.name] = self.part(entry.build)(media, result)
        if kind == MediaKind.IMAGE:  # decoded even for places alone: a bad file is an error
            result.width, result.height = media.image.original_size
        elif kind == MediaKind.VIDEO:
            result.width, result.height = media.video_info.width, media.video_info.height
        if EMBEDDINGS in analyzers and not any(entry.finds_faces for entry in entries):
            # found by name, as the registry finds each analyzer's module
            embed_again = import_module("ex_app.analyzers.faces").embed_again
            result.embeddings, result.embedder = embed_again(media, stored)
        return result
