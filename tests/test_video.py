"""Videos made with FFmpeg from the real face photos, ImageNet photos and the blues clip."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ex_app.analyzers.faces import FaceAnalyzer, SFaceEmbedder
from ex_app.analyzers.objects import ObjectClassifier, load_imagenet_labels
from ex_app.analyzers.results import Label
from ex_app.analyzers.video import (
    agreed_labels,
    appearance_distance,
    distinct_faces,
    has_music_track,
)
from ex_app.config import Settings
from ex_app.media.errors import MediaError
from ex_app.media.video import (
    merge_times,
    parse_iso6709,
    probe_video,
    read_video,
    sample_times,
    scene_changes,
)
from ex_app.models.runtime import open_session

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "faces"
BLUES = SHARED / "data" / "music" / "TRWJAZW128F42760DD_test.mp3"
PHOTO = SHARED / "data" / "images" / "n01728920_ringneck_snake.JPEG"
SETTINGS = Settings()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def slideshow(
    folder: Path, photos: list[Path], out: Path, audio: Path | None = None, size: str = "250:250"
) -> Path:
    """An H.264 MP4 showing each photo for one second (at 10 fps, scaled to size), with audio."""
    folder.mkdir()
    for index, photo in enumerate(photos):
        shutil.copy(photo, folder / f"{index:03d}.jpg")
    args = ["-framerate", "1", "-i", str(folder / "%03d.jpg")]
    if audio is not None:
        args += ["-i", str(audio), "-c:a", "aac", "-shortest"]
    ffmpeg(*args, "-vf", f"scale={size},fps=10", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    return out


def read(path: Path, max_frames: int = SETTINGS.video.max_frames):
    return read_video(path, max_frames, SETTINGS.video.frame_interval, SETTINGS.video.max_side,
                      SETTINGS.video.decode_timeout_seconds)


@pytest.fixture(scope="module")
def face_analyzer(model_store) -> FaceAnalyzer:
    return FaceAnalyzer(
        detector_path=model_store.path("face_detection_yunet"),
        embedder=SFaceEmbedder(model_store.path("face_recognition_sface")),
        min_score=SETTINGS.faces.min_score,
        min_size=SETTINGS.faces.min_size,
    )


@pytest.fixture(scope="module")
def faces_video(tmp_path_factory) -> Path:
    """Four photos of Colin Powell, then four of Tom Ridge, with the blues clip as sound."""
    tmp = tmp_path_factory.mktemp("faces_video")
    photos = sorted((FACES / "Colin_Powell").glob("*.jpg"))[:4]
    photos += sorted((FACES / "Tom_Ridge").glob("*.jpg"))[:4]
    return slideshow(tmp / "photos", photos, tmp / "faces.mp4", audio=BLUES)


def test_probe_reads_duration_size_and_audio(faces_video: Path) -> None:
    info = probe_video(faces_video, timeout=30)
    assert 7.5 <= info.duration <= 8.5
    assert (info.width, info.height, info.codec) == (250, 250, "h264")
    assert info.audio_seconds is not None and 7 <= info.audio_seconds <= 8.5
    assert has_music_track(info, min_seconds=5) and not has_music_track(info, min_seconds=20)


def test_frames_are_spread_rgb_and_downscaled(faces_video: Path) -> None:
    _, frames = read_video(faces_video, 8, 1.0, max_side=100, timeout=60)
    assert [round(frame.time, 2) for frame in frames] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]
    assert all(frame.pixels.shape == (100, 100, 3) and frame.pixels.dtype == np.uint8
               for frame in frames)
    assert frames[0].scale == pytest.approx(0.4)
    assert len({frame.pixels.tobytes() for frame in frames}) == 8  # eight different photos


def test_two_people_in_eight_frames_are_two_appearances(faces_video, face_analyzer) -> None:
    _, frames = read(faces_video)
    per_frame = [(frame.time, face_analyzer.analyze(frame.pixels)) for frame in frames]
    assert sum(len(faces) for _, faces in per_frame) >= 8
    appearances = distinct_faces(per_frame, appearance_distance(SETTINGS))
    assert len(appearances) == 2
    powell, ridge = appearances
    assert powell.time < 4 <= ridge.time  # Powell's photos come first
    assert powell.frames >= 4 and ridge.frames >= 4
    for appearance in appearances:  # each keeps its best face
        sightings = [f for at, faces in per_frame for f in faces
                     if (at < 4) == (appearance.time < 4)]
        assert appearance.face.quality == max(f.quality for f in sightings)


def test_a_repeated_photo_gives_its_label_and_noise_does_not(tmp_path: Path, model_store) -> None:
    classifier = ObjectClassifier(
        open_session(model_store.path("efficientnet_lite0")),
        load_imagenet_labels(model_store.path("imagenet_labels")),
        top_k=SETTINGS.objects.top_k, min_score=SETTINGS.objects.min_score,
    )
    video = slideshow(tmp_path / "photos", [PHOTO] * 6, tmp_path / "snake.mp4", size="-2:360")
    _, frames = read(video)
    per_frame = classifier.classify_batch([frame.pixels for frame in frames])
    labels = agreed_labels(
        per_frame, SETTINGS.video.label_min_frames, SETTINGS.video.label_min_share
    )
    assert labels[0].id == "n01728920"  # ringneck snake
    assert labels == sorted(labels, key=lambda label: label.score, reverse=True)
    # A label one frame of six gives is dropped; one that three give is kept, averaged.
    lonely, shared = Label("x1", "lonely", 0.9), Label("x2", "shared", 0.6)
    noisy = [frame + ([lonely] if i == 0 else [shared] if i <= 3 else [])
             for i, frame in enumerate(per_frame)]
    ids = {label.id: label.score for label in agreed_labels(noisy, 3, 0.5)}
    assert "x1" not in ids and ids["x2"] == pytest.approx(0.6)


def test_a_long_video_samples_at_most_max_frames(tmp_path: Path) -> None:
    video = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5:duration=120",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video))
    info, frames = read(video, max_frames=6)
    assert info.duration == pytest.approx(120, abs=0.5)
    assert len(frames) == 6 and frames[-1].time > 100
    assert info.audio_seconds is None and not has_music_track(info, 0)
    assert sample_times(3.0, 16, 1.0) == [0.5, 1.5, 2.5]


def test_bad_videos_raise_media_error(tmp_path: Path, faces_video: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(50_000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(faces_video.read_bytes()[: faces_video.stat().st_size // 2])
    song = tmp_path / "song.mp3"
    shutil.copy(BLUES, song)
    still = tmp_path / "still.mp4"
    shutil.copy(PHOTO, still)
    expected = {empty: "empty file", noise: "not a readable video", truncated: "video",
                song: "no video stream", still: "not a video"}
    for path, message in expected.items():
        with pytest.raises(MediaError, match=message):
            read(path)


def test_a_video_cut_after_its_header_is_truncated(tmp_path: Path) -> None:
    """With the index first (faststart), a cut file still probes but its frames are gone."""
    whole = tmp_path / "whole.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=20",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(MediaError, match="truncated or corrupt video"):
        read(cut)


def test_a_scanned_video_joins_the_persons_of_photos_and_gets_its_genre(tmp_path):
    from conftest import export_json, run_cli

    tree = tmp_path / "tree"
    (tree / "photos").mkdir(parents=True)
    powell = sorted((FACES / "Colin_Powell").glob("*.jpg"))
    for photo in powell[6:12]:
        shutil.copy(photo, tree / "photos" / photo.name)
    ridge = sorted((FACES / "Tom_Ridge").glob("*.jpg"))
    slideshow(tmp_path / "frames", powell[:6] + ridge[:6], tree / "clip.mp4", audio=BLUES)
    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    files = {f["path"]: f for f in export_json(data_dir)["files"]}
    video = files["clip.mp4"]
    assert video["status"] == "done", video["error"]
    assert {"People", "Blues"} <= set(video["tags"])
    powell_persons = {face["person"] for name, f in files.items() if name.startswith("photos/") for face in f["faces"]}
    assert len(powell_persons) == 1 and None not in powell_persons
    assert powell_persons <= {face["person"] for face in video["faces"]}
    assert 2 <= len(video["faces"]) <= 3


def two_scenes(out: Path, photos: list[Path], seconds: int = 3) -> Path:
    """Real photos one after the other, seconds each, 320×240 at 10 fps (H.264)."""
    inputs = [arg for photo in photos for arg in ("-loop", "1", "-t", str(seconds), "-i", str(photo))]
    scaled = "".join(f"[{i}]scale=320:240,setsar=1,fps=10[v{i}];" for i in range(len(photos)))
    joined = "".join(f"[v{i}]" for i in range(len(photos)))
    ffmpeg(*inputs, "-filter_complex", f"{scaled}{joined}concat=n={len(photos)}:v=1[v]",
           "-map", "[v]", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    return out


CASTLE = SHARED / "data" / "images" / "n02980441_castle.JPEG"


def test_a_frame_is_taken_where_the_scene_changes(tmp_path: Path) -> None:
    video = two_scenes(tmp_path / "cut.mp4", [CASTLE, PHOTO])
    assert [round(at, 1) for at in scene_changes(video, 0.1, time.monotonic() + 30, 30)] == [3.0]

    _, spread = read_video(video, 4, 1.0, 320, 60)
    _, with_scenes = read_video(video, 4, 1.0, 320, 60, scene_threshold=0.1, max_scene_frames=2)

    assert [round(f.time, 2) for f in spread] == [0.75, 2.25, 3.75, 5.25]
    times = [round(f.time, 2) for f in with_scenes]
    assert len(times) == 4 and 3.0 in times
    at_cut = with_scenes[times.index(3.0)].pixels.astype(float)
    snake, castle = spread[-1].pixels.astype(float), spread[0].pixels.astype(float)
    assert np.abs(at_cut - snake).mean() < 5 < np.abs(at_cut - castle).mean()  # the new scene


def test_scene_frames_are_bounded_and_merged_with_the_spread_ones(tmp_path: Path) -> None:
    # Cuts are looked for among key frames: x264 puts one at a cut 2.5 s or more after the last.
    photos = [CASTLE, PHOTO, *sorted((FACES / "Colin_Powell").glob("*.jpg"))[:1], CASTLE, PHOTO]
    video = two_scenes(tmp_path / "many.mp4", photos, seconds=3)
    moving = tmp_path / "moving.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=12", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-g", "50", str(moving))  # a key frame every 2 s, one scene
    assert scene_changes(moving, 0.1, time.monotonic() + 30, 30) == []
    cuts = scene_changes(video, 0.1, time.monotonic() + 30, 30)
    assert [round(cut, 1) for cut in cuts] == [3.0, 6.0, 9.0, 12.0]
    _, frames = read_video(video, 6, 1.0, 320, 60, scene_threshold=0.1, max_scene_frames=3)
    times = [frame.time for frame in frames]
    assert len(times) == 6 and times == sorted(times)
    assert sum(any(abs(at - cut) < 1e-3 for cut in cuts) for at in times) == 3
    assert merge_times([0.5, 1.5, 2.5, 3.5], [1.4, 3.0], 3, 2, 0.5) == [0.5, 1.4, 3.0]
    assert merge_times([0.5, 1.5], [], 4, 2, 0.5) == [0.5, 1.5]


def test_positions_are_read_from_iso6709_tags(tmp_path: Path) -> None:
    assert parse_iso6709("+48.8566+002.3522/") == (48.8566, 2.3522)
    assert parse_iso6709("-33.8688+151.2093+012.000/") == (-33.8688, 151.2093)
    assert parse_iso6709("+35.6895+139.6917") == (35.6895, 139.6917)
    for bad in ("", "Paris", "+91.0+002.0/", "+48.8+181.0/", "+00.0000+000.0000/"):
        assert parse_iso6709(bad) is None, bad
    apple = tmp_path / "apple.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5:duration=2", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-movflags", "use_metadata_tags",
           "-metadata", "com.apple.quicktime.location.ISO6709=-33.8688+151.2093+012.000/", str(apple))
    assert probe_video(apple, 30).location == (-33.8688, 151.2093)
    assert probe_video(two_scenes(tmp_path / "none.mp4", [PHOTO], 1), 30).location is None


def test_a_scanned_video_with_a_position_gets_its_place(tmp_path: Path) -> None:
    from conftest import export_json, run_cli

    tree = tmp_path / "tree"
    tree.mkdir()
    plain = two_scenes(tmp_path / "plain.mp4", [CASTLE], seconds=2)
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata", "location=+48.8566+002.3522/",
           str(tree / "paris.mp4"))
    shutil.copy(plain, tree / "nowhere.mp4")
    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    files = {f["path"]: f for f in export_json(data_dir)["files"]}
    assert files["paris.mp4"]["status"] == "done", files["paris.mp4"]["error"]
    assert {"Paris", "France"} <= set(files["paris.mp4"]["tags"])
    assert "France" not in files["nowhere.mp4"]["tags"]
