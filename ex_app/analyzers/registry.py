"""Every analyzer, in one place: what it looks at, the models it needs, how it is switched.

An analyzer is an :class:`Analyzer` line in :data:`ANALYZERS`, a module beside this one with a
``build(pipeline)`` that returns its ``analyze(media, result) -> tags`` function (see
``ex_app/analyzers/pipeline.py``), its models in ``models/manifest.yml``, and a settings section
of the same name in ``ex_app/config.py`` (an :class:`~ex_app.config.AnalyzerSection`: ``enabled``
and its own fields). Everything else (the pipeline, the admin form, ``/init``, ``recognize
models``, ``recognize progress``, what the store keeps of results) reads this table. This
module stays light: analyzer modules load their libraries when first built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from ex_app.config import Settings
from ex_app.media.kinds import MediaKind

if TYPE_CHECKING:
    from ex_app.models.store import ModelStore

IMAGE, AUDIO, VIDEO = MediaKind.IMAGE, MediaKind.AUDIO, MediaKind.VIDEO
EMBEDDINGS = "embeddings"  # not an analyzer: the task that embeds a file's stored faces again
VERSION_LENGTH = 64  # the tasks table's model_version column

Models = Callable[[Settings], tuple[str, ...]]  # the models an analyzer needs with these settings


def fixed(*names: str) -> Models:
    return lambda settings: names


# Each face embedder's models: their hashes are the version of the embeddings a face holds
# (a new embedder embeds the stored faces again, ex_app/store/reembed.py; never detects again).
EMBEDDER_MODELS = {"sface": ("face_recognition_sface",),
                   "dlib": ("dlib_face_landmarks_5", "dlib_face_embedder_onnx")}
FACE_DETECTOR = fixed("face_detection_yunet")
OBJECT_MODELS = fixed("efficientnet_lite0", "imagenet_labels")
MUSIC_MODELS = fixed("musicnn_msd", "musicnn_msd_labels", "musicnn_mtt", "musicnn_mtt_labels")


def embedder_models(settings: Settings) -> tuple[str, ...]:
    return EMBEDDER_MODELS[settings.faces.embedder]


def face_models(settings: Settings) -> tuple[str, ...]:
    return FACE_DETECTOR(settings) + embedder_models(settings)


def landmark_region_models(region: str) -> tuple[str, str]:
    """One region's landmark classifier and its label map."""
    return f"landmarks_{region}", f"landmarks_{region}_labels"


def landmark_models(settings: Settings) -> tuple[str, ...]:
    """The object classifier (its labels pick the photos worth a look) and the regions' models."""
    regions = settings.landmarks.regions
    return OBJECT_MODELS(settings) + tuple(n for r in regions for n in landmark_region_models(r))


def landmarks_missing(settings: Settings, store: ModelStore) -> str | None:
    """Landmarks run with the regions whose two files are here; with none, they are missing."""
    if any(all(map(store.local_path, landmark_region_models(r))) for r in settings.landmarks.regions):
        return None
    return "no enabled region's landmark classifier with its label map"


def gazetteer_version(settings: Settings, store: ModelStore) -> str:
    return import_module("ex_app.analyzers.places").gazetteer_version()


@dataclass(frozen=True)
class Analyzer:
    """One analyzer as the rest of Recognize sees it."""

    name: str  # also its settings section and the `analyzer` of its tasks and tags
    kinds: tuple[MediaKind, ...]  # the media it analyzes
    title: str  # the admin form's switch: its title and its label
    label: str
    models: Models  # the models it needs with these settings
    # Models whose hashes make up its results' version (default: all of them). A new version
    # analyzes the files again.
    versioned_models: Models | None = None
    version_of: Callable[[Settings, ModelStore], str] | None = None  # a version not of models
    # Optional: off by default, its models may be missing (then it is skipped, with one log
    # line, and /init does not fail); missing_here says what it lacks, None when all is here.
    optional: bool = False
    missing_here: Callable[[Settings, ModelStore], str | None] | None = None
    finds_faces: bool = False  # its results are rows of the faces table
    labels: bool = False  # its results are rows of the labels table

    def enabled(self, settings: Settings) -> bool:
        return getattr(settings, self.name).enabled

    def build(self, pipeline) -> Callable:
        """Its ``analyze(media, result) -> tags``, models loaded (``pipeline`` shares them)."""
        return import_module(f"ex_app.analyzers.{self.name}").build(pipeline)

    def missing(self, settings: Settings, store: ModelStore) -> str | None:
        """What keeps it from running on this machine, or None."""
        if self.missing_here is not None:
            return self.missing_here(settings, store)
        absent = [name for name in self.models(settings) if store.local_path(name) is None]
        return "missing " + ", ".join(absent) if absent else None

    def version(self, settings: Settings, store: ModelStore) -> str:
        """A short fingerprint of what it runs with."""
        if self.version_of is not None:
            return self.version_of(settings, store)
        return models_version((self.versioned_models or self.models)(settings), store)


