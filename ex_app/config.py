"""All of Recognize's settings, typed, in one place: a section per concern.

Values come from environment variables prefixed ``RECOGNIZE_``, a section's fields joined by
``__`` (for example ``RECOGNIZE_IMAGES__MAX_SIDE=1600``, ``RECOGNIZE_FACES__ENABLED=false``);
command-line flags override them. The flat names of the release before
(``RECOGNIZE_MAX_IMAGE_SIDE``, :data:`FLAT_NAMES`) are still read, with a deprecation line
naming the new one, and accepted as keywords (the admin form's saved values use them). The
data folder defaults to AppAPI's ``APP_PERSISTENT_STORAGE`` and otherwise to a per-user data
folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, get_args

import platformdirs
from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = PROJECT_ROOT / "models" / "manifest.yml"
RULES_PATH = PROJECT_ROOT / "rules.yml"
GENRES_PATH = PROJECT_ROOT / "genres.yml"
ACTIONS_PATH = PROJECT_ROOT / "actions.yml"
LANDMARK_REGIONS_PATH = PROJECT_ROOT / "models" / "landmark_regions.yml"


def default_data_dir() -> Path:
    """AppAPI's persistent storage when running as an ExApp, else the user's data folder."""
    persistent = os.environ.get("APP_PERSISTENT_STORAGE")
    return Path(persistent or platformdirs.user_data_dir("recognize", appauthor=False))


def default_model_mirror() -> Path | None:
    """The shared model mirror beside the project checkout, when present."""
    mirror = PROJECT_ROOT.parent / "shared" / "models"
    return mirror if mirror.is_dir() else None


class AnalyzerSection(BaseModel):
    """The settings every analyzer has: whether it runs (ex_app/analyzers/registry.py)."""

    enabled: bool = True


class FacesSettings(AnalyzerSection):
    min_score: float = Field(default=0.8, gt=0, lt=1)
    min_size: int = Field(default=16, ge=1)  # pixels, shorter side of the box
    # The face embedder: "sface" (OpenCV Zoo's SFace) or "dlib" (dlib's ResNet). Changing it
    # re-embeds the stored faces in the background (ex_app/store/reembed.py).
    embedder: Literal["sface", "dlib"] = "sface"
    # The admin's choice: the embedder's link, member and join distances times 0.95 (strict:
    # fewer mix-ups), 1 or 1.05 (loose: fewer splits), where they are not set below.
    sensitivity: Literal["strict", "balanced", "loose"] = "balanced"
    # Grouping faces into persons: Euclidean distances between the embedder's vectors. Unset
    # (None), each is the embedder's own value measured by bench/faces_quality.py
    # (ex_app/people/distances.py: EMBEDDER_DISTANCES); set, it holds for either embedder.
    cluster_distance: float | None = Field(default=None, gt=0)  # longest link in a new person
    member_distance: float | None = Field(default=None, gt=0)  # a member's own link at most
    merge_distance: float | None = Field(default=None, ge=0)  # new persons this close: one
    join_distance: float | None = Field(default=None, gt=0)  # a face joins a person this close
    cluster_neighbours: int = Field(default=10, ge=1)  # k of the k-nearest-neighbour graph
    min_faces_per_person: int = Field(default=2, ge=2)
    suggestion_distance: float | None = Field(default=None, gt=0)  # "may be the same person"
    full_regroup_limit: int = Field(default=50_000, ge=0)  # more faces: incremental only
    # The quality gate: faces below it are kept ("unsure") but never seed a person.
    gate_min_size: float = Field(default=16, ge=0)  # pixels, shorter side of the box
    gate_min_score: float = Field(default=0.85, ge=0, le=1)
    gate_min_sharpness: float = Field(default=30.0, ge=0)  # Laplacian variance at 64×64
    gate_min_pose: float = Field(default=0.2, ge=0, le=1)  # 1 = frontal


class ObjectsSettings(AnalyzerSection):
    top_k: int = Field(default=5, ge=1)
    min_score: float = Field(default=0.05, ge=0, le=1)


class PlacesSettings(AnalyzerSection):
    """Places (from GPS positions, offline). The city tag names the nearest town or the city
    the photo is in; farther than city_max_km, only the region and country are given, and
    farther than max_km from any town (at sea, in a desert), no place at all."""

    city_max_km: float = Field(default=25.0, gt=0)
    max_km: float = Field(default=100.0, gt=0)


class MusicSettings(AnalyzerSection):
    top_k: int = Field(default=10, ge=1)  # musicnn labels kept per song (tags: genres.yml)
    max_patches: int = Field(default=16, ge=1)  # 3-s patches judged per song, spread over it
    max_seconds: float = Field(default=1200, gt=0)  # audio decoded per song, from its start
    decode_timeout_seconds: float = Field(default=300, gt=0)  # FFmpeg's time per file


class VideoSettings(AnalyzerSection):
    """Videos: frames sampled about every frame_interval seconds, at most max_frames, each
    analyzed like a photo; faces closer than face_distance are one appearance; an object label
    counts when label_min_frames frames or label_min_share of them give it; an audio track of
    music_min_seconds or more goes to the music model. Up to scene_frames of the sampled
    frames are the first frames of new scenes: key frames whose grey thumbnail differs from
    the previous key frame's by more than scene_threshold (mean absolute difference, 0-1; cuts
    between photos measure 0.15 to 0.3, a moving test pattern 2 s apart below 0.05); 0 frames:
    evenly spread only."""

    max_frames: int = Field(default=16, ge=1)
    frame_interval: float = Field(default=1.0, gt=0)  # seconds between sampled frames
    max_side: int = Field(default=1280, ge=64)  # pixels, longer side of a decoded frame
    decode_timeout_seconds: float = Field(default=120, gt=0)  # FFmpeg's time per video
    face_distance: float | None = Field(default=None, gt=0)  # None: the embedder's value
    label_min_frames: int = Field(default=3, ge=1)
    label_min_share: float = Field(default=0.3, gt=0, le=1)
    music_min_seconds: float = Field(default=10.0, ge=0)
    scene_frames: int = Field(default=6, ge=0)
    scene_threshold: float = Field(default=0.1, gt=0, lt=1)


class ActionsSettings(AnalyzerSection):
    """Actions in videos (MoViNet, Kinetics-600; tags: actions.yml): ``clips`` clips of
    clip_seconds, spread over the video, streamed at fps frames per second; classes scoring
    min_score or more are kept. An optional analyzer, off until the admin turns it on (its
    models come from TF Hub, not from our mirror)."""

    enabled: bool = False
    clips: int = Field(default=3, ge=1)
    clip_seconds: float = Field(default=4.0, gt=0)
    fps: float = Field(default=5.0, gt=0)  # the rate MoViNet's stream models expect
    max_side: int = Field(default=256, ge=64)  # decoded frame size before the crop
    top_k: int = Field(default=5, ge=1)
    min_score: float = Field(default=0.05, ge=0, le=1)


LandmarkRegion = Literal[
    "africa", "asia", "europe", "north_america", "south_america", "oceania_antarctica"
]


class LandmarksSettings(AnalyzerSection):
    """Landmarks in photos (Google's regional classifiers), only on photos whose object labels
    suggest architecture or scenery; the regions of the photo's country when it has GPS, else
    every region in ``regions``. Optional, off until the admin turns it on."""

    enabled: bool = False
    regions: list[LandmarkRegion] = Field(default=list(get_args(LandmarkRegion)))
    top_k: int = Field(default=3, ge=1)
    min_score: float = Field(default=0.3, ge=0, le=1)


class SensitiveSettings(AnalyzerSection):
    """The sensitive-photo filter (NudeNet's detector), off until the admin turns it on: a
    photo whose exposed-body detections score min_score or more gets the restricted tag
    ``tag`` (README: "Sensitive photos")."""

    enabled: bool = False
    min_score: float = Field(default=0.6, gt=0, le=1)
    tag: str = Field(default="Sensitive", min_length=1, max_length=64)


class InferenceSettings(BaseModel):
    threads: int = Field(default=1, ge=1)
    # onnxruntime or LiteRT; "auto": by the processor's features (ex_app/models/runtime.py)
    engine: Literal["auto", "onnx", "tflite"] = "auto"


class ImagesSettings(BaseModel):
    max_side: int = Field(default=1920, ge=64)
    max_pixels: int = Field(default=178_956_970, ge=1)  # Pillow's own bomb limit


class NextcloudSettings(BaseModel):
    """The ExApp: how it works through the Nextcloud users' files."""

    jobs: int = Field(default=1, ge=1)  # files downloaded at once (analysis: one at a time)
    person_names_as_tags: bool = False  # named persons also become tags on their photos
    max_download_bytes: int = Field(default=512 * 1024 * 1024, ge=1)  # larger files: skipped
    crawl_interval_seconds: float = Field(default=600, ge=1)  # between crawls of all users
    users_enabled_by_default: bool = True  # a user who never chose in personal settings
    # How often users' choices (personal settings) are read again from Nextcloud; 0: every cycle.
    user_choice_refresh_seconds: float = Field(default=300, ge=0)


class ContactsSettings(BaseModel):
    """Names from contacts (ex_app/people/contacts.py): each user's own address books are read
    when the People page asks, at most every refresh_seconds, and only books whose sync token
    changed; a person whose faces match a contact's photo is offered its name."""

    enabled: bool = True
    distance: float | None = Field(default=None, gt=0)  # None: the embedder's measured value
    refresh_seconds: float = Field(default=300, ge=0)

class QueueSettings(BaseModel):
    """Queue (README: "Workers and other machines"). The queue carries "analyze these files"
    messages; the tasks table stays the truth about each file's state."""

    url: str | None = None  # default: SQLite in data_dir; redis://HOST:PORT/DB for hosts
    batch_size: int = Field(default=16, ge=1)  # files per message (all needing one model set)
    max_attempts: int = Field(default=5, ge=1)  # transient failures before a file is dead-lettered
    retry_delay_seconds: float = Field(default=30, gt=0)  # before the first retry; doubles each time
    file_time_limit_seconds: float = Field(default=600, gt=0)  # analysis of one file, at most
    lease_seconds: float = Field(default=1800, gt=0)  # a claim older than this goes to another worker
    requeue_interval_seconds: float = Field(default=60, gt=0)  # how often workers look for lost work
    idle_poll_seconds: float = Field(default=5, gt=0)  # longest wait between looks at an empty queue

    @model_validator(mode="after")
    def _lease_outlasts_time_limit(self) -> QueueSettings:
        if self.lease_seconds <= self.file_time_limit_seconds:
            raise ValueError("lease_seconds must exceed file_time_limit_seconds")
        return self


class WorkerSettings(BaseModel):
    """How a worker process shares the machine."""

    cpu_budget: int | None = Field(default=None, ge=1)  # threads for all workers of a host; None: half the cores
    nice: int = Field(default=10, ge=0, le=19)  # CPU priority of a worker process
    idle_io: bool = True  # a worker reads and writes at idle I/O priority
    memory_mb: int = Field(default=0, ge=0)  # address-space cap of a worker process; 0: none
    # "22-6": no analysis from 22:00 until 06:00 (server time); empty: none.
    quiet_hours: str = Field(default="", pattern=r"^$|^([01]?\d|2[0-3])-([01]?\d|2[0-3])$")


# The flat names of the release before → section and field; read for one more release. Each
# is the section's old prefix and the field ("face_" + "embedder"), "<section>_enabled", or:
_IRREGULAR = {
    "threads": ("inference", "threads"), "inference_engine": ("inference", "engine"),
    "max_image_side": ("images", "max_side"), "max_image_pixels": ("images", "max_pixels"),
    "audio_decode_timeout_seconds": ("music", "decode_timeout_seconds"),
    "queue_url": ("queue", "url"), "queue_batch_size": ("queue", "batch_size"),
    "quiet_hours": ("worker", "quiet_hours"), "cpu_budget": ("worker", "cpu_budget"),
}
_OLD_PREFIXES = {
    "faces": "face_", "objects": "object_", "places": "place_", "music": "music_",
    "video": "video_", "actions": "action_", "landmarks": "landmark_", "sensitive": "sensitive_", "worker": "worker_",
    "nextcloud": "", "queue": "",
}
_WARNED: set[str] = set()  # flat variables named in the log already


class Settings(BaseSettings):
    """Everything a run of Recognize can be told."""

    model_config = SettingsConfigDict(env_prefix="RECOGNIZE_", env_nested_delimiter="__",
                                      extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    model_mirror: Path | None = Field(default_factory=default_model_mirror)
    database_url: str | None = None  # default: SQLite in data_dir

    # The analyzers, a section each (named as in ex_app/analyzers/registry.py).
    faces: FacesSettings = FacesSettings()
    objects: ObjectsSettings = ObjectsSettings()
    places: PlacesSettings = PlacesSettings()
    music: MusicSettings = MusicSettings()
    video: VideoSettings = VideoSettings()
    actions: ActionsSettings = ActionsSettings()
    landmarks: LandmarksSettings = LandmarksSettings()
    sensitive: SensitiveSettings = SensitiveSettings()

    inference: InferenceSettings = InferenceSettings()
    images: ImagesSettings = ImagesSettings()
    nextcloud: NextcloudSettings = NextcloudSettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    contacts: ContactsSettings = ContactsSettings()

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, values: Any) -> Any:
        """Flat keywords win over their section's field; a flat variable counts where neither
        a keyword nor a section's variable set the field, with a line naming the new name."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for flat, (section, field) in FLAT_NAMES.items():
            variable = os.environ.get(f"RECOGNIZE_{flat.upper()}")
            if flat not in values and variable is None:
                continue
            part = values.get(section) or {}
            part = part.model_dump() if isinstance(part, BaseModel) else dict(part)
            if flat in values:
                part[field] = values.pop(flat)
            elif field not in part:
                part[field] = json.loads(variable) if variable.startswith("[") else variable
                if flat not in _WARNED:
                    _WARNED.add(flat)
                    log.warning("RECOGNIZE_%s is deprecated: it is read as RECOGNIZE_%s__%s",
                                flat.upper(), section.upper(), field.upper())
            values[section] = part
        return values

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.model_mirror is not None:
            self.model_mirror = self.model_mirror.expanduser().resolve()
        return self

    @property
    def resolved_queue_url(self) -> str:
        return self.queue.url or f"sqlite:///{self.data_dir / 'queue.db'}"

    @property
    def resolved_cpu_budget(self) -> int:
        return self.worker.cpu_budget or max(1, (os.cpu_count() or 1) // 2)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'recognize.db'}"


FLAT_NAMES: dict[str, tuple[str, str]] = _IRREGULAR | {
    (f"{section}_enabled" if field == "enabled" else prefix + field): (section, field)
    for section, prefix in _OLD_PREFIXES.items()
    for field in Settings.model_fields[section].annotation.model_fields
    if (section, field) not in _IRREGULAR.values()
}
