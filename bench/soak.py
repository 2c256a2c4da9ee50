"""Soak: one long `recognize scan` over many generated files, its memory sampled throughout.

    .venv/bin/python bench/soak.py [--files 20000] [--analyzers objects] [--workdir build/soak]

The files are made from the real photos in ``../shared/data`` (ImageNet samples and face
photos), each resized to a random size and saved as JPEG, PNG, WebP or HEIC; about 2 % are
broken (truncated, empty, not an image). A pool of variants is encoded once and each file is a
variant with a unique trailer after the image data, so every file has its own content hash.
The scan runs in its own process; its resident memory (with its children) is sampled every
0.2 s with psutil, and its progress read from the database every second. It prints the peak memory in each
slice of 2,000 files done and the ratio of the last slice's peak to the first's: memory that
does not grow with the number of files gives a ratio near 1.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
from PIL import Image
from pillow_heif import register_heif_opener

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FORMATS = (("JPEG", ".jpg", 0.55), ("PNG", ".png", 0.15), ("WEBP", ".webp", 0.2),
           ("HEIF", ".heic", 0.1))
POOL = 600  # distinct encoded variants
SLICE = 2_000
ANALYZERS = ("faces", "objects", "music", "places", "video")


def variants(count: int, chance: random.Random) -> list[tuple[str, bytes]]:
    """count encoded photos: random real photo, size, format."""
    register_heif_opener()
    photos = sorted((SHARED / "data" / "images").iterdir())
    photos += sorted((SHARED / "data" / "faces" / "group").iterdir())
    photos += sorted((SHARED / "data" / "faces").glob("*/lfw_*.jpg"))[:200]
    made = []
    for _ in range(count):
        fmt, suffix, _share = chance.choices(FORMATS, weights=[f[2] for f in FORMATS])[0]
        with Image.open(chance.choice(photos)) as photo:
            image = photo.convert("RGB")
        side = chance.choice((160, 320, 640, 1024, 1600, 2400))
        scale = side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        stream = io.BytesIO()
        image.save(stream, fmt, quality=chance.randint(60, 92))
        made.append((suffix, stream.getvalue()))
    return made


def broken(chance: random.Random, pool: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    suffix, data = chance.choice(pool)
    kind = chance.choice(("truncated", "empty", "text"))
    if kind == "truncated":
        return suffix, data[: len(data) // 3]
    return suffix, b"" if kind == "empty" else b"not an image at all\n" * 20


def make_tree(folder: Path, files: int, seed: int) -> None:
    chance = random.Random(seed)
    pool = variants(POOL, chance)
    for number in range(files):
        suffix, data = broken(chance, pool) if chance.random() < 0.02 else chance.choice(pool)
        if data:
            data += b"soak-file-%08d" % number  # after the image's end: decoders ignore it
        sub = folder / f"{number // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{number:06d}{suffix}").write_bytes(data)


def done_files(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.5) as connection:
            return connection.execute(
                "SELECT count(DISTINCT file_id) FROM tasks WHERE status != 'pending'"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def rss_mb(process: psutil.Process) -> float:
    try:
        members = [process, *process.children(recursive=True)]
        return sum(p.memory_info().rss for p in members) / 2**20
    except psutil.Error:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--analyzers", nargs="+", choices=ANALYZERS, default=["objects"])
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "soak")
    parser.add_argument("--seed", type=int, default=8)
    options = parser.parse_args()

    tree, data_dir = options.workdir / "tree", options.workdir / "state"
    shutil.rmtree(options.workdir, ignore_errors=True)
    started = time.monotonic()
    make_tree(tree, options.files, options.seed)
    print(f"{options.files} files made in {time.monotonic() - started:.0f} s", flush=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    env.pop("APP_PERSISTENT_STORAGE", None)
    for analyzer in ANALYZERS:
        env[f"RECOGNIZE_{analyzer.upper()}__ENABLED"] = "1" if analyzer in options.analyzers else "0"
    command = [sys.executable, "-m", "ex_app", "--data-dir", str(data_dir),
               "--model-mirror", str(SHARED / "models"), "scan", str(tree)]
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    process = psutil.Process(child.pid)
    peaks: dict[int, float] = {}
    done, samples = 0, 0
    while child.poll() is None:
        memory = rss_mb(process)
        if samples % 5 == 0:  # the database once a second: counting costs the scan CPU
            done = done_files(data_dir / "recognize.db") or done
        samples += 1
        index = min(done, options.files - 1) // SLICE
        peaks[index] = max(peaks.get(index, 0.0), memory)
        time.sleep(0.2)
    output = child.stdout.read()
    seconds = time.monotonic() - started
    if child.returncode != 0:
        sys.exit(f"the scan failed ({child.returncode}):\n{output[-3000:]}")
    print(output.strip().splitlines()[-1] if output.strip() else "")
    print(f"scan of {options.files} files ({', '.join(options.analyzers)}): {seconds:.0f} s, "
          f"{options.files / seconds:.1f} files/s (load average {os.getloadavg()[0]:.1f})")
    print("files done        peak RSS (MB)")
    for index in sorted(peaks):
        low, high = index * SLICE, min((index + 1) * SLICE, options.files)
        print(f"{low:>6}-{high:<8}  {peaks[index]:10.1f}")
    first, last = peaks[min(peaks)], peaks[max(peaks)]
    print(f"peak RSS last/first slice: {last / first:.2f}")


if __name__ == "__main__":
    main()