def models_version(names: Iterable[str], store: ModelStore) -> str:
    """The models' hashes, 8 digits each (models without a manifest hash count with the hash
    pinned on their first download); a fingerprint longer than the tasks table holds is hashed."""
    version = "+".join((store.version_sha256(name) or "unpinned")[:8] for name in names)
    if len(version) > VERSION_LENGTH:
        version = "sha256:" + hashlib.sha256(version.encode()).hexdigest()[:32]
    return version


# In the order they run on a file: landmarks use the labels and places found before.
ANALYZERS: tuple[Analyzer, ...] = (
    Analyzer("faces", (IMAGE,), "Faces", "Find faces and group them into persons", face_models,
             versioned_models=FACE_DETECTOR, finds_faces=True),
    Analyzer("objects", (IMAGE,), "Objects and scenes", "Tag photos with objects and scenes",
             OBJECT_MODELS, labels=True),
    Analyzer("music", (AUDIO,), "Music", "Tag songs with their genres", MUSIC_MODELS, labels=True),
    Analyzer("video", (VIDEO,), "Videos", "Find faces, objects and music in videos",
             lambda s: face_models(s) + OBJECT_MODELS(s) + MUSIC_MODELS(s),
             # with SFace whatever the embedder, as counted so far (a new embedder re-embeds)
             versioned_models=lambda s: (FACE_DETECTOR(s) + EMBEDDER_MODELS["sface"]
                                         + OBJECT_MODELS(s) + MUSIC_MODELS(s)),
             finds_faces=True, labels=True),
    Analyzer("actions", (VIDEO,), "Actions in videos",
             "Tag videos with what people do in them (MoViNet)",
             fixed("movinet_a0_stream", "kinetics600_labels"), optional=True),
    Analyzer("places", (IMAGE, VIDEO), "Places", "Tag photos with the place their GPS position names",
             fixed(), version_of=gazetteer_version),
    Analyzer("landmarks", (IMAGE,), "Landmarks",
             "Tag photos of buildings and monuments with the landmark", landmark_models,
             optional=True, missing_here=landmarks_missing),
    Analyzer("sensitive", (IMAGE,), "Sensitive photos",
             "Tag photos showing nudity, with a tag users cannot assign (NudeNet)",
             fixed("nudenet_320n")))
BY_NAME = {analyzer.name: analyzer for analyzer in ANALYZERS}
FACES = "faces"  # its only tag is People: it goes with a user's face data
FACE_FINDING_ANALYZERS = tuple(a.name for a in ANALYZERS if a.finds_faces)
LABELLING_ANALYZERS = tuple(a.name for a in ANALYZERS if a.labels)


def face_finder(kind: MediaKind) -> str:
    """The analyzer that finds the faces of this kind of media."""
    return next(a.name for a in ANALYZERS if a.finds_faces and kind in a.kinds)


def needed_models(settings: Settings,
                  analyzers: Iterable[Analyzer] | None = None) -> tuple[list[str], list[str]]:
    """The models these analyzers (default: the enabled ones) need, each once, in a stable
    order: those required, and those only optional analyzers need (they wait while missing)."""
    if analyzers is None:
        analyzers = [a for a in ANALYZERS if a.enabled(settings)]
    analyzers = list(analyzers)
    names = dict.fromkeys(n for a in analyzers for n in a.models(settings))
    required = {n for a in analyzers if not a.optional for n in a.models(settings)}
    return [n for n in names if n in required], [n for n in names if n not in required]
