"""Action recognition: MoViNet's input pipeline on real video frames, through a TFLite model.

The MoViNet weights cannot be downloaded here, so the model is a small TFLite file with the
same streaming interface (tests/tflite_stream_model.py); the label list is the real upstream
kinetics_600_labels.txt, whose hash the manifest carries.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_model_store import ModelFileHandler, ServedFiles
from tflite_stream_model import write_stream_model

from ex_app.analyzers.actions import (
    KINETICS_LABEL_IDS,
    ActionRecognizer,
    load_kinetics_labels,
    prepare_frame,
)
from ex_app.config import ACTIONS_PATH, ActionsSettings, Settings
from ex_app.media.kinds import MediaKind
from ex_app.media.video import clip_starts, probe_video, read_clip
from ex_app.models.manifest import load_manifest
from ex_app.models.quantization import softmax
from ex_app.models.store import ModelStore, file_sha256
from ex_app.tagging.rules import TagRules
from ex_app.analyzers.pipeline import Pipeline

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LABELS = Path(__file__).resolve().parent / "data" / "kinetics_600_labels.txt"
PHOTOS = [SHARED / "data" / "images" / name
          for name in ("n02980441_castle.JPEG", "n01728920_ringneck_snake.JPEG")]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """Two real photos, 3 s each, 320×240 (wider than MoViNet's square input), at 25 fps."""
    out = tmp_path_factory.mktemp("actions") / "two.mp4"
    inputs = [arg for photo in PHOTOS for arg in ("-loop", "1", "-t", "3", "-i", str(photo))]
    ffmpeg(*inputs, "-filter_complex",
           "[0]scale=320:240,setsar=1,fps=25[a];[1]scale=320:240,setsar=1,fps=25[b];"
           "[a][b]concat=n=2:v=1[v]", "-map", "[v]", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(out))
    return out


@pytest.fixture(scope="module")
def labels() -> list[str]:
    return load_kinetics_labels(LABELS)


def clip(video: Path, start: float, seconds: float = 2.0) -> list[np.ndarray]:
    info = probe_video(video, 30)
    return [frame.pixels for frame in read_clip(video, info, start, seconds, 5.0, 256, 30)]


def test_the_label_list_is_the_one_the_manifest_pins(labels):
    spec = load_manifest()["kinetics600_labels"]
    assert file_sha256(LABELS) == spec.sha256 and LABELS.stat().st_size == spec.size
    assert len(labels) == 600 and labels[0] == "abseiling" and labels[-1] == "zumba"


def test_clips_are_consecutive_frames_at_the_model_rate(video):
    info = probe_video(video, 30)
    frames = read_clip(video, info, 1.0, 2.0, 5.0, 256, 30)
    assert len(frames) == 10
    assert [round(f.time, 2) for f in frames] == [1.0 + i / 5 for i in range(10)]
    assert all(f.pixels.shape == (192, 256, 3) and f.pixels.dtype == np.uint8 for f in frames)
    assert clip_starts(info.duration, 3, 4.0) == [0.0, 1.0, 3.0]


def test_frames_are_fed_as_movinet_wants_them(tmp_path, video, labels):
    model = write_stream_model(tmp_path / "stream.tflite", 172, 172, 600)
    recognizer = ActionRecognizer(model.path, labels)
    frames = clip(video, 2.0)  # across the cut from the castle to the snake

    fed = recognizer.clip_inputs(frames)

    assert recognizer.streaming and recognizer.frames_per_call == 1
    assert (recognizer.height, recognizer.width) == (172, 172)
    assert len(fed) == len(frames) == 10
    for tensor in fed:
        assert tensor.shape == (1, 1, 172, 172, 3) and tensor.dtype == np.float32
        assert 0.0 <= tensor.min() and tensor.max() <= 1.0 and tensor.max() - tensor.min() > 0.5
    assert not np.array_equal(fed[0], fed[-1])  # the castle, then the snake


def test_the_centre_square_is_what_the_model_sees():
    photo = Image.open(PHOTOS[0]).convert("RGB").resize((240, 240))
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, :40] = frame[:, -40:] = (255, 0, 0)  # bars outside the centre 240×240
    frame[:, 40:-40] = np.asarray(photo)

    prepared = prepare_frame(frame, 172, 172)

    assert prepared.shape == (172, 172, 3) and prepared.dtype == np.float32
    alone = np.asarray(photo.resize((172, 172), Image.BILINEAR, reducing_gap=2.0)) / 255.0
    np.testing.assert_allclose(prepared, alone, atol=1e-6)  # the photo, no red bar


