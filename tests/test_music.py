"""Music genres on real clips through FFmpeg and the real musicnn models, and genres.yml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest

from ex_app.analyzers.music import (
    HOP,
    MUSICNN_LABEL_IDS,
    N_FFT,
    N_MELS,
    PATCH_FRAMES,
    SAMPLE_RATE,
    MusicnnModel,
    MusicTagger,
    load_musicnn_tags,
    log_mel_patches,
    patch_starts,
)
from ex_app.config import GENRES_PATH
from ex_app.media.audio import decode_audio
from ex_app.media.errors import MediaError
from ex_app.models.runtime import open_session
from ex_app.tagging.rules import TagRules

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models"
MUSIC = SHARED / "data" / "music"
BLUES = MUSIC / "TRWJAZW128F42760DD_test.mp3"  # blues, per musicnn's authors
ELECTRONIC = MUSIC / "joram-moments_of_clarity-08-solipsism-59-88.mp3"  # Jamendo, electronic
MAX_PATCHES = 12  # more than a 30-s clip has (10), far fewer than 5 minutes (100)
DECODE = {"rate": SAMPLE_RATE, "max_seconds": 1200, "timeout": 120}

PHP_GENRES = {
    "Rock", "Rap", "Latin", "Jazz", "Electronic", "Pop", "Metal", "RnB", "Country", "Reggae",
    "Blues", "Folk", "Punk", "World", "New Age",
}  # fmt: skip
NO_MUSICNN_TAG = {"Latin", "Reggae"}  # neither checkpoint has a tag for them

# Re-encodings made by FFmpeg in the tests: suffix → codec options.
FORMATS = {
    ".m4a": ["-c:a", "aac", "-b:a", "128k"],
    ".ogg": ["-c:a", "libopus", "-b:a", "96k"],
    ".opus": ["-c:a", "libopus", "-b:a", "64k"],
    ".flac": ["-c:a", "flac"],
    ".wav": ["-c:a", "pcm_s16le"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


class RecordingSession:
    """A real session that remembers the batch shapes it was given."""

    def __init__(self, path: Path):
        self._session = open_session(path)
        self.input_names = self._session.input_names
        self.output_names = self._session.output_names
        self.shapes: list[tuple[int, ...]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.shapes += [value.shape for value in feeds.values()]
        return self._session.run(feeds)


@pytest.fixture(scope="module")
def tagger() -> MusicTagger:
    models = [
        MusicnnModel(name, RecordingSession(MODELS / f"musicnn_{name}.onnx"),
                     load_musicnn_tags(MODELS / f"musicnn_{name}.labels.txt"))
        for name in ("msd", "mtt")
    ]  # fmt: skip
    return MusicTagger(models, max_patches=MAX_PATCHES)


@pytest.fixture(scope="module")
def genres() -> TagRules:
    return TagRules.load(GENRES_PATH, MUSICNN_LABEL_IDS)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(clip, suffix) → the clip as it is and re-encoded by FFmpeg in each format."""
    folder = tmp_path_factory.mktemp("encoded")
    files = {}
    for clip in (BLUES, ELECTRONIC):
        files[clip.name, ".mp3"] = clip
        for suffix, options in FORMATS.items():
            target = folder / f"{clip.stem}{suffix}"
            ffmpeg("-i", str(clip), *options, str(target))
            files[clip.name, suffix] = target
    return files


def genre_tags(path: Path, tagger: MusicTagger, genres: TagRules) -> list[str]:
    labels = tagger.tag(decode_audio(path, **DECODE).samples)
    return genres.tags_for((label.id, label.score) for label in labels)


# --- Genres on real clips --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp3", *FORMATS])
@pytest.mark.parametrize(("clip", "genre", "other"), [(BLUES, "Blues", "Electronic"),
                                                      (ELECTRONIC, "Electronic", "Blues")])
def test_clip_gets_its_genre_in_every_format(tagger, genres, encoded, clip, genre, other, suffix):
    tags = genre_tags(encoded[clip.name, suffix], tagger, genres)
    assert tags[:1] == [genre]
    assert other not in tags


def test_blues_clip_gets_blues_alone(tagger, genres):
    assert genre_tags(BLUES, tagger, genres) == ["Blues"]


def test_labels_carry_both_checkpoints_scores(tagger):
    labels = tagger.tag(decode_audio(BLUES, **DECODE).samples)
    assert len(labels) == 100 and len({label.id for label in labels}) == 100
    scores = [label.score for label in labels]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= label.score <= 1 for label in labels)
    best_msd = next(label for label in labels if label.id.startswith("msd:"))
    assert (best_msd.id, best_msd.name) == ("msd:blues", "blues")
    assert best_msd.score > 0.3


