"""Fuzz every decoder path for a bounded time and report what was found.

    .venv/bin/python fuzz/run.py --seconds 60 [--targets image heic audio video]

Seeds are made from the real files in ``../shared/data`` (small re-encodings in each format the
target reads); the growing corpus and any ``crash-*``/``timeout-*``/``oom-*`` inputs land in
``build/fuzz/<target>/``. Each target runs in its own process with a per-input time limit and
a memory cap; the exit status is 1 when any target found a crash.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
OUT = REPO / "build" / "fuzz"
TARGETS = ("image", "heic", "audio", "video")
PER_INPUT_SECONDS = 20  # the decoders' FFmpeg timeout is 5 s; a hang is anything far past it
RSS_LIMIT_MB = 2048
MAX_LEN = {"image": 32_768, "heic": 32_768, "audio": 16_384, "video": 16_384}
PHOTOS = ["images/n01491361_tiger_shark.JPEG", "faces/noface/skimage_coffee.png",
          "faces/Al_Gore/lfw_Al_Gore_0004.jpg"]
SONG = "music/TRWJAZW128F42760DD_test.mp3"


def image_seeds(folder: Path) -> None:
    """Each photo small, in every format decode_image reads, one with EXIF GPS and orientation."""
    from PIL import Image

    for number, name in enumerate(PHOTOS):
        with Image.open(SHARED_DATA / name) as photo:
            small = photo.convert("RGB").resize((48, 32))
        exif = Image.Exif()
        exif[0x0112] = 6
        exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
        small.save(folder / f"{number}.jpg", quality=70, exif=exif)
        small.save(folder / f"{number}.png", exif=exif)
        small.save(folder / f"{number}.webp", quality=60)
        small.convert("P").save(folder / f"{number}.gif")
        small.save(folder / f"{number}.tif", exif=exif)
        small.save(folder / f"{number}.bmp")
        small.convert("RGBA").save(folder / f"{number}-alpha.png")
        small.convert("I;16").save(folder / f"{number}-16.png")


def heic_seeds(folder: Path) -> None:
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()
    for number, name in enumerate(PHOTOS):
        with Image.open(SHARED_DATA / name) as photo:
            photo.convert("RGB").resize((32, 32)).save(folder / f"{number}.heic", quality=30)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def audio_seeds(folder: Path) -> None:
    """One second of a real song in each container and codec decode_audio meets most."""
    song = str(SHARED_DATA / SONG)
    for suffix, codec in [("mp3", "libmp3lame"), ("ogg", "libvorbis"), ("flac", "flac"),
                          ("wav", "pcm_s16le"), ("m4a", "aac"), ("opus", "libopus")]:
        _ffmpeg("-i", song, "-t", "0.5", "-ac", "1", "-ar", "16000", "-c:a", codec,
                "-b:a", "16k" if codec not in ("flac", "pcm_s16le") else "0",
                str(folder / f"clip.{suffix}"))


def video_seeds(folder: Path) -> None:
    """A second of video from a real photo, in the containers decode reads, one with sound."""
    photo = str(SHARED_DATA / PHOTOS[0])
    song = str(SHARED_DATA / SONG)
    for suffix, codec in [("mp4", "libx264"), ("webm", "libvpx"), ("mkv", "mpeg4"),
                          ("avi", "mjpeg")]:
        _ffmpeg("-loop", "1", "-i", photo, "-t", "1", "-r", "2", "-vf", "scale=32:24",
                "-c:v", codec, str(folder / f"clip.{suffix}"))
    _ffmpeg("-loop", "1", "-i", photo, "-i", song, "-t", "1", "-r", "2", "-vf", "scale=32:24",
            "-c:v", "libx264", "-c:a", "aac", "-b:a", "16k", "-shortest",
            str(folder / "sound.mov"))


SEEDS = {"image": image_seeds, "heic": heic_seeds, "audio": audio_seeds, "video": video_seeds}


def fuzz(target: str, seconds: int) -> list[Path]:
    """Run one target for seconds; the inputs it found failing."""
    folder = OUT / target
    corpus, findings = folder / "corpus", folder / "findings"
    for path in (corpus, findings):
        path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as seeds:
        SEEDS[target](Path(seeds))
        command = [sys.executable, "-m", "fuzz.targets", target, str(corpus), seeds,
                   f"-max_total_time={seconds}", f"-timeout={PER_INPUT_SECONDS}",
                   f"-rss_limit_mb={RSS_LIMIT_MB}", f"-max_len={MAX_LEN[target]}",
                   f"-artifact_prefix={findings}/", "-print_final_stats=1"]
        process = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True,
                                 timeout=seconds + 5 * PER_INPUT_SECONDS + 120)
    (folder / "log.txt").write_text(process.stderr)
    lines = process.stderr.splitlines()
    progress = [line.split("\t", 1)[-1] for line in lines if re.match(r"#\d+\t", line)]
    stats = [line.removeprefix("stat::").replace(" ", "") for line in lines
             if line.startswith(("stat::number_of_executed_units", "stat::peak_rss_mb"))]
    print(f"{target}: exit {process.returncode}; {progress[-1] if progress else ''}; "
          + "; ".join(stats), flush=True)
    found = sorted(findings.glob("*-*"))
    for path in found:
        print(f"  found {path.relative_to(REPO)} ({path.stat().st_size} bytes)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    options = parser.parse_args()
    found = [path for target in options.targets for path in fuzz(target, options.seconds)]
    print(f"{len(found)} failing inputs" if found else "no failing input")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
