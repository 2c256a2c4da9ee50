"""What the audio and video decoders share about running FFmpeg: file URLs, probing, messages.

Every FFmpeg and FFprobe run reads local files only, through the demuxers of the containers
Recognize reads (and still images, so a photo named ``.mp4`` is told apart): playlists and
other indirections (HLS, DASH, concat, ...) that would open other files or URLs are refused.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from ex_app.media.errors import MediaError

# FFmpeg's names of the allowed demuxers ("mov" covers MP4/M4A/3GP, "matroska" WebM).
DEMUXERS = ("mp3", "mov", "aac", "ogg", "flac", "wav", "matroska", "avi",
            "jpeg_pipe", "png_pipe", "webp_pipe", "gif", "bmp_pipe", "tiff_pipe")
INPUT_LIMITS = ("-protocol_whitelist", "file", "-format_whitelist", ",".join(DEMUXERS))
_REFUSED = "not on whitelist"  # FFmpeg's words when a demuxer or protocol is not allowed


def check_not_empty(path: Path) -> None:
    """MediaError for a file that cannot be read or holds no bytes."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise MediaError(f"cannot read the file: {error.strerror or error}") from error
    if size == 0:
        raise MediaError("empty file (0 bytes)")


def limit_inputs(command: list[str]) -> list[str]:
    """The FFmpeg command with INPUT_LIMITS before each of its inputs."""
    limited = []
    for argument in command:
        if argument == "-i":
            limited.extend(INPUT_LIMITS)
        limited.append(argument)
    return limited


def file_url(path: Path) -> str:
    """The path as an FFmpeg file URL, so a name like ``a:b.mp3`` is never read as a protocol."""
    return "file:" + str(path.resolve())


def seconds(value: object) -> float | None:
    """A positive finite duration from FFprobe's JSON, or None ("N/A", missing, zero)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 and math.isfinite(number) else None


def message_lines(stderr: bytes, path: Path) -> list[str]:
    """FFmpeg's non-empty message lines, without the file's own URL (the user knows the file)."""
    url = file_url(path)
    text = stderr.decode("utf-8", "replace").replace(f"{url}: ", "").replace(url, "the file")
    return [line.strip() for line in text.splitlines() if line.strip()]


def last_message(stderr: bytes, path: Path) -> str:
    lines = message_lines(stderr, path)
    return lines[-1] if lines else "FFmpeg could not read it"


def probe(path: Path, timeout: float, kind: str) -> dict:
    """FFprobe's JSON (``format`` and ``streams``) for a file; errors name the kind of media."""
    command = ["ffprobe", "-v", "error", *INPUT_LIMITS, "-show_format", "-show_streams",
               "-of", "json", file_url(path)]
    try:
        completed = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise MediaError(f"{kind} could not be read within {timeout:g} s") from error
    except FileNotFoundError as error:
        raise RuntimeError(f"ffprobe (FFmpeg) is not installed; {kind} cannot be decoded") from error
    if completed.returncode != 0:
        refused = _REFUSED in completed.stderr.decode("utf-8", "replace")
        reason = ("a playlist or another format that Recognize does not read" if refused
                  else last_message(completed.stderr, path))
        raise MediaError(f"not a readable {kind} file ({reason})")
    try:
        return json.loads(completed.stdout.decode("utf-8", "replace") or "{}")
    except ValueError as error:
        raise MediaError(f"not a readable {kind} file (unreadable metadata: {error})") from error


def run_to_pipe(process, timeout: float, kind: str) -> tuple[bytes, bytes, int]:
    """Run an ffmpeg-python process, its inputs limited, with piped output, killed past timeout
    seconds.

    Returns stdout, stderr and the return code; judging them is the caller's.
    """
    try:
        running = subprocess.Popen(limit_inputs(process.compile()), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as error:
        raise RuntimeError(f"ffmpeg is not installed; {kind} cannot be decoded") from error
    try:
        output, errors = running.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        running.kill()
        running.communicate()
        raise MediaError(f"{kind} could not be decoded within {timeout:g} s") from error
    return output, errors, running.returncode