def test_long_track_is_judged_on_a_bounded_spread_of_patches(tmp_path, tagger, genres):
    long_track = tmp_path / "ten_times.mp3"
    ffmpeg("-stream_loop", "9", "-i", str(BLUES), "-c:a", "libmp3lame", "-b:a", "64k",
           str(long_track))  # fmt: skip
    audio = decode_audio(long_track, **DECODE)
    assert 295 < audio.seconds < 305

    starts = patch_starts(len(audio.samples), MAX_PATCHES)
    whole_patches = (1 + len(audio.samples) // HOP) // PATCH_FRAMES
    assert whole_patches > 90 and len(starts) == MAX_PATCHES
    assert starts[0] == 0 and starts[-1] == (whole_patches - 1) * PATCH_FRAMES
    gaps = np.diff(starts)  # spread evenly over the track, not bunched at its start
    assert gaps.min() >= 8 * PATCH_FRAMES and gaps.max() - gaps.min() <= PATCH_FRAMES

    session = tagger.models[0].session
    session.shapes.clear()
    labels = tagger.tag(audio.samples)
    assert session.shapes == [(1, PATCH_FRAMES, N_MELS)] * MAX_PATCHES  # one patch per run
    assert genres.tags_for((label.id, label.score) for label in labels)[:1] == ["Blues"]


def test_decoding_stops_at_max_seconds(tmp_path):
    audio = decode_audio(BLUES, rate=SAMPLE_RATE, max_seconds=5, timeout=60)
    assert len(audio.samples) == 5 * SAMPLE_RATE
    assert audio.duration == pytest.approx(30.04, abs=0.05)  # what the file declares


def test_short_clip_fills_one_patch_with_its_own_frames():
    samples = decode_audio(BLUES, rate=SAMPLE_RATE, max_seconds=1, timeout=60).samples
    (start,) = patch_starts(len(samples), MAX_PATCHES)
    patch = log_mel_patches(samples, [start])
    frames = 1 + len(samples) // HOP
    assert patch.shape == (1, PATCH_FRAMES, N_MELS) and frames < PATCH_FRAMES
    np.testing.assert_array_equal(patch[0, frames : 2 * frames], patch[0, :frames])


# --- Features --------------------------------------------------------------------------------


def test_patches_equal_musicnn_features_of_the_whole_song():
    samples = decode_audio(ELECTRONIC, **DECODE).samples
    mel = librosa.feature.melspectrogram(
        y=samples, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS
    ).T
    whole = np.log10(np.float32(10_000) * mel + np.float32(1))
    starts = patch_starts(len(samples), max_patches=100)
    assert len(starts) == len(whole) // PATCH_FRAMES == 9  # consecutive, none overlapping
    patches = log_mel_patches(samples, starts)
    assert patches.dtype == np.float32
    expected = whole[: len(starts) * PATCH_FRAMES].reshape(len(starts), PATCH_FRAMES, N_MELS)
    np.testing.assert_allclose(patches, expected, rtol=1e-4, atol=1e-4)


def test_decoded_audio_is_mono_16k_float_in_range():
    audio = decode_audio(BLUES, **DECODE)  # stereo 22.05 kHz MP3
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.rate == SAMPLE_RATE and audio.codec == "mp3"
    assert audio.seconds == pytest.approx(29.95, abs=0.1)
    assert 0.5 < np.abs(audio.samples).max() < 2  # full scale is 1; MP3 peaks may pass it


def test_a_file_name_that_looks_like_a_protocol_is_read_as_a_file(tmp_path):
    odd = tmp_path / "http:blues.mp3"
    shutil.copy(BLUES, odd)
    assert decode_audio(odd, **DECODE).seconds == pytest.approx(29.95, abs=0.1)


# --- Bad files -------------------------------------------------------------------------------


def bad_file(kind: str, folder: Path, encoded: dict[tuple[str, str], Path]) -> Path:
    """A damaged or non-audio file of the given kind, made in folder."""
    target = folder / f"{kind}.mp3"
    if kind.startswith("truncated"):
        source = encoded[BLUES.name, "." + kind.split("-")[1]]
        target = folder / f"half{source.suffix}"
        data = source.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "random-bytes":
        target.write_bytes(np.random.default_rng(7).bytes(50_000))
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "photo":
        shutil.copy(next((SHARED / "data" / "images").glob("*.JPEG")), target)
    return target  # "missing": never written


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated-mp3", r"^truncated or corrupt audio: decoded 1\d\.\d s of the 30\.0 s"),
        ("truncated-flac", r"^truncated or corrupt audio: decoded 1\d\.\d s of the 29\.9 s"),
        ("truncated-m4a", r"^not a readable audio file \(.*\)$"),  # its index sits at the end
        ("random-bytes", r"^not a readable audio file \(Invalid argument\)$"),
        ("empty", r"^empty file \(0 bytes\)$"),
        ("photo", r"^no audio stream in the file$"),
        ("missing", r"^cannot read the file: No such file or directory$"),
    ],
)
def test_bad_audio_raises_media_error_saying_why(tmp_path, encoded, kind, message):
    path = bad_file(kind, tmp_path, encoded)
    with pytest.raises(MediaError, match=message) as raised:
        decode_audio(path, **DECODE)
    assert str(tmp_path) not in str(raised.value)  # about the file, not where it lies


# --- genres.yml ------------------------------------------------------------------------------


def musicnn_ids() -> dict[str, str]:
    """Label id → tag name for every output of both checkpoints."""
    return {
        f"{name}:{tag}": tag
        for name in ("msd", "mtt")
        for tag in load_musicnn_tags(MODELS / f"musicnn_{name}.labels.txt")
    }


def test_genre_rules_cover_exactly_the_musicnn_tags(genres):
    ids = musicnn_ids()
    assert len(ids) == 100
    assert set(genres.labels) == set(ids)
    assert {i: rule.name for i, rule in genres.labels.items()} == ids


def test_genre_vocabulary_has_the_php_genres_each_reachable(genres):
    assert PHP_GENRES <= set(genres.tags)
    given = {tag for rule in genres.labels.values() for tag in rule.tags}
    assert set(genres.tags) - given == NO_MUSICNN_TAG
    for genre in given:
        thresholds = [r.threshold for r in genres.labels.values() if genre in r.tags]
        assert all(0.15 <= t <= 0.5 for t in thresholds), genre


def test_genres_need_their_threshold(genres):
    assert genres.tags_for([("msd:blues", 0.19)]) == []
    assert genres.tags_for([("msd:blues", 0.2)]) == ["Blues"]
    assert genres.tags_for([("mtt:new age", 0.31), ("mtt:sitar", 0.29)]) == ["New Age"]
    assert genres.tags_for([("msd:Hip-Hop", 0.5), ("msd:80s", 0.9)]) == ["Rap"]
