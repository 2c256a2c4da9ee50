"""Audio decoding: any song Recognize reads (MP3, AAC/M4A, OGG/Opus, FLAC, WAV, ...), as mono
float32 samples at the rate an analyzer asks for.

FFmpeg does the work (``ffprobe`` to look, ``ffmpeg`` piping raw PCM to decode), reading at
most ``max_seconds`` of the file, so memory stays bounded whatever the file claims. Every
failure that is the file's fault is a ``MediaError`` whose message says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from ex_app.media.errors import MediaError
from ex_app.media.ffmpeg_io import (check_not_empty, file_url, message_lines, probe, run_to_pipe,
                                    seconds)

# A file whose container states its duration but that decodes to less than this share of it
# (less a second) was cut short. Lenient: formats only estimate some durations.
TRUNCATED_SHARE = 0.9


@dataclass(frozen=True)
class DecodedAudio:
    """Mono samples ready for an analyzer."""

    samples: np.ndarray  # float32, mono, full scale ±1 (lossy codecs' peaks may pass it)
    rate: int  # samples per second
    duration: float | None  # seconds the file declares (before any max_seconds cut), if it does
    codec: str  # FFmpeg's name of the audio codec: "mp3", "aac", "opus", "flac", "pcm_s16le", ...

    @property
    def seconds(self) -> float:
        """Length of the decoded samples."""
        return len(self.samples) / self.rate


def decode_audio(path: Path, rate: int, max_seconds: float, timeout: float) -> DecodedAudio:
    """Decode the first max_seconds of the file's first audio stream to mono float32 at rate.

    Raises MediaError for an empty file, a file that is not audio, one without an audio
    stream, and one that is truncated or corrupt; FFmpeg gets at most timeout seconds.
    """
    path = Path(path)
    check_not_empty(path)
    stream, duration = _probe(path, timeout)
    samples, errors = _decode(path, rate, max_seconds, timeout)
    if samples.size == 0:
        detail = f": {errors[-1]}" if errors else ""
        raise MediaError(f"corrupt audio, no sound could be decoded{detail}")
    decoded = DecodedAudio(samples, rate, duration, stream.get("codec_name", "unknown"))
    if duration is not None and decoded.seconds < TRUNCATED_SHARE * min(duration, max_seconds) - 1:
        raise MediaError(f"truncated or corrupt audio: decoded {decoded.seconds:.1f} s "
                         f"of the {duration:.1f} s the file declares")
    return decoded


def _probe(path: Path, timeout: float) -> tuple[dict, float | None]:
    """The file's first audio stream and its declared duration in seconds (None if unknown)."""
    info = probe(path, timeout, "audio")
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise MediaError("no audio stream in the file")
    stream, container = streams[0], info.get("format", {})
    return stream, seconds(stream.get("duration")) or seconds(container.get("duration"))


def _decode(
    path: Path, rate: int, max_seconds: float, timeout: float
) -> tuple[np.ndarray, list[str]]:
    """Samples of the first audio stream, and FFmpeg's error lines (damage it decoded past)."""
    process = (
        ffmpeg.input(file_url(path), t=max_seconds)
        .output("pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le", ac=1, ar=rate,
                af="aresample=resampler=soxr:precision=28")  # close to librosa's resampling
        .global_args("-nostdin", "-hide_banner", "-v", "error"))
    raw, stderr, returncode = run_to_pipe(process, timeout, "audio")
    errors = message_lines(stderr, path)
    if returncode != 0:
        raise MediaError(f"corrupt audio ({errors[-1] if errors else 'FFmpeg failed'})")
    usable = len(raw) - len(raw) % 4
    return np.frombuffer(raw[:usable], dtype="<f4").astype(np.float32), errors
