"""All of Recognize's settings, typed, in one place.

Values come from environment variables prefixed ``RECOGNIZE_`` (for example
``RECOGNIZE_MAX_IMAGE_SIDE=1600``); command-line flags override them. The data folder
defaults to AppAPI's ``APP_PERSISTENT_STORAGE`` and otherwise to a per-user data folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = PROJECT_ROOT / "models" / "manifest.yml"
RULES_PATH = PROJECT_ROOT / "rules.yml"
GENRES_PATH = PROJECT_ROOT / "genres.yml"
ACTIONS_PATH = PROJECT_ROOT / "actions.yml"
LANDMARK_REGIONS_PATH = PROJECT_ROOT / "models" / "landmark_regions.yml"


def default_data_dir() -> Path:
    """AppAPI's persistent storage when running as an ExApp, else the user's data folder."""
    persistent = os.environ.get("APP_PERSISTENT_STORAGE")
    if persistent:
        return Path(persistent)
    return Path(platformdirs.user_data_dir("recognize", appauthor=False))


def default_model_mirror() -> Path | None:
    """The shared model mirror beside the project checkout, when present."""
    mirror = PROJECT_ROOT.parent / "shared" / "models"
    return mirror if mirror.is_dir() else None


class Settings(BaseSettings):
    """Everything a run of Recognize can be told."""

    model_config = SettingsConfigDict(env_prefix="RECOGNIZE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    model_mirror: Path | None = Field(default_factory=default_model_mirror)
    database_url: str | None = None  # default: SQLite in data_dir

    # Which analyzers run.
    faces_enabled: bool = True
    objects_enabled: bool = True
    music_enabled: bool = True
    places_enabled: bool = True

    # Resources.
    threads: int = Field(default=1, ge=1)
    # onnxruntime or LiteRT; "auto": by the processor's features (ex_app/models/runtime.py)
    inference_engine: Literal["auto", "onnx", "tflite"] = "auto"
    max_image_side: int = Field(default=1920, ge=64)
    max_image_pixels: int = Field(default=178_956_970, ge=1)  # Pillow's own bomb limit

    # Faces.
    face_min_score: float = Field(default=0.8, gt=0, lt=1)
    face_min_size: int = Field(default=16, ge=1)  # pixels, shorter side of the box
    # The face embedder: "sface" (OpenCV Zoo's SFace) or "dlib" (dlib's ResNet). Changing it
    # re-embeds the stored faces in the background (ex_app/work/reembed.py).
    face_embedder: Literal["sface", "dlib"] = "sface"
    # The admin's choice: the embedder's link, member and join distances times 0.95 (strict:
    # fewer mix-ups), 1 or 1.05 (loose: fewer splits), where they are not set below.
    face_sensitivity: Literal["strict", "balanced", "loose"] = "balanced"
    # Grouping faces into persons: Euclidean distances between the embedder's vectors. Unset
    # (None), each is the embedder's own value measured by bench/faces_quality.py
    # (ex_app/people/clustering.py: EMBEDDER_DISTANCES); set, it holds for either embedder.
    face_cluster_distance: float | None = Field(default=None, gt=0)  # longest link in a new person
    face_member_distance: float | None = Field(default=None, gt=0)  # a member's own link at most
    face_merge_distance: float | None = Field(default=None, ge=0)  # new persons this close: one
    face_join_distance: float | None = Field(default=None, gt=0)  # a face joins a person this close
    face_cluster_neighbours: int = Field(default=10, ge=1)  # k of the k-nearest-neighbour graph
    face_min_faces_per_person: int = Field(default=2, ge=2)
    face_suggestion_distance: float | None = Field(default=None, gt=0)  # "may be the same person"
    face_full_regroup_limit: int = Field(default=50_000, ge=0)  # more faces: incremental only
    # The quality gate: faces below it are kept ("unsure") but never seed a person.
    face_gate_min_size: float = Field(default=16, ge=0)  # pixels, shorter side of the box
    face_gate_min_score: float = Field(default=0.85, ge=0, le=1)
    face_gate_min_sharpness: float = Field(default=30.0, ge=0)  # Laplacian variance at 64×64
    face_gate_min_pose: float = Field(default=0.2, ge=0, le=1)  # 1 = frontal

    # Objects and scenes.
    object_top_k: int = Field(default=5, ge=1)
    object_min_score: float = Field(default=0.05, ge=0, le=1)

    # Places (from GPS positions, offline). The city tag names the nearest town or the city the
    # photo is in; farther than place_city_max_km, only the region and country are given, and
    # farther than place_max_km from any town (at sea, in a desert), no place at all.
    place_city_max_km: float = Field(default=25.0, gt=0)
    place_max_km: float = Field(default=100.0, gt=0)

    # Music genres (musicnn).
    music_top_k: int = Field(default=10, ge=1)  # musicnn labels kept per song (tags: genres.yml)
    music_max_patches: int = Field(default=16, ge=1)  # 3-s patches judged per song, spread over it
    music_max_seconds: float = Field(default=1200, gt=0)  # audio decoded per song, from its start
    audio_decode_timeout_seconds: float = Field(default=300, gt=0)  # FFmpeg's time per file

    # Videos: frames sampled about every video_frame_interval seconds, at most video_max_frames,
    # each analyzed like a photo; faces closer than video_face_distance are one appearance; an
    # object label counts when video_label_min_frames frames or video_label_min_share of them
    # give it; an audio track of video_music_min_seconds or more goes to the music model.
    video_enabled: bool = True
    video_max_frames: int = Field(default=16, ge=1)
    video_frame_interval: float = Field(default=1.0, gt=0)  # seconds between sampled frames
    video_max_side: int = Field(default=1280, ge=64)  # pixels, longer side of a decoded frame
    video_decode_timeout_seconds: float = Field(default=120, gt=0)  # FFmpeg's time per video
    video_face_distance: float | None = Field(default=None, gt=0)  # None: the embedder's value
    video_label_min_frames: int = Field(default=3, ge=1)
    video_label_min_share: float = Field(default=0.3, gt=0, le=1)
    video_music_min_seconds: float = Field(default=10.0, ge=0)
    # Up to video_scene_frames of the sampled frames are the first frames of new scenes: key
    # frames whose grey thumbnail differs from the previous key frame's by more than
    # video_scene_threshold (mean absolute difference, 0-1; cuts between photos measure 0.15
    # to 0.3, a moving test pattern 2 s apart below 0.05); 0 frames: evenly spread only.
    video_scene_frames: int = Field(default=6, ge=0)
    video_scene_threshold: float = Field(default=0.1, gt=0, lt=1)

    # Actions in videos (MoViNet, Kinetics-600; tags: actions.yml): action_clips clips of
    # action_clip_seconds, spread over the video, streamed at action_fps frames per second;
    # classes scoring action_min_score or more are kept. Like landmarks, an optional analyzer,
    # off until the admin turns it on (its models come from TF Hub, not from our mirror):
    # then /init fetches its models but does not fail without them, and it is skipped (one
    # log line) while its model files are not on this machine.
    actions_enabled: bool = False
    action_clips: int = Field(default=3, ge=1)
    action_clip_seconds: float = Field(default=4.0, gt=0)
    action_fps: float = Field(default=5.0, gt=0)  # the rate MoViNet's stream models expect
    action_max_side: int = Field(default=256, ge=64)  # decoded frame size before the crop
    action_top_k: int = Field(default=5, ge=1)
    action_min_score: float = Field(default=0.05, ge=0, le=1)

    # Landmarks in photos (Google's regional classifiers), only on photos whose object labels
    # suggest architecture or scenery; the regions of the photo's country when it has GPS,
    # else every region in landmark_regions.
    landmarks_enabled: bool = False
    landmark_regions: list[str] = Field(
        default=["africa", "asia", "europe", "north_america", "south_america", "oceania_antarctica"]
    )
    landmark_top_k: int = Field(default=3, ge=1)
    landmark_min_score: float = Field(default=0.3, ge=0, le=1)

    # The sensitive-photo filter (NudeNet's detector), off until the admin turns it on: a photo
    # whose exposed-body detections score sensitive_min_score or more gets the restricted
    # tag sensitive_tag (README: "Sensitive photos").
    sensitive_enabled: bool = False
    sensitive_min_score: float = Field(default=0.6, gt=0, le=1)
    sensitive_tag: str = Field(default="Sensitive", min_length=1, max_length=64)

    # The ExApp (Nextcloud): how it works through the users' files.
    jobs: int = Field(default=1, ge=1)  # files downloaded at once (analysis: one at a time)
    # "22-6": no analysis from 22:00 until 06:00 (server time); empty: none.
    quiet_hours: str = Field(default="", pattern=r"^$|^([01]?\d|2[0-3])-([01]?\d|2[0-3])$")
    person_names_as_tags: bool = False  # named persons also become tags on their photos
    max_download_bytes: int = Field(default=512 * 1024 * 1024, ge=1)  # larger files: skipped
    crawl_interval_seconds: float = Field(default=600, ge=1)  # between crawls of all users
    users_enabled_by_default: bool = True  # a user who never chose in personal settings
    # How often users' choices (personal settings) are read again from Nextcloud; 0: every cycle.
    user_choice_refresh_seconds: float = Field(default=300, ge=0)

    # Queue and workers (README: "Workers and other machines"). The queue carries "analyze
    # these files" messages; the tasks table stays the truth about each file's state.
    queue_url: str | None = None  # default: SQLite in data_dir; redis://HOST:PORT/DB for hosts
    queue_batch_size: int = Field(default=16, ge=1)  # files per message (all needing one model set)
    max_attempts: int = Field(default=5, ge=1)  # transient failures before a file is dead-lettered
    retry_delay_seconds: float = Field(default=30, gt=0)  # before the first retry; doubles each time
    file_time_limit_seconds: float = Field(default=600, gt=0)  # analysis of one file, at most
    lease_seconds: float = Field(default=1800, gt=0)  # a claim older than this goes to another worker
    requeue_interval_seconds: float = Field(default=60, gt=0)  # how often workers look for lost work
    idle_poll_seconds: float = Field(default=5, gt=0)  # longest wait between looks at an empty queue
    cpu_budget: int | None = Field(default=None, ge=1)  # threads for all workers of a host; None: half the cores
    worker_nice: int = Field(default=10, ge=0, le=19)  # CPU priority of a worker process
    worker_idle_io: bool = True  # a worker reads and writes at idle I/O priority
    worker_memory_mb: int = Field(default=0, ge=0)  # address-space cap of a worker process; 0: none

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.model_mirror is not None:
            self.model_mirror = self.model_mirror.expanduser().resolve()
        return self

    @model_validator(mode="after")
    def _lease_outlasts_time_limit(self) -> Settings:
        if self.lease_seconds <= self.file_time_limit_seconds:
            raise ValueError("lease_seconds must exceed file_time_limit_seconds")
        return self

    @property
    def resolved_queue_url(self) -> str:
        return self.queue_url or f"sqlite:///{self.data_dir / 'queue.db'}"

    @property
    def resolved_cpu_budget(self) -> int:
        return self.cpu_budget or max(1, (os.cpu_count() or 1) // 2)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'recognize.db'}"
