"""Video decoding: a bounded number of RGB frames spread over a video, and what it holds.

``ffprobe`` reads the streams, duration and position tags; ``ffmpeg`` then seeks to each sample
time and pipes one downscaled RGB frame, so time and memory depend on the number of frames asked
for, not on the length of the video. Sample times are spread evenly and, when asked, also put
just after scene changes (found among key frames only, so finding them stays cheap). Short
clips of consecutive frames at a fixed rate serve action recognition. Every failure that is the
file's fault is a ``MediaError``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from ex_app.media.errors import MediaError
from ex_app.media.ffmpeg_io import check_not_empty, file_url, probe, run_to_pipe, seconds

# Missing frames up to this share of those asked for are tolerated (seeks near damaged spots);
# more means the file is truncated or corrupt.
MAX_MISSING_SHARE = 0.25
SCENE_THUMBNAIL = (64, 36)  # key frames are compared as grey thumbnails of this size
# Container tags that hold the recording position as ISO 6709 (phones, cameras, ffmpeg -metadata).
LOCATION_TAGS = ("location", "com.apple.quicktime.location.ISO6709", "location-eng")
ISO6709 = re.compile(r"([+-]\d{1,2}(?:\.\d+)?)([+-]\d{1,3}(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?(?:CRS\S*)?/?")


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a video, in display orientation."""

    duration: float  # seconds
    width: int  # pixels, as displayed (rotation applied)
    height: int
    codec: str  # FFmpeg's name of the video codec
    audio_seconds: float | None  # length of the first audio stream; None without one
    location: tuple[float, float] | None = None  # (latitude, longitude) where it was recorded


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame."""

    time: float  # seconds from the start
    pixels: np.ndarray  # H×W×3 uint8 RGB
    scale: float  # decoded size / displayed size (≤ 1)


def sample_times(duration: float, max_frames: int, interval: float) -> list[float]:
    """At most max_frames times, about one per interval seconds, centred in equal slices."""
    count = max(1, min(max_frames, math.ceil(duration / interval)))
    return [duration * (i + 0.5) / count for i in range(count)]


def merge_times(spread: list[float], scenes: list[float], max_frames: int, max_scenes: int,
                min_gap: float) -> list[float]:
    """Scene-change times (at most max_scenes, evenly chosen) and the spread times not within
    min_gap of one of them, at most max_frames in all, in order."""
    chosen = _evenly(sorted(scenes), min(max_scenes, max_frames))
    rest = [at for at in spread if all(abs(at - scene) >= min_gap for scene in chosen)]
    return sorted(chosen + _evenly(rest, max_frames - len(chosen)))


def _evenly(values: list[float], count: int) -> list[float]:
    """count of the values, spread evenly over the list (all of them if there are fewer)."""
    if count <= 0:
        return []
    if len(values) <= count:
        return list(values)
    return [values[round(i * (len(values) - 1) / max(1, count - 1))] for i in range(count)]


def clip_starts(duration: float, clips: int, seconds: float) -> list[float]:
    """Start times of clips of the given length centred in equal slices of the video."""
    return [max(0.0, duration * (i + 0.5) / clips - seconds / 2) for i in range(clips)]


def read_video(
    path: Path, max_frames: int, interval: float, max_side: int, timeout: float,
    scene_threshold: float | None = None, max_scene_frames: int = 0,
) -> tuple[VideoInfo, list[VideoFrame]]:
    """Probe the video at path and decode its sampled frames, downscaled to max_side.

    With a scene_threshold (0-1, see :func:`scene_changes`), up to max_scene_frames of the frames
    are the first frames of new scenes, the rest spread evenly. Raises MediaError for an empty
    file, a file that is not a video, one without a video stream, and one that is truncated or
    corrupt; FFmpeg gets at most timeout seconds in all.
    """
    path, deadline, info, (width, height) = _open(path, max_side, timeout)
    times = sample_times(info.duration, max_frames, interval)
    if scene_threshold is not None and max_scene_frames > 0 and len(times) > 1:
        scenes = scene_changes(path, scene_threshold, deadline, timeout)
        times = merge_times(times, scenes, max_frames, max_scene_frames, interval / 2)
    frames = []
    for at in times:
        pixels = _frame_at(path, at, width, height, deadline, timeout)
        if pixels is not None:
            frames.append(VideoFrame(at, pixels, width / info.width))
    missing = len(times) - len(frames)
    if not frames or missing > MAX_MISSING_SHARE * len(times):
        raise MediaError(f"truncated or corrupt video: {missing} of {len(times)} sampled frames "
                         f"of the {info.duration:.1f} s it declares could not be decoded")
    return info, frames


def read_frame(path: Path, at: float, max_side: int, timeout: float) -> VideoFrame:
    """The frame shown at `at` seconds, decoded as :func:`read_video` decodes its samples
    (the same frame for the same time), downscaled to max_side. Raises MediaError."""
    path, deadline, info, (width, height) = _open(path, max_side, timeout)
    pixels = _frame_at(path, min(max(at, 0.0), info.duration), width, height, deadline, timeout)
    if pixels is None:
        raise MediaError(f"no frame at {at:.1f} s of the {info.duration:.1f} s the video declares")
    return VideoFrame(at, pixels, width / info.width)


def scene_changes(path: Path, threshold: float, deadline: float, timeout: float) -> list[float]:
    """Times (seconds) of key frames that differ from the key frame before by more than
    threshold: the mean absolute difference of their small grey thumbnails, 0 (same) to 1.

    Only key frames are decoded, so this stays cheap on long videos; encoders put one at a
    cut (x264: unless the last one is very recent), and every few seconds in any case.
    """
    width, height = SCENE_THUMBNAIL
    process = (
        ffmpeg.input(file_url(path), skip_frame="nokey")["v:0"]
        .filter("scale", width, height)
        .filter("format", "gray")
        .filter("showinfo")
        .output("pipe:", format="rawvideo", pix_fmt="gray", fps_mode="passthrough")
        .global_args("-nostdin", "-hide_banner", "-v", "info"))
    raw, messages, _ = run_to_pipe(process, _remaining(deadline, timeout), "video")
    times = [float(found) for found in re.findall(
        r"Parsed_showinfo.*?pts_time:\s*(-?[0-9.]+)", messages.decode("utf-8", "replace"))]
    count = min(len(times), len(raw) // (width * height))
    thumbnails = np.frombuffer(raw[: count * width * height], dtype=np.uint8)
    thumbnails = thumbnails.reshape(count, height * width).astype(np.float32) / 255
    differences = np.abs(np.diff(thumbnails, axis=0)).mean(axis=1)
    return [times[i + 1] for i in np.nonzero(differences > threshold)[0]]


def read_clip(path: Path, info: VideoInfo, start: float, seconds: float, fps: float,
              max_side: int, timeout: float) -> list[VideoFrame]:
    """Consecutive frames at fps from start for seconds (a clip for an action model), as RGB
    downscaled to max_side; fewer when the video ends sooner."""
    width, height = _decoded_size(info, max_side)
    process = (
        ffmpeg.input(file_url(path), ss=f"{start:.3f}", t=f"{seconds:.3f}")["v:0"]
        .filter("fps", fps=fps)
        .filter("scale", width, height, flags="area")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .global_args("-nostdin", "-hide_banner", "-v", "error"))
    raw, _, _ = run_to_pipe(process, timeout, "video")
    count = len(raw) // (width * height * 3)
    pixels = np.frombuffer(raw[: count * width * height * 3], dtype=np.uint8)
    pixels = pixels.reshape(count, height, width, 3)
    return [VideoFrame(start + i / fps, pixels[i].copy(), width / info.width) for i in range(count)]


def parse_iso6709(value: str) -> tuple[float, float] | None:
    """(latitude, longitude) from an ISO 6709 position in decimal degrees, like the
    ``+48.8566+002.3522/`` that phones write; None when it is not one or out of range."""
    match = ISO6709.fullmatch(value.strip())
    if match is None:
        return None
    latitude, longitude = float(match.group(1)), float(match.group(2))
    if abs(latitude) > 90 or abs(longitude) > 180 or (latitude, longitude) == (0.0, 0.0):
        return None
    return latitude, longitude


def _open(path: Path, max_side: int, timeout: float) -> tuple[Path, float, VideoInfo, tuple]:
    """The path, the decoding deadline, the probe and the decoded size of a video to read."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    check_not_empty(path)
    info = probe_video(path, timeout)
    return path, deadline, info, _decoded_size(info, max_side)


