"""Music tags of a song: musicnn (MSD and MTT checkpoints) over log-mel patches of its audio.

The tagger is a pure function of decoded mono 16 kHz samples and already opened sessions.
Features follow musicnn exactly: mel spectrogram (n_fft 512, hop 256, 96 bands, librosa's
defaults otherwise), log10(10000 · mel + 1) in float32, cut into consecutive non-overlapping
187-frame patches (3 s). A long song is judged on at most ``max_patches`` of those patches,
spread evenly over it; scores are each tag's sigmoid output averaged over the patches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np

from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.analyzers.results import Label
from ex_app.config import GENRES_PATH
from ex_app.media.audio import decode_audio
from ex_app.models.runtime import InferenceSession
from ex_app.tagging.rules import LabelIdFormat, TagRules

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187
CHECKPOINTS = ("msd", "mtt")  # both: MSD knows blues, MTT new age, world, classical

# Label ids name the checkpoint and its tag, "msd:blues", "mtt:new age": both have "rock".
MUSICNN_LABEL_IDS = LabelIdFormat(
    re.compile(r"(msd|mtt):\S.*"), "a musicnn tag with its checkpoint, like msd:blues")


@dataclass(frozen=True)
class MusicnnModel:
    """One musicnn checkpoint: its session and its tags in output order."""

    dataset: str  # "msd" or "mtt", the prefix of its label ids
    session: InferenceSession
    tags: list[str]


def load_musicnn_tags(path: Path) -> list[str]:
    """A checkpoint's tags, one a line, in output order (musicnn_msd.labels.txt)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def patch_starts(samples: int, max_patches: int) -> list[int]:
    """First frame of each patch analysed: all whole patches, or max_patches spread evenly.

    A song shorter than one patch still gives one (its features are repeated to fill it).
    """
    frames = 1 + samples // HOP  # librosa's centred frame count
    whole = max(1, frames // PATCH_FRAMES)
    chosen = range(whole)
    if whole > max_patches:
        chosen = np.linspace(0, whole - 1, max_patches).round().astype(int)
    return [int(index) * PATCH_FRAMES for index in chosen]


def log_mel_patches(samples: np.ndarray, starts: list[int]) -> np.ndarray:
    """patches × 187 × 96 float32 musicnn features for the patches starting at these frames.

    Each patch's frames equal those of the whole song's centred spectrogram; only the audio
    under the chosen patches is transformed.
    """
    padded = np.pad(np.asarray(samples, dtype=np.float32), N_FFT // 2)  # librosa's centring
    length = (PATCH_FRAMES - 1) * HOP + N_FFT
    segments = np.zeros((len(starts), length), dtype=np.float32)
    for row, start in enumerate(starts):
        piece = padded[start * HOP : start * HOP + length]
        segments[row, : len(piece)] = piece
    mel = librosa.feature.melspectrogram(
        y=segments, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, center=False)
    features = np.log10(np.float32(10_000) * mel.astype(np.float32) + np.float32(1))
    return _fill_short_song(features.transpose(0, 2, 1), len(samples))


def _fill_short_song(patches: np.ndarray, samples: int) -> np.ndarray:
    """A song shorter than one patch: its own frames repeated over the patch."""
    frames = 1 + samples // HOP
    if frames >= PATCH_FRAMES:
        return patches
    return np.resize(patches[:, :frames], (len(patches), PATCH_FRAMES, N_MELS)).astype(np.float32)


class MusicTagger:
    """Every musicnn tag of a song with its score, best first."""

    def __init__(self, models: list[MusicnnModel], max_patches: int = 16):
        self.models, self.max_patches = models, max_patches

    def tag(self, samples: np.ndarray) -> list[Label]:
        """Labels (id "msd:blues", name "blues", mean sigmoid score) of mono 16 kHz samples."""
        features = log_mel_patches(samples, patch_starts(len(samples), self.max_patches))
        labels = []
        for model in self.models:
            # One patch per run: a batch of 16 patches peaks at ~530 MB of activations and is
            # no faster (bench/music_speed.py); one at a time stays near 110 MB.
            name = model.session.input_names[0]
            scores = np.concatenate(
                [model.session.run({name: features[i : i + 1]})[0] for i in range(len(features))])
            mean = np.asarray(scores, dtype=np.float32).mean(axis=0)
            labels += [Label(f"{model.dataset}:{tag}", tag, float(score))
                       for tag, score in zip(model.tags, mean, strict=True)]
        return sorted(labels, key=lambda label: -label.score)


def tagger(pipeline: Pipeline) -> MusicTagger:
    """The pipeline's musicnn tagger (shared with the video analyzer)."""
    models = [
        MusicnnModel(dataset, pipeline.session(f"musicnn_{dataset}"),
                     load_musicnn_tags(pipeline.models.path(f"musicnn_{dataset}_labels")))
        for dataset in CHECKPOINTS]
    return MusicTagger(models, max_patches=pipeline.settings.music.max_patches)


def genre_rules(pipeline: Pipeline) -> TagRules:
    """genres.yml: musicnn tags to genre tags."""
    return TagRules.load(GENRES_PATH, MUSICNN_LABEL_IDS)


def song_labels(media: Media) -> list[Label]:
    """Every musicnn label of a song's or a video's sound, best first (raises MediaError)."""
    s = media.settings.music
    audio = decode_audio(media.path, SAMPLE_RATE, s.max_seconds, s.decode_timeout_seconds)
    return media.pipeline.part(tagger).tag(audio.samples)


def build(pipeline: Pipeline) -> Callable:
    rules = pipeline.part(genre_rules)

    def analyze(media: Media, result) -> list[str]:
        found = media.once(song_labels)
        result.labels = found[: media.settings.music.top_k]
        return rules.tags_for((label.id, label.score) for label in found)

    return analyze
