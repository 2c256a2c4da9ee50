"""Decode one file and run the enabled analyzers on it: the pure middle of the flow.

Models are loaded lazily, once, from the model store. Nothing here touches the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ex_app.analyzers.faces import Face, FaceAnalyzer
from ex_app.analyzers.music import (
    MUSICNN_LABEL_IDS,
    SAMPLE_RATE,
    MusicnnModel,
    MusicTagger,
    load_musicnn_tags,
)
from ex_app.analyzers.objects import Label, ObjectClassifier, load_imagenet_labels
from ex_app.analyzers.places import (
    Place,
    ReverseGeocoder,
    gazetteer_version,
    place_tags,
)
from ex_app.analyzers.video import agreed_labels, distinct_faces, has_music_track
from ex_app.config import GENRES_PATH, RULES_PATH, Settings
from ex_app.media.audio import decode_audio
from ex_app.media.gps import read_gps
from ex_app.media.images import decode_image
from ex_app.media.kinds import MediaKind
from ex_app.media.video import read_video
from ex_app.models.runtime import open_session, resolve_engine
from ex_app.models.store import ModelStore
from ex_app.tagging.rules import TagRules

log = logging.getLogger(__name__)

FACES = "faces"
OBJECTS = "objects"
PLACES = "places"
MUSIC = "music"
VIDEO = "video"
LABELLING_ANALYZERS = (OBJECTS, MUSIC, VIDEO)  # their results are rows of the labels table
FACE_FINDING_ANALYZERS = (FACES, VIDEO)  # their results are rows of the faces table
MUSICNN_CHECKPOINTS = ("msd", "mtt")  # both: MSD knows blues, MTT new age, world, classical
PEOPLE_TAG = "People"  # given to every photo with a face

# The models each analyzer needs; their hashes make up the analyzer's model version.
ANALYZER_MODELS: dict[str, tuple[str, ...]] = {
    FACES: ("face_detection_yunet", "dlib_face_landmarks_5", "dlib_face_embedder_onnx"),
    OBJECTS: ("efficientnet_lite0", "imagenet_labels"),
    PLACES: (),  # its data ships in a package: see model_version
    MUSIC: ("musicnn_msd", "musicnn_msd_labels", "musicnn_mtt", "musicnn_mtt_labels"),
}
ANALYZER_MODELS[VIDEO] = ANALYZER_MODELS[FACES] + ANALYZER_MODELS[OBJECTS] + ANALYZER_MODELS[MUSIC]

ANALYZERS_BY_KIND: dict[MediaKind, tuple[str, ...]] = {
    MediaKind.IMAGE: (FACES, OBJECTS, PLACES),
    MediaKind.AUDIO: (MUSIC,),
    MediaKind.VIDEO: (VIDEO,),
}


@dataclass
class FileAnalysis:
    """What the analyzers found in one file, in the file's own pixel coordinates."""

    width: int | None = None
    height: int | None = None
    faces: list[Face] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    place: Place | None = None
    tags: dict[str, list[str]] = field(default_factory=dict)  # by the analyzer that gave them