def _remaining(deadline: float, timeout: float) -> float:
    """Seconds left before the deadline; MediaError when none are."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise MediaError(f"video could not be decoded within {timeout:g} s")
    return remaining


def _decoded_size(info: VideoInfo, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(info.width, info.height))
    return max(2, round(info.width * scale)), max(2, round(info.height * scale))


def _location(probed: dict) -> tuple[float, float] | None:
    """The recording position from the container's (or a stream's) ISO 6709 tags."""
    tagged = [probed.get("format", {}).get("tags", {})]
    tagged += [stream.get("tags", {}) for stream in probed.get("streams", [])]
    for tags in tagged:
        for key, value in tags.items():
            if key in LOCATION_TAGS or key.lower() in LOCATION_TAGS:
                position = parse_iso6709(str(value))
                if position is not None:
                    return position
    return None


def probe_video(path: Path, timeout: float) -> VideoInfo:
    """The video's duration, displayed size, codec and audio length; MediaError if unreadable."""
    probed = probe(path, timeout, "video")
    streams, container = probed.get("streams", []), probed.get("format", {})
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not s.get("disposition", {}).get("attached_pic")]  # cover art is no video
    if not videos:
        raise MediaError("no video stream in the file")
    video = videos[0]
    duration = seconds(video.get("duration")) or seconds(container.get("duration"))
    if duration is None or container.get("format_name", "").endswith("_pipe") \
            or container.get("format_name") == "image2":
        raise MediaError("not a video: a still image or a stream without a duration")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise MediaError("corrupt video: its frames have no size")
    if _rotation(video) % 180 == 90:
        width, height = height, width
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    audio_seconds = (seconds(audios[0].get("duration")) or duration) if audios else None
    return VideoInfo(duration, width, height, video.get("codec_name", "unknown"), audio_seconds,
                     _location(probed))


def _frame_at(
    path: Path, at: float, width: int, height: int, deadline: float, timeout: float
) -> np.ndarray | None:
    """The frame shown at `at` seconds as RGB of width × height, or None if none decodes."""
    process = (
        ffmpeg.input(file_url(path), ss=f"{at:.3f}")
        .output("pipe:", map="0:v:0", vframes=1, format="rawvideo", pix_fmt="rgb24",
                s=f"{width}x{height}", sws_flags="area")
        .global_args("-nostdin", "-hide_banner", "-v", "error"))
    raw, _, _ = run_to_pipe(process, _remaining(deadline, timeout), "video")
    expected = width * height * 3
    if len(raw) < expected:
        return None
    return np.frombuffer(raw[:expected], dtype=np.uint8).reshape(height, width, 3).copy()


def _rotation(stream: dict) -> int:
    """Degrees the player turns the frames (display matrix or the old ``rotate`` tag)."""
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return abs(int(float(side["rotation"])))
    return abs(int(float(stream.get("tags", {}).get("rotate", 0) or 0)))
