"""What a video holds, from its sampled frames: pure functions over per-frame results.

Faces seen in several frames are one appearance (their embeddings are close); object labels
count only when frames agree on them; the audio track is worth the music model when long enough.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ex_app.analyzers.faces import Face
from ex_app.analyzers.objects import Label
from ex_app.media.video import VideoInfo


@dataclass
class Appearance:
    """One face seen in the video: its best-quality sighting and how often it was seen."""

    face: Face  # the best-quality face, in its frame's pixels
    time: float  # seconds: the frame the face comes from
    frames: int  # sightings merged into this appearance


def distinct_faces(frames: list[tuple[float, list[Face]]], max_distance: float) -> list[Appearance]:
    """Faces of all frames grouped into appearances, in order of first sighting.

    Faces within max_distance of each other (Euclidean, dlib embeddings) are one appearance,
    and so, transitively, are their neighbours (single linkage: the order of frames is moot).
    """
    sightings = [(at, face) for at, faces in sorted(frames, key=lambda f: f[0]) for face in faces]
    if not sightings:
        return []
    embeddings = np.stack([face.embedding for _, face in sightings]).astype(np.float32)
    near = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=2) <= max_distance
    group = list(range(len(sightings)))  # union-find over the "near" graph

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(near, k=1))):
        group[root(int(j))] = root(int(i))
    appearances: dict[int, Appearance] = {}
    for index, (at, face) in enumerate(sightings):
        key = root(index)
        appearance = appearances.get(key)
        if appearance is None:
            appearances[key] = Appearance(face, at, 1)
            continue
        appearance.frames += 1
        if face.quality > appearance.face.quality:
            appearance.face, appearance.time = face, at
    return list(appearances.values())


def agreed_labels(frames: list[list[Label]], min_frames: int, min_share: float) -> list[Label]:
    """Labels in at least min_frames frames' lists or min_share of them, best average first.

    The score is the label's mean over the frames that gave it.
    """
    if not frames:
        return []
    scores: dict[str, list[float]] = defaultdict(list)
    names: dict[str, str] = {}
    for labels in frames:
        for label in labels:
            scores[label.id].append(label.score)
            names[label.id] = label.name
    agreed = [
        Label(id=label_id, name=names[label_id], score=float(np.mean(values)))
        for label_id, values in scores.items()
        if len(values) >= min_frames or len(values) >= min_share * len(frames)
    ]
    return sorted(agreed, key=lambda label: label.score, reverse=True)


def has_music_track(info: VideoInfo, min_seconds: float) -> bool:
    """Whether the video's audio track is long enough for the music model."""
    return info.audio_seconds is not None and info.audio_seconds >= min_seconds
