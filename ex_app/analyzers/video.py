"""What a video holds, from its sampled frames: pure functions over per-frame results.

Faces seen in several frames are one appearance (their embeddings are close); object labels
count only when frames agree on them; the audio track is worth the music model when long enough.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy.sparse.csgraph import connected_components

from ex_app.analyzers import music, objects
from ex_app.analyzers.faces import PEOPLE_TAG, face_analyzer, to_original_pixels
from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.analyzers.results import Face, Label
from ex_app.config import Settings
from ex_app.media.video import VideoFrame, VideoInfo, read_video

# Faces of a video's frames this close are one appearance, per embedder (bench/faces_quality.py
# chose them with the grouping's distances, ex_app/people/distances.py), unless set.
APPEARANCE_DISTANCES = {"sface": 1.0, "dlib": 0.5}


def appearance_distance(settings: Settings) -> float:
    return settings.video.face_distance or APPEARANCE_DISTANCES[settings.faces.embedder]


@dataclass
class Appearance:
    """One face seen in the video: its best-quality sighting and how often it was seen."""

    face: Face  # the best-quality face, in its frame's pixels
    time: float  # seconds: the frame the face comes from
    frames: int  # sightings merged into this appearance


def distinct_faces(frames: list[tuple[float, list[Face]]], max_distance: float) -> list[Appearance]:
    """Faces of all frames grouped into appearances, in order of first sighting.

    Faces within max_distance of each other (Euclidean, face vectors) are one appearance,
    and so, transitively, are their neighbours (single linkage: the order of frames is moot).
    """
    sightings = [(at, face) for at, faces in sorted(frames, key=lambda f: f[0]) for face in faces]
    if not sightings:
        return []
    embeddings = np.stack([face.embedding for _, face in sightings]).astype(np.float32)
    near = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=2) <= max_distance
    _, components = connected_components(near, directed=False)
    appearances: dict[int, Appearance] = {}
    for key, (at, face) in zip(components.tolist(), sightings):
        appearance = appearances.setdefault(key, Appearance(face, at, 0))
        appearance.frames += 1
        if face.quality > appearance.face.quality:
            appearance.face, appearance.time = face, at
    return list(appearances.values())


def agreed_labels(frames: list[list[Label]], min_frames: int, min_share: float) -> list[Label]:
    """Labels in at least min_frames frames' lists or min_share of them, best average first."""
    scores: dict[str, list[float]] = defaultdict(list)
    names: dict[str, str] = {}
    for labels in frames:
        for label in labels:
            scores[label.id].append(label.score)
            names[label.id] = label.name
    agreed = [Label(label_id, names[label_id], float(np.mean(values)))
              for label_id, values in scores.items()
              if len(values) >= min_frames or len(values) >= min_share * len(frames)]
    return sorted(agreed, key=lambda label: label.score, reverse=True)


def has_music_track(info: VideoInfo, min_seconds: float) -> bool:
    """Whether the video's audio track is long enough for the music model."""
    return info.audio_seconds is not None and info.audio_seconds >= min_seconds


def frames(media: Media) -> list[VideoFrame]:
    """The sampled frames of a video (its probe becomes the media's video_info)."""
    s = media.settings.video
    media.video_info, found = read_video(
        media.path, s.max_frames, s.frame_interval, s.max_side, s.decode_timeout_seconds,
        s.scene_threshold, s.scene_frames)
    return found


def build(pipeline: Pipeline) -> Callable:
    """Sampled frames: distinct faces, objects the frames agree on, genres of its music. All
    its tags are the video analyzer's, so a re-analysis replaces them together."""
    s = pipeline.settings
    faces, classifier = pipeline.part(face_analyzer), pipeline.part(objects.classifier)
    rules, distance = pipeline.part(objects.tag_rules), appearance_distance(s)

    def analyze(media: Media, result) -> list[str]:
        sampled = media.once(frames)
        per_frame = [(frame.time, [to_original_pixels(f, frame.scale)
                                   for f in faces.analyze(frame.pixels)]) for frame in sampled]
        result.faces = [replace(appearance.face, frame_time=appearance.time)
                        for appearance in distinct_faces(per_frame, distance)]
        result.embedder = faces.embedder.name
        found = classifier.classify_batch([frame.pixels for frame in sampled])
        labels = agreed_labels(found, s.video.label_min_frames, s.video.label_min_share)
        result.labels = labels[: s.objects.top_k]
        tags = ([PEOPLE_TAG] if result.faces else []) + rules.tags_for(
            (label.id, label.score) for label in result.labels)
        if s.music.enabled and has_music_track(media.video_info, s.video.music_min_seconds):
            sound = media.once(music.song_labels)
            result.labels += sound[: s.music.top_k]
            tags += pipeline.part(music.genre_rules).tags_for((x.id, x.score) for x in sound)
        return list(dict.fromkeys(tags))

    return analyze
