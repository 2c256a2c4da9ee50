"""Decode one file and run the enabled analyzers on it: the pure middle of the flow.

Models are loaded lazily, once, from the model store. Nothing here touches the database.
The optional analyzers (actions, landmarks) run only where their model files are already on
this machine: without them they are left out of the analyzers a file gets, with one log line.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ex_app.analyzers.actions import (
    KINETICS_LABEL_IDS,
    ActionRecognizer,
    load_kinetics_labels,
)
from ex_app.analyzers.faces import (
    DLIB,
    SFACE,
    Detection,
    DlibEmbedder,
    Face,
    FaceAnalyzer,
    FaceEmbedder,
    SFaceEmbedder,
)
from ex_app.analyzers.landmarks import (
    REGIONS,
    LandmarkClassifier,
    find_landmarks,
    load_country_regions,
    load_landmark_labels,
    regions_for,
    worth_a_look,
)
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
from ex_app.analyzers.sensitive import SensitiveDetector
from ex_app.analyzers.video import agreed_labels, distinct_faces, has_music_track
from ex_app.config import (
    ACTIONS_PATH,
    GENRES_PATH,
    LANDMARK_REGIONS_PATH,
    RULES_PATH,
    Settings,
)
from ex_app.media.audio import decode_audio
from ex_app.media.gps import read_gps
from ex_app.media.images import decode_image
from ex_app.media.kinds import MediaKind, media_kind
from ex_app.media.video import (
    VideoInfo,
    clip_starts,
    probe_video,
    read_clip,
    read_video,
)
from ex_app.models.runtime import OnnxSession, onnx_providers, open_session, resolve_engine
from ex_app.models.store import ModelStore
from ex_app.people.distances import face_distances
from ex_app.tagging.rules import TagRules

log = logging.getLogger(__name__)

FACES = "faces"
OBJECTS = "objects"
PLACES = "places"
MUSIC = "music"
VIDEO = "video"
ACTIONS = "actions"  # human actions in videos (MoViNet)
LANDMARKS = "landmarks"  # landmarks in photos (Google's regional classifiers)
SENSITIVE = "sensitive"  # the opt-in sensitive-photo filter (NudeNet)
OPTIONAL_ANALYZERS = (ACTIONS, LANDMARKS)  # skipped while their model files are not here
LABELLING_ANALYZERS = (OBJECTS, MUSIC, VIDEO)  # their results are rows of the labels table
FACE_FINDING_ANALYZERS = (FACES, VIDEO)  # their results are rows of the faces table
MUSICNN_CHECKPOINTS = ("msd", "mtt")  # both: MSD knows blues, MTT new age, world, classical
PEOPLE_TAG = "People"  # given to every photo with a face

# The models of each face embedder (ex_app.analyzers.faces); their hashes make up the version
# of the embeddings a face holds. Faces record the embedder that made them; when it changes,
# stored faces are embedded again (ex_app/work/reembed.py), never detected again.
EMBEDDER_MODELS: dict[str, tuple[str, ...]] = {
    SFACE: ("face_recognition_sface",),
    DLIB: ("dlib_face_landmarks_5", "dlib_face_embedder_onnx"),
}
EMBEDDINGS = "embeddings"  # the task that embeds a file's stored faces again
DETECTOR_MODELS = ("face_detection_yunet",)
# The models each analyzer needs, with the default embedder for faces (analyzer_models gives
# the configured one); their hashes make up the analyzer's model version, but for faces only
# the detector's count (a new embedder re-embeds, see EMBEDDER_MODELS).
ANALYZER_MODELS: dict[str, tuple[str, ...]] = {
    FACES: DETECTOR_MODELS + EMBEDDER_MODELS[SFACE],
    OBJECTS: ("efficientnet_lite0", "imagenet_labels"),
    PLACES: (),  # its data ships in a package: see model_version
    MUSIC: ("musicnn_msd", "musicnn_msd_labels", "musicnn_mtt", "musicnn_mtt_labels"),
}
ANALYZER_MODELS[VIDEO] = ANALYZER_MODELS[FACES] + ANALYZER_MODELS[OBJECTS] + ANALYZER_MODELS[MUSIC]
ANALYZER_MODELS[ACTIONS] = ("movinet_a0_stream", "kinetics600_labels")
ANALYZER_MODELS[SENSITIVE] = ("nudenet_320n",)
# Per region: the classifier and its label map. Landmarks also need the object classifier,
# whose labels decide which photos are worth a look.
LANDMARK_MODELS = {region: (f"landmarks_{region}", f"landmarks_{region}_labels") for region in REGIONS}
ANALYZER_MODELS[LANDMARKS] = ANALYZER_MODELS[OBJECTS] + tuple(
    name for names in LANDMARK_MODELS.values() for name in names
)
MODEL_VERSION_LENGTH = 64  # the tasks table's column


def analyzer_models(analyzer: str, embedder: str) -> tuple[str, ...]:
    """The models an analyzer needs with this face embedder."""
    names = ANALYZER_MODELS[analyzer]
    if analyzer in (FACES, VIDEO):
        names = tuple(n for n in names if n not in EMBEDDER_MODELS[SFACE])
        names = DETECTOR_MODELS + EMBEDDER_MODELS[embedder] + names[len(DETECTOR_MODELS):]
    return names


def load_face_embedder(settings: Settings, models: ModelStore) -> FaceEmbedder:
    """The configured face embedder on this machine's best engine.

    SFace runs in OpenCV's dnn module on CPUs (faster here than onnxruntime, and on every
    processor) and through onnxruntime on its float32 graph where onnxruntime has a GPU.
    dlib's network runs as our ONNX port where onnxruntime runs, else in dlib's own code
    (the same embeddings, slower).
    """
    onnx = resolve_engine(settings.inference_engine) == "onnx"
    if settings.face_embedder == SFACE:
        if onnx and onnx_providers()[0] != "CPUExecutionProvider":
            session = OnnxSession(models.path("face_recognition_sface_float32"), settings.threads)
            return SFaceEmbedder(models.path("face_recognition_sface"), session=session)
        return SFaceEmbedder(models.path("face_recognition_sface"))
    return DlibEmbedder(
        models.path("dlib_face_landmarks_5"),
        models.path("dlib_face_embedder_onnx" if onnx else "dlib_face_embedder"),
        settings.threads,
    )


def optional_models() -> set[str]:
    """The models only optional analyzers need: missing, they hold back no other analyzer."""
    required = {n for a, names in ANALYZER_MODELS.items() if a not in OPTIONAL_ANALYZERS for n in names}
    return {n for a in OPTIONAL_ANALYZERS for n in ANALYZER_MODELS[a]} - required

ANALYZERS_BY_KIND: dict[MediaKind, tuple[str, ...]] = {
    MediaKind.IMAGE: (FACES, OBJECTS, PLACES, LANDMARKS, SENSITIVE),
    MediaKind.AUDIO: (MUSIC,),
    MediaKind.VIDEO: (VIDEO, ACTIONS, PLACES),
}


@dataclass(frozen=True)
class StoredFace:
    """A face the store holds, as embedding it again needs it (the file's own pixels)."""

    id: int
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # 5×2 float32


@dataclass
class FileAnalysis:
    """What the analyzers found in one file, in the file's own pixel coordinates."""

    width: int | None = None
    height: int | None = None
    faces: list[Face] = field(default_factory=list)
    embedder: str | None = None  # the embedder of faces and embeddings
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)  # stored face id → vector
    labels: list[Label] = field(default_factory=list)
    place: Place | None = None
    tags: dict[str, list[str]] = field(default_factory=dict)  # by the analyzer that gave them