def test_states_carry_over_the_clip_and_scores_are_the_softmax(tmp_path, video, labels):
    model = write_stream_model(tmp_path / "stream.tflite", 172, 172, 600)
    recognizer = ActionRecognizer(model.path, labels, top_k=5)
    first, second = clip(video, 0.5), clip(video, 3.5)

    prepared = np.stack([t[0, 0] for t in recognizer.clip_inputs(first)])
    expected = softmax(model.expected_logits(prepared).astype(np.float64))
    np.testing.assert_allclose(recognizer.clip_probabilities(first), expected, atol=1e-5)
    only_last = softmax(model.expected_logits(prepared[-1:]).astype(np.float64))
    assert not np.allclose(expected, only_last, atol=1e-3)  # every frame counted, not the last

    found = recognizer.recognize([first, second])
    both = (recognizer.clip_probabilities(first) + recognizer.clip_probabilities(second)) / 2
    assert len(found) == 5
    assert [label.score for label in found] == sorted((label.score for label in found), reverse=True)
    assert all(0.0 <= label.score <= 1.0 for label in found)
    best = int(np.argmax(both))
    assert found[0].name == labels[best] and found[0].id == f"k600:{labels[best]}"
    assert found[0].score == pytest.approx(both[best], abs=1e-6)


def test_a_model_that_does_not_fit_its_labels_is_refused(tmp_path, labels):
    model = write_stream_model(tmp_path / "small.tflite", 172, 172, 10)
    with pytest.raises(ValueError, match="10 classes, the label file 600"):
        ActionRecognizer(model.path, labels)


def test_action_rules_name_real_kinetics_classes(labels):
    rules = TagRules.load(ACTIONS_PATH, KINETICS_LABEL_IDS)
    assert {label_id.removeprefix("k600:") for label_id in rules.labels} <= set(labels)
    assert all(rule.name == rule.label_id.removeprefix("k600:") for rule in rules.labels.values())
    assert rules.tags_for([("k600:playing guitar", 0.6)]) == ["Music"]
    assert rules.tags_for([("k600:swimming backstroke", 0.5)]) == ["Swimming", "Sport", "Water"]
    assert rules.tags_for([("k600:salsa dancing", 0.1)]) == []  # below its threshold
    assert rules.tags_for([("k600:yawning", 0.9)]) == []  # not listed: no tag


def served_store(tmp_path: Path, files: dict[str, Path]) -> ModelStore:
    """A model store whose manifest sends the named models to a local HTTP server."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ModelFileHandler)
    httpd.served = ServedFiles({f"/{p.name}": p.read_bytes() for p in files.values()})
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    manifest = load_manifest()
    for name, path in files.items():
        manifest[name] = manifest[name].model_copy(
            update={"sources": (manifest[name].sources[0].model_copy(
                update={"url": f"{base}/{path.name}"}),)}
        )
    return ModelStore(tmp_path / "models", manifest, mirror=SHARED / "models")


def test_the_pipeline_skips_actions_without_the_model_and_tags_them_with_it(
    tmp_path, video, labels, caplog
):
    settings = Settings(data_dir=tmp_path / "state", model_mirror=None, actions_enabled=True)
    assert Pipeline(settings.model_copy(update={"actions": ActionsSettings()}), ModelStore(
        tmp_path / "off", load_manifest())).enabled_analyzers(MediaKind.VIDEO) == ("video", "places")
    empty = ModelStore(tmp_path / "empty", load_manifest())
    with caplog.at_level(logging.INFO, logger="ex_app.analyzers.pipeline"):
        skipping = Pipeline(settings, empty)
        assert skipping.enabled_analyzers(MediaKind.VIDEO) == ("video", "places")
        assert skipping.enabled_analyzers(MediaKind.VIDEO) == ("video", "places")
    skipped = [r.getMessage() for r in caplog.records if "analyzer actions skipped" in r.getMessage()]
    assert len(skipped) == 1 and "movinet_a0_stream" in skipped[0]

    guitar = labels.index("playing guitar")
    model = write_stream_model(tmp_path / "movinet.tflite", 172, 172, 600, favour=guitar)
    store = served_store(tmp_path, {"movinet_a0_stream": model.path, "kinetics600_labels": LABELS})
    store.fetch("movinet_a0_stream")  # pinned on this first download
    store.fetch("kinetics600_labels")  # verified against the manifest's hash
    pipeline = Pipeline(settings, store)
    assert pipeline.enabled_analyzers(MediaKind.VIDEO) == ("video", "actions", "places")
    assert pipeline.model_version("actions").startswith(file_sha256(model.path)[:8])

    result = pipeline.analyze(video, ("actions",))

    assert result.tags == {"actions": ["Music"]}
    assert (result.width, result.height) == (320, 240) and not result.labels
