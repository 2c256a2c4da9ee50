"""Face embedder speed: dlib's own CPU code, our ONNX port of it, and SFace on each engine.

Makes aligned chips from LFW photos of the shared face set (dlib's HOG detector, 5-point
landmarks, ``get_face_chip(size=150, padding=0.25)``), converts dlib's ``.dat`` to ONNX,
then times every engine on the same chips and prints milliseconds per face (wall clock and
CPU time: CPU above wall means more than one core was busy) and the speed-up over dlib.
SFace gets the same photos aligned its way (YuNet's five points onto the ArcFace template)
and runs as published in OpenCV's dnn module (what the app does on CPUs), as our float32
graph (``ex_app.models.sface_onnx``) in OpenCV's dnn, and in onnxruntime, batched or not.

    .venv/bin/python bench/embedder_speed.py [--faces 32] [--repeat 5]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import dlib
import face_recognition_models
import numpy as np
import onnxruntime
from PIL import Image

from ex_app.analyzers.faces import FaceAnalyzer, align_sface
from ex_app.models.dlib_onnx import INPUT_NAME, chips_to_batch, convert_dlib_face_embedder
from ex_app.models.sface_onnx import convert_sface

DLIB_MODELS = Path(face_recognition_models.__file__).parent / "models"
EMBEDDER_DAT = DLIB_MODELS / "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_DAT = DLIB_MODELS / "shape_predictor_5_face_landmarks.dat"
FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
SFACE = SHARED_MODELS / "face_recognition_sface_2021dec_int8bq.onnx"


def make_chips(faces_dir: Path, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to ``count`` dlib chips and SFace faces of the same photos, one per LFW identity,
    in name order."""
    yunet = FaceAnalyzer(SHARED_MODELS / "face_detection_yunet.onnx", embedder=None)
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(LANDMARKS_DAT))
    with open(faces_dir / "labels.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["path"])
    seen: set[str] = set()
    chips: list[np.ndarray] = []
    aligned: list[np.ndarray] = []
    for row in rows:
        if len(chips) == count:
            break
        if not Path(row["path"]).name.startswith("lfw_") or row["identity"] in seen:
            continue
        seen.add(row["identity"])
        image = np.asarray(Image.open(faces_dir / row["path"]).convert("RGB"))
        boxes, found = detector(image, 1), yunet.detect(image)
        if len(boxes) == 1 and len(found) == 1:
            chips.append(
                dlib.get_face_chip(image, landmarks(image, boxes[0]), size=150, padding=0.25)
            )
            aligned.append(align_sface(image, found[0].landmarks))
    return chips, aligned


def sface_batch(aligned: list[np.ndarray]) -> np.ndarray:
    return np.stack(aligned).transpose(0, 3, 1, 2).astype(np.float32)


def opencv_runs(net, batch: np.ndarray, size: int) -> np.ndarray:
    parts = []
    for i in range(0, len(batch), size):
        net.setInput(batch[i : i + size], "data")
        parts.append(net.forward().reshape(len(batch[i : i + size]), -1))
    return np.concatenate(parts)


def per_face(run: Callable[[], object], faces: int, repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds per face over ``repeat`` runs, after one warm-up."""
    run()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return 1000 * statistics.median(walls) / faces, 1000 * statistics.median(cpus) / faces


def onnx_session(
    path: Path, threads: int, level: onnxruntime.GraphOptimizationLevel
) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def in_batches(session: onnxruntime.InferenceSession, batch: np.ndarray, size: int) -> np.ndarray:
    parts = [
        session.run(None, {INPUT_NAME: batch[i : i + size]})[0] for i in range(0, len(batch), size)
    ]
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=32, help="chips to embed (default 32)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per engine (default 5)")
    parser.add_argument("--faces-dir", type=Path, default=FACES_DIR)
    args = parser.parse_args()

    chips, aligned = make_chips(args.faces_dir, args.faces)
    faces = len(chips)
    batch = chips_to_batch(chips)
    faces_112 = sface_batch(aligned)
    cv2.setNumThreads(1)
    sface_published = cv2.dnn.readNet(str(SFACE))
    embedder = dlib.face_recognition_model_v1(str(EMBEDDER_DAT))
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "dlib_face_recognition_resnet_model_v1.onnx"
        started = time.perf_counter()
        convert_dlib_face_embedder(EMBEDDER_DAT, onnx_path)
        converted_in = time.perf_counter() - started
        digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        all_opt = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        basic_opt = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        one_thread = onnx_session(onnx_path, 1, all_opt)
        two_threads = onnx_session(onnx_path, 2, all_opt)
        one_basic = onnx_session(onnx_path, 1, basic_opt)
        sface_path = Path(folder) / "sface_float32.onnx"
        convert_sface(SFACE, sface_path)
        sface_float32 = cv2.dnn.readNet(str(sface_path))
        sface_onnx = onnx_session(sface_path, 1, all_opt)

        def sface_ort(size: int) -> np.ndarray:
            parts = [sface_onnx.run(None, {"data": faces_112[i : i + size]})[0]
                     for i in range(0, len(faces_112), size)]
            return np.concatenate(parts)

        reference = np.array([np.array(embedder.compute_face_descriptor(chip)) for chip in chips])
        difference = float(np.abs(in_batches(one_thread, batch, 8) - reference).max())

        engines: list[tuple[str, Callable[[], object]]] = [
            ("dlib, one chip a call", lambda: [embedder.compute_face_descriptor(c) for c in chips]),
            ("dlib, one list of all chips", lambda: embedder.compute_face_descriptor(chips)),
            ("onnxruntime 1 thread, batch 1", lambda: in_batches(one_thread, batch, 1)),
            ("onnxruntime 1 thread, batch 8", lambda: in_batches(one_thread, batch, 8)),
            ("onnxruntime 1 thread, batch 8, BASIC", lambda: in_batches(one_basic, batch, 8)),
            ("onnxruntime 2 threads, batch 8", lambda: in_batches(two_threads, batch, 8)),
            ("SFace, OpenCV dnn, published file, batch 1 (app)",
             lambda: opencv_runs(sface_published, faces_112, 1)),
            ("SFace, OpenCV dnn, published file, batch 8",
             lambda: opencv_runs(sface_published, faces_112, 8)),
            ("SFace, OpenCV dnn, float32 graph, batch 1",
             lambda: opencv_runs(sface_float32, faces_112, 1)),
            ("SFace, onnxruntime float32, batch 1", lambda: sface_ort(1)),
            ("SFace, onnxruntime float32, batch 8", lambda: sface_ort(8)),
        ]
        timings = [(name, *per_face(run, faces, args.repeat)) for name, run in engines]

    print(f"{faces} LFW chips, onnxruntime {onnxruntime.__version__}, {args.repeat} runs each")
    print(f"ONNX converted in {converted_in:.2f} s, sha256 {digest}")
    print(f"max |onnx - dlib| over {faces}×128 values: {difference:.3g}")
    print("dlib: compute_face_descriptor; BASIC: ORT_ENABLE_BASIC, else ORT_ENABLE_ALL")
    dlib_wall = timings[0][1]
    print(f"{'engine (1 thread unless said)':<50} {'ms/face':>8} {'cpu ms':>8} {'× dlib':>7}")
    for name, wall, cpu in timings:
        print(f"{name:<50} {wall:8.2f} {cpu:8.2f} {dlib_wall / wall:7.1f}")


if __name__ == "__main__":
    main()
