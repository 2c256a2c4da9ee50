"""Seconds of compute per minute of audio for music genres, on the shared real clips.

Run from the project root: ``.venv/bin/python bench/music_speed.py [--threads N]``.
Each song is timed in stages (FFmpeg decoding, musicnn features, each checkpoint) and the
best of a few runs is kept. Besides the two 30-s clips, a 5-minute song (the blues clip ten
times over, made by FFmpeg) shows what the patch limit saves on long tracks.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ex_app.analyzers.music import (
    SAMPLE_RATE,
    MusicnnModel,
    load_musicnn_tags,
    log_mel_patches,
    patch_starts,
)
from ex_app.config import Settings
from ex_app.media.audio import decode_audio
from ex_app.models.runtime import open_session

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MUSIC = SHARED / "data" / "music"
MODELS = SHARED / "models"
REPEATS = 3


def best_seconds(run: Callable[[], object]) -> float:
    """The fastest of REPEATS runs, after one warm-up."""
    run()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def stage_seconds(path: Path, models: list[MusicnnModel], settings: Settings) -> dict[str, float]:
    """Seconds per stage for one song, and the song's decoded minutes."""
    decode = partial(
        decode_audio,
        path,
        SAMPLE_RATE,
        settings.music.max_seconds,
        settings.music.decode_timeout_seconds,
    )
    samples = decode().samples
    starts = patch_starts(len(samples), settings.music.max_patches)
    features = log_mel_patches(samples, starts)
    stages = {
        "minutes": len(samples) / SAMPLE_RATE / 60,
        "patches": len(starts),
        "decode": best_seconds(decode),
        "features": best_seconds(partial(log_mel_patches, samples, starts)),
    }
    for model in models:
        feeds = {model.session.input_names[0]: features}
        stages[model.dataset] = best_seconds(partial(model.session.run, feeds))
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    settings = Settings()
    models = [
        MusicnnModel(name, open_session(MODELS / f"musicnn_{name}.onnx", threads=args.threads),
                     load_musicnn_tags(MODELS / f"musicnn_{name}.labels.txt"))
        for name in ("msd", "mtt")
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        long_song = Path(folder) / "blues_ten_times.mp3"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", "9",
             "-i", str(MUSIC / "TRWJAZW128F42760DD_test.mp3"), "-c:a", "libmp3lame", "-b:a", "64k",
             str(long_song)],
            check=True,
        )  # fmt: skip
        songs = [*sorted(MUSIC.glob("*.mp3")), long_song]
        print(f"threads {args.threads}, at most {settings.music.max_patches} patches of 3 s a song")
        print(f"{'song':<34} {'min':>5} {'patches':>7} {'decode':>7} {'features':>8} "
              f"{'msd':>6} {'mtt':>6} {'s/min':>6}")  # fmt: skip
        for song in songs:
            s = stage_seconds(song, models, settings)
            total = s["decode"] + s["features"] + s["msd"] + s["mtt"]
            print(f"{song.name[:34]:<34} {s['minutes']:>5.2f} {s['patches']:>7} "
                  f"{s['decode']:>7.3f} {s['features']:>8.3f} {s['msd']:>6.3f} {s['mtt']:>6.3f} "
                  f"{total / s['minutes']:>6.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
