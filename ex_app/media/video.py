"""Video decoding: a bounded number of RGB frames spread over a video, and what it holds.

``ffprobe`` reads the streams and duration; ``ffmpeg`` then seeks to each sample time and pipes
one downscaled RGB frame, so time and memory depend on the number of frames asked for, not on
the length of the video. Every failure that is the file's fault is a ``MediaError``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from ex_app.media.errors import MediaError
from ex_app.media.ffmpeg_io import file_url, probe, run_to_pipe, seconds

# Missing frames up to this share of those asked for are tolerated (seeks near damaged spots);
# more means the file is truncated or corrupt.
MAX_MISSING_SHARE = 0.25


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a video, in display orientation."""

    duration: float  # seconds
    width: int  # pixels, as displayed (rotation applied)
    height: int
    codec: str  # FFmpeg's name of the video codec
    audio_seconds: float | None  # length of the first audio stream; None without one


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


def read_video(
    path: Path, max_frames: int, interval: float, max_side: int, timeout: float
) -> tuple[VideoInfo, list[VideoFrame]]:
    """Probe the video at path and decode its sampled frames, downscaled to max_side.

    Raises MediaError for an empty file, a file that is not a video, one without a video
    stream, and one that is truncated or corrupt; FFmpeg gets at most timeout seconds in all.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout
    try:
        size = path.stat().st_size
    except OSError as error:
        raise MediaError(f"cannot read the file: {error.strerror or error}") from error
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    info = probe_video(path, timeout)
    scale = min(1.0, max_side / max(info.width, info.height))
    width, height = max(2, round(info.width * scale)), max(2, round(info.height * scale))
    times = sample_times(info.duration, max_frames, interval)
    frames = []
    for at in times:
        pixels = _frame_at(path, at, width, height, deadline, timeout)
        if pixels is not None:
            frames.append(VideoFrame(at, pixels, width / info.width))
    missing = len(times) - len(frames)
    if not frames or missing > MAX_MISSING_SHARE * len(times):
        raise MediaError(
            f"truncated or corrupt video: {missing} of {len(times)} sampled frames "
            f"of the {info.duration:.1f} s it declares could not be decoded"
        )
    return info, frames


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
    audio_seconds = None
    if audios:
        audio_seconds = seconds(audios[0].get("duration")) or duration
    return VideoInfo(duration, width, height, video.get("codec_name", "unknown"), audio_seconds)


def _frame_at(
    path: Path, at: float, width: int, height: int, deadline: float, timeout: float
) -> np.ndarray | None:
    """The frame shown at `at` seconds as RGB of width × height, or None if none decodes."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise MediaError(f"video could not be decoded within {timeout:g} s")
    process = (
        ffmpeg.input(file_url(path), ss=f"{at:.3f}")
        .output("pipe:", map="0:v:0", vframes=1, format="rawvideo", pix_fmt="rgb24",
                s=f"{width}x{height}", sws_flags="area")
        .global_args("-nostdin", "-hide_banner", "-v", "error")
    )
    raw, _, _ = run_to_pipe(process, remaining, "video")
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
