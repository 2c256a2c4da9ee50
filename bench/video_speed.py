"""Seconds of compute per minute of video: frame sampling, faces and objects on the frames.

Run from the project root: ``.venv/bin/python bench/video_speed.py [--threads N]``.
FFmpeg makes 1-minute and 10-minute 1280×720 H.264 slideshows of the shared face photos;
each is timed in stages (finding scene changes among key frames, decoding the sampled frames,
faces, objects, aggregation) with the default settings, so the frame limit shows in the long
one. A last line times the action analyzer's input pipeline (its clips decoded at 5 fps,
cropped and scaled to MoViNet's 172×172): the MoViNet model itself is not timed, its weights
are not on this machine.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from ex_app.analyzers.actions import prepare_frame
from ex_app.analyzers.faces import FaceAnalyzer, embedder
from ex_app.analyzers.pipeline import Pipeline
from ex_app.analyzers.objects import ObjectClassifier, load_imagenet_labels
from ex_app.analyzers.video import agreed_labels, appearance_distance, distinct_faces
from ex_app.config import Settings
from ex_app.media.video import (
    clip_starts,
    probe_video,
    read_clip,
    read_video,
    scene_changes,
)
from ex_app.models.manifest import load_manifest
from ex_app.models.runtime import open_session
from ex_app.models.store import ModelStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "faces"
MODELS = SHARED / "models"


def make_video(folder: Path, minutes: int) -> Path:
    """A slideshow of face photos, 2 s each, 1280×720 at 25 fps, looped to the length."""
    photos = sorted(FACES.glob("*/*.jpg"))[:30]
    listing = folder / "photos.txt"
    listing.write_text("".join(f"file '{p}'\nduration 2\n" for p in photos))
    out = folder / f"{minutes}min.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-f", "concat",
         "-safe", "0", "-i", str(listing), "-t", str(60 * minutes),
         "-vf", "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:-1:-1,fps=25",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    threads = parser.parse_args().threads
    s = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(Path(tmp) / "models", load_manifest(), mirror=MODELS)
        faces = FaceAnalyzer(
            detector_path=store.path("face_detection_yunet"),
            embedder=embedder(Pipeline(s, store)),
            min_score=s.faces.min_score, min_size=s.faces.min_size, threads=threads,
        )
        objects = ObjectClassifier(
            open_session(store.path("efficientnet_lite0"), threads=threads),
            load_imagenet_labels(store.path("imagenet_labels")),
            top_k=s.objects.top_k, min_score=s.objects.min_score,
        )
        print(f"threads={threads}, video_max_frames={s.video.max_frames}, "
              f"video_max_side={s.video.max_side}")
        for minutes in (1, 10):
            video = make_video(Path(tmp), minutes)
            start = time.perf_counter()
            cuts = scene_changes(video, s.video.scene_threshold, start + 600, 600)
            scenes = time.perf_counter() - start
            start = time.perf_counter()
            _, frames = read_video(video, s.video.max_frames, s.video.frame_interval,
                                   s.video.max_side, s.video.decode_timeout_seconds,
                                   s.video.scene_threshold, s.video.scene_frames)
            decoded = time.perf_counter()
            per_frame = [(frame.time, faces.analyze(frame.pixels)) for frame in frames]
            faced = time.perf_counter()
            labels = objects.classify_batch([frame.pixels for frame in frames])
            classified = time.perf_counter()
            people = distinct_faces(per_frame, appearance_distance(s))
            agreed = agreed_labels(labels, s.video.label_min_frames, s.video.label_min_share)
            done = time.perf_counter()
            total = done - start
            print(f"{minutes:>2}-min video, {len(cuts)} cuts found in {scenes:.2f} s; "
                  f"{len(frames)} frames: decode (scenes included) {decoded - start:.2f} s, "
                  f"faces {faced - decoded:.2f} s, objects {classified - faced:.2f} s, "
                  f"aggregate {done - classified:.3f} s; {total:.2f} s in all = "
                  f"{total / minutes:.2f} s per minute of video "
                  f"({len(people)} appearances, {len(agreed)} agreed labels)")
            start = time.perf_counter()
            info = probe_video(video, 60)
            tensors = [
                prepare_frame(frame.pixels, 172, 172)
                for at in clip_starts(info.duration, s.actions.clips, s.actions.clip_seconds)
                for frame in read_clip(video, info, at, s.actions.clip_seconds, s.actions.fps,
                                       s.actions.max_side, 600)
            ]
            clipped = time.perf_counter() - start
            print(f"   action input: {len(tensors)} frames in {s.actions.clips} clips, "
                  f"{clipped:.2f} s = {clipped / minutes:.2f} s per minute of video "
                  "(MoViNet itself not timed)")


if __name__ == "__main__":
    main()
