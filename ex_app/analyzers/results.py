"""What the analyzers find, as the store records it: the one vocabulary between the
analyzers, the pipeline that runs them and the store."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """One detected face, in the coordinates of the image given to the analyzer."""

    box: tuple[float, float, float, float]  # x, y, w, h in input pixels
    score: float  # YuNet's detection score
    landmarks: np.ndarray  # 5×2: right eye, left eye, nose tip, right, left mouth corner
    quality: float  # 0..1, see face_quality
    sharpness: float  # box_sharpness: Laplacian variance of the grey face at 64×64
    pose: float  # 0..1 frontality from the landmarks, 1 = frontal
    embedding: np.ndarray  # 128 float32 from the analyzer's embedder (see the module's text)
    frame_time: float | None = None  # seconds into a video: the frame the face was found in


@dataclass
class Label:
    """One class the classifier sees in a photo."""

    id: str  # WordNet id, e.g. "n02123045"
    name: str  # e.g. "tabby, tabby cat"
    score: float  # softmax probability, 0..1


@dataclass(frozen=True)
class Place:
    """The place a position is in or near."""

    city: str | None  # the nearest town or city; None when farther than the city limit
    region: str | None  # its first-level division (state, région, prefecture), if known
    country: str  # common English name, e.g. "France"
    country_code: str  # ISO 3166-1 alpha-2, e.g. "FR"
    distance_km: float  # great-circle distance to the place's centre point


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