@dataclass
class VideoAnalysis(FileAnalysis):
    """A video's analysis with what ffprobe said about it."""

    info: VideoInfo | None = None


class Pipeline:
    """Turns a file on disk into a :class:`FileAnalysis`, for the analyzers asked for."""

    def __init__(self, settings: Settings, models: ModelStore):
        self._settings = settings
        self._models = models
        self._available: dict[str, bool] = {}

    def enabled_analyzers(self, kind: MediaKind) -> tuple[str, ...]:
        s = self._settings
        enabled = {
            FACES: s.faces_enabled,
            OBJECTS: s.objects_enabled,
            PLACES: s.places_enabled,
            MUSIC: s.music_enabled,
            VIDEO: s.video_enabled,
            ACTIONS: s.actions_enabled,
            LANDMARKS: s.landmarks_enabled,
            SENSITIVE: s.sensitive_enabled,
        }
        return tuple(
            a for a in ANALYZERS_BY_KIND.get(kind, ()) if enabled[a] and self.available(a)
        )

    def available(self, analyzer: str) -> bool:
        """Whether an analyzer can run here: optional ones need their model files present
        (looked at once per pipeline; nothing is downloaded for it)."""
        if analyzer not in OPTIONAL_ANALYZERS:
            return True
        if analyzer not in self._available:
            if analyzer == LANDMARKS:
                present = bool(self._landmark_regions_here())
                missing = "no enabled region's landmark classifier with its label map"
            else:
                absent = [n for n in ANALYZER_MODELS[analyzer] if self._models.local_path(n) is None]
                present, missing = not absent, "missing " + ", ".join(absent)
            if not present:
                log.info(
                    "analyzer %s skipped: %s on this machine (see `recognize models fetch`)",
                    analyzer, missing,
                )
            self._available[analyzer] = present
        return self._available[analyzer]

    def model_version(self, analyzer: str) -> str:
        """A short fingerprint of the model files (or data) an analyzer runs with.

        Models without a manifest hash count with the hash pinned on their first download.
        A fingerprint longer than the tasks table holds is itself hashed.
        """
        if analyzer == PLACES:
            return gazetteer_version()
        if analyzer == EMBEDDINGS:
            names = EMBEDDER_MODELS[self._settings.face_embedder]
        elif analyzer == FACES:
            names = DETECTOR_MODELS
        else:
            names = ANALYZER_MODELS[analyzer]
        hashes = [self._models.version_sha256(name) for name in names]
        version = "+".join((digest or "unpinned")[:8] for digest in hashes)
        if len(version) > MODEL_VERSION_LENGTH:
            version = "sha256:" + hashlib.sha256(version.encode()).hexdigest()[:32]
        return version

    def _landmark_regions_here(self) -> list[str]:
        """Enabled regions whose classifier and label map are both on this machine."""
        return [
            region for region in self._settings.landmark_regions
            if region in LANDMARK_MODELS
            and all(self._models.local_path(name) for name in LANDMARK_MODELS[region])
        ]

    @cached_property
    def face_embedder(self) -> FaceEmbedder:
        return load_face_embedder(self._settings, self._models)

    @cached_property
    def face_analyzer(self) -> FaceAnalyzer:
        s = self._settings
        return FaceAnalyzer(
            detector_path=self._models.path("face_detection_yunet"),
            embedder=self.face_embedder,
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

    @cached_property
    def action_recognizer(self) -> ActionRecognizer:
        s = self._settings
        return ActionRecognizer(
            self._models.path("movinet_a0_stream"),
            load_kinetics_labels(self._models.path("kinetics600_labels")),
            threads=s.threads, top_k=s.action_top_k, min_score=s.action_min_score,
        )

    @cached_property
    def action_rules(self) -> TagRules:
        return TagRules.load(ACTIONS_PATH, KINETICS_LABEL_IDS)

    @cached_property
    def landmark_classifiers(self) -> dict[str, LandmarkClassifier]:
        """The classifiers of the enabled regions whose files are here, by region."""
        return {
            region: LandmarkClassifier(
                region,
                self._models.path(LANDMARK_MODELS[region][0]),
                load_landmark_labels(self._models.path(LANDMARK_MODELS[region][1])),
                threads=self._settings.threads,
            )
            for region in self._landmark_regions_here()
        }

    @cached_property
    def sensitive_detector(self) -> SensitiveDetector:
        s = self._settings
        session = open_session(self._models.path("nudenet_320n"), s.threads, s.inference_engine)
        return SensitiveDetector(session, s.sensitive_min_score)

    @cached_property
    def country_regions(self) -> dict[str, tuple[str, ...]]:
        return load_country_regions(LANDMARK_REGIONS_PATH)

    def analyze(
        self, path: Path, analyzers: tuple[str, ...], stored: tuple[StoredFace, ...] = ()
    ) -> FileAnalysis:
        """Decode the file at path and run the analyzers; raises MediaError for a bad file.

        ``stored``: the file's stored faces, embedded again for the EMBEDDINGS analyzer.
        """
        kind = media_kind(path)
        if kind is None:  # a name without a known suffix: the analyzers say what it is
            kind = (MediaKind.AUDIO if MUSIC in analyzers
                    else MediaKind.VIDEO if {VIDEO, ACTIONS} & set(analyzers) else MediaKind.IMAGE)
        if kind == MediaKind.AUDIO:
            return self.analyze_audio(path)
        if kind == MediaKind.VIDEO:
            return self.analyze_video(path, analyzers)
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
            result.embedder = self.face_embedder.name
        elif EMBEDDINGS in analyzers:
            result.embeddings = self.embed_again(image.pixels, image.scale, stored)
            result.embedder = self.face_embedder.name
        labels = []
        if OBJECTS in analyzers or LANDMARKS in analyzers:
            labels = self.object_classifier.classify(image.pixels)
        if OBJECTS in analyzers:
            result.labels = labels
            result.tags[OBJECTS] = self.tag_rules.tags_for(
                (label.id, label.score) for label in labels
            )
        if PLACES in analyzers or LANDMARKS in analyzers:
            position = read_gps(path)
            if position is not None:
                result.place = self.geocoder.find(position.latitude, position.longitude)
        if PLACES in analyzers:
            result.tags[PLACES] = place_tags(result.place) if result.place else []
        if LANDMARKS in analyzers:
            result.tags[LANDMARKS] = self.landmark_tags(image.pixels, labels, result.place)
        if SENSITIVE in analyzers:
            sensitive = self.sensitive_detector.judge(image.pixels).sensitive
            result.tags[SENSITIVE] = [s.sensitive_tag] if sensitive else []
        return result

    def embed_again(
        self, pixels: np.ndarray, scale: float, stored: tuple[StoredFace, ...]
    ) -> dict[int, np.ndarray]:
        """New vectors for stored faces (box and landmarks in the file's pixels) of a photo
        decoded at scale."""
        if not stored:
            return {}
        detections = [
            Detection(
                box=tuple(float(v) * scale for v in face.box),
                score=face.score,
                landmarks=np.asarray(face.landmarks, dtype=np.float32) * scale,
            )
            for face in stored
        ]
        vectors = self.face_embedder.embed(np.ascontiguousarray(pixels), detections)
        return {face.id: vector for face, vector in zip(stored, vectors)}

    def landmark_tags(
        self, pixels: np.ndarray, labels: list[Label], place: Place | None
    ) -> list[str]:
        """Names of the landmarks in a photo whose object labels suggest one, else nothing."""
        categories = self.tag_rules.categories_for((label.id, label.score) for label in labels)
        if not worth_a_look(categories):
            return []
        s = self._settings
        regions = regions_for(
            place.country_code if place else None, self.landmark_classifiers, self.country_regions
        )
        found = find_landmarks(
            [self.landmark_classifiers[region] for region in regions],
            pixels, s.landmark_top_k, s.landmark_min_score,
        )
        return list(dict.fromkeys(label.name for label in found))


    def analyze_audio(self, path: Path) -> FileAnalysis:
        """Decode the song at path and tag its genres; raises MediaError for a bad file."""
        s = self._settings
        audio = decode_audio(path, SAMPLE_RATE, s.music_max_seconds, s.audio_decode_timeout_seconds)
        labels = self.music_tagger.tag(audio.samples)
        tags = self.genre_rules.tags_for((label.id, label.score) for label in labels)
        return FileAnalysis(labels=labels[: s.music_top_k], tags={MUSIC: tags})


    def analyze_video(self, path: Path, analyzers: tuple[str, ...] = (VIDEO,)) -> FileAnalysis:
        """The video analyzer's results (see :meth:`video_content`), the actions in clips of
        the video, and the place its position tags give."""
        s = self._settings
        if VIDEO in analyzers:
            result = self.video_content(path)
            info = result.info
        else:
            info = probe_video(path, s.video_decode_timeout_seconds)
            result = VideoAnalysis(width=info.width, height=info.height, info=info)
        if ACTIONS in analyzers:
            clips = [
                [frame.pixels for frame in read_clip(
                    path, info, start, s.action_clip_seconds, s.action_fps, s.action_max_side,
                    s.video_decode_timeout_seconds,
                )]
                for start in clip_starts(info.duration, s.action_clips, s.action_clip_seconds)
            ]
            actions = self.action_recognizer.recognize(clips)
            result.tags[ACTIONS] = self.action_rules.tags_for(
                (label.id, label.score) for label in actions
            )
        if PLACES in analyzers:
            if info.location is not None:
                result.place = self.geocoder.find(*info.location)
            result.tags[PLACES] = place_tags(result.place) if result.place else []
        return result

    def video_content(self, path: Path) -> VideoAnalysis:
        """Sampled frames: distinct faces, objects the frames agree on, genres of its music.

        All its tags are the video analyzer's, so a re-analysis replaces them together.
        """
        s = self._settings
        info, frames = read_video(
            path, s.video_max_frames, s.video_frame_interval, s.video_max_side,
            s.video_decode_timeout_seconds, s.video_scene_threshold, s.video_scene_frames,
        )
        per_frame = [
            (frame.time, [_to_original_pixels(face, frame.scale) for face in self.face_analyzer.analyze(frame.pixels)])
            for frame in frames
        ]
        faces = [appearance.face for appearance in distinct_faces(per_frame, face_distances(s).video)]
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
        return VideoAnalysis(
            width=info.width, height=info.height, faces=faces, labels=labels,
            tags={VIDEO: list(dict.fromkeys(tags))}, info=info, embedder=self.face_embedder.name,
        )


def _to_original_pixels(face: Face, scale: float) -> Face:
    """The face with box and landmarks mapped from decoded to original image pixels."""
    if scale == 1.0:
        return face
    x, y, w, h = face.box
    face.box = (x / scale, y / scale, w / scale, h / scale)
    face.landmarks = np.asarray(face.landmarks, dtype=np.float32) / scale
    return face