class Pipeline:
    """Turns a file on disk into a :class:`FileAnalysis`, for the analyzers asked for."""

    def __init__(self, settings: Settings, models: ModelStore):
        self._settings = settings
        self._models = models

    def enabled_analyzers(self, kind: MediaKind) -> tuple[str, ...]:
        s = self._settings
        enabled = {
            FACES: s.faces_enabled,
            OBJECTS: s.objects_enabled,
            PLACES: s.places_enabled,
            MUSIC: s.music_enabled,
            VIDEO: s.video_enabled,
        }
        return tuple(a for a in ANALYZERS_BY_KIND.get(kind, ()) if enabled[a])

    def model_version(self, analyzer: str) -> str:
        """A short fingerprint of the model files (or data) an analyzer runs with."""
        if analyzer == PLACES:
            return gazetteer_version()
        manifest = self._models.manifest
        return "+".join(manifest[name].sha256[:8] for name in ANALYZER_MODELS[analyzer])

    @cached_property
    def face_analyzer(self) -> FaceAnalyzer:
        s = self._settings
        # Where onnxruntime cannot run, dlib itself computes the same embeddings (slower).
        onnx = resolve_engine(s.inference_engine) == "onnx"
        return FaceAnalyzer(
            detector_path=self._models.path("face_detection_yunet"),
            landmarks_path=self._models.path("dlib_face_landmarks_5"),
            embedder_path=self._models.path("dlib_face_embedder_onnx" if onnx else "dlib_face_embedder"),
            min_score=s.face_min_score,
            min_size=s.face_min_size,
            threads=s.threads,
        )

    @cached_property
    def object_classifier(self) -> ObjectClassifier:
        s = self._settings
        return ObjectClassifier(
            session=open_session(
                self._models.path("efficientnet_lite0"), s.threads, s.inference_engine
            ),
            labels=load_imagenet_labels(self._models.path("imagenet_labels")),
            top_k=s.object_top_k,
            min_score=s.object_min_score,
        )

    @cached_property
    def geocoder(self) -> ReverseGeocoder:
        s = self._settings
        return ReverseGeocoder(city_max_km=s.place_city_max_km, max_km=s.place_max_km)

    @cached_property
    def tag_rules(self) -> TagRules:
        return TagRules.load(RULES_PATH)

    @cached_property
    def music_tagger(self) -> MusicTagger:
        s = self._settings
        models = [
            MusicnnModel(
                dataset,
                open_session(self._models.path(f"musicnn_{dataset}"), s.threads, s.inference_engine),
                load_musicnn_tags(self._models.path(f"musicnn_{dataset}_labels")),
            )
            for dataset in MUSICNN_CHECKPOINTS
        ]
        return MusicTagger(models, max_patches=s.music_max_patches)

    @cached_property
    def genre_rules(self) -> TagRules:
        return TagRules.load(GENRES_PATH, MUSICNN_LABEL_IDS)

    def analyze(self, path: Path, analyzers: tuple[str, ...]) -> FileAnalysis:
        """Decode the file at path and run the analyzers; raises MediaError for a bad file."""
        if MUSIC in analyzers:  # analyzers of one file are all of its media kind
            return self.analyze_audio(path)
        if VIDEO in analyzers:
            return self.analyze_video(path)
        s = self._settings
        image = decode_image(path, max_side=s.max_image_side, max_pixels=s.max_image_pixels)
        width, height = image.original_size
        result = FileAnalysis(width=width, height=height)
        if FACES in analyzers:
            result.faces = [
                _to_original_pixels(face, image.scale)
                for face in self.face_analyzer.analyze(image.pixels)
            ]
            result.tags[FACES] = [PEOPLE_TAG] if result.faces else []
        if OBJECTS in analyzers:
            result.labels = self.object_classifier.classify(image.pixels)
            result.tags[OBJECTS] = self.tag_rules.tags_for(
                (label.id, label.score) for label in result.labels
            )
        if PLACES in analyzers:
            position = read_gps(path)
            if position is not None:
                result.place = self.geocoder.find(position.latitude, position.longitude)
            result.tags[PLACES] = place_tags(result.place) if result.place else []
        return result


    def analyze_audio(self, path: Path) -> FileAnalysis:
        """Decode the song at path and tag its genres; raises MediaError for a bad file."""
        s = self._settings
        audio = decode_audio(path, SAMPLE_RATE, s.music_max_seconds, s.audio_decode_timeout_seconds)
        labels = self.music_tagger.tag(audio.samples)
        tags = self.genre_rules.tags_for((label.id, label.score) for label in labels)
        return FileAnalysis(labels=labels[: s.music_top_k], tags={MUSIC: tags})


    def analyze_video(self, path: Path) -> FileAnalysis:
        """Sampled frames: distinct faces, objects the frames agree on, genres of its music.

        All its tags are the video analyzer's, so a re-analysis replaces them together.
        """
        s = self._settings
        info, frames = read_video(
            path, s.video_max_frames, s.video_frame_interval, s.video_max_side,
            s.video_decode_timeout_seconds,
        )
        per_frame = [
            (frame.time, [_to_original_pixels(face, frame.scale) for face in self.face_analyzer.analyze(frame.pixels)])
            for frame in frames
        ]
        faces = [appearance.face for appearance in distinct_faces(per_frame, s.video_face_distance)]
        labels = agreed_labels(
            self.object_classifier.classify_batch([frame.pixels for frame in frames]),
            s.video_label_min_frames,
            s.video_label_min_share,
        )[: s.object_top_k]
        tags = ([PEOPLE_TAG] if faces else []) + self.tag_rules.tags_for(
            (label.id, label.score) for label in labels
        )
        if s.music_enabled and has_music_track(info, s.video_music_min_seconds):
            audio = decode_audio(path, SAMPLE_RATE, s.music_max_seconds, s.audio_decode_timeout_seconds)
            music = self.music_tagger.tag(audio.samples)
            labels += music[: s.music_top_k]
            tags += self.genre_rules.tags_for((label.id, label.score) for label in music)
        return FileAnalysis(
            width=info.width, height=info.height, faces=faces, labels=labels,
            tags={VIDEO: list(dict.fromkeys(tags))},
        )


def _to_original_pixels(face: Face, scale: float) -> Face:
    """The face with box and landmarks mapped from decoded to original image pixels."""
    if scale == 1.0:
        return face
    x, y, w, h = face.box
    face.box = (x / scale, y / scale, w / scale, h / scale)
    face.landmarks = np.asarray(face.landmarks, dtype=np.float32) / scale
    return face

