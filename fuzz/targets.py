"""Fuzz targets: each decoder path fed arbitrary bytes must answer a result or a MediaError.

Run one with atheris (coverage-guided through Pillow's and Recognize's Python code; the C
decoders and FFmpeg are exercised but not instrumented)::

    python -m fuzz.targets image CORPUS_DIR SEED_DIR -max_total_time=60

``fuzz/run.py`` runs them all for a bounded time. Any other exception is a crash: libFuzzer
saves the input as ``crash-*``; an input that runs past ``-timeout`` is saved as ``timeout-*``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["PIL", "pillow_heif", "ex_app"]):
    from PIL import (  # noqa: F401  the plugins decode_image reaches, instrumented
        BmpImagePlugin,
        GifImagePlugin,
        JpegImagePlugin,
        PngImagePlugin,
        TiffImagePlugin,
        WebPImagePlugin,
    )

    from ex_app.media.audio import decode_audio
    from ex_app.media.errors import MediaError
    from ex_app.media.gps import read_gps
    from ex_app.media.images import decode_image
    from ex_app.media.video import probe_video

# Small enough that a fuzzed header cannot make one input cost seconds or gigabytes.
MAX_SIDE = 256
MAX_PIXELS = 20_000_000
FFMPEG_TIMEOUT = 5.0

_scratch = Path(tempfile.mkdtemp(prefix="recognize-fuzz-"))


def _as_file(data: bytes, suffix: str) -> Path:
    path = _scratch / f"input{suffix}"
    path.write_bytes(data)
    return path


def image(data: bytes) -> None:
    """JPEG, PNG, WebP, GIF, TIFF, BMP and HEIF bytes through decode_image and read_gps."""
    try:
        decoded = decode_image(data, MAX_SIDE, MAX_PIXELS)
    except MediaError:
        pass
    else:
        assert decoded.pixels.ndim == 3 and decoded.pixels.shape[2] == 3
        assert max(decoded.pixels.shape[:2]) <= MAX_SIDE
    try:
        read_gps(data)
    except MediaError:
        pass


heic = image  # the same path; its seeds are HEIC files, so the fuzzer works inside HEIF


def audio(data: bytes) -> None:
    """Bytes named .mp3 through FFprobe and FFmpeg's decoding."""
    try:
        decoded = decode_audio(_as_file(data, ".mp3"), 16_000, 5.0, FFMPEG_TIMEOUT)
    except MediaError:
        return
    assert decoded.samples.size > 0 and decoded.rate == 16_000


def video(data: bytes) -> None:
    """Bytes named .mp4 through FFprobe's reading of a video."""
    try:
        info = probe_video(_as_file(data, ".mp4"), FFMPEG_TIMEOUT)
    except MediaError:
        return
    assert info.width > 0 and info.height > 0 and info.duration > 0


TARGETS = {"image": image, "heic": heic, "audio": audio, "video": video}


def main() -> None:
    name, libfuzzer_args = sys.argv[1], sys.argv[2:]
    atheris.Setup([sys.argv[0], *libfuzzer_args], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
