"""Face embedder speed: dlib's own CPU code against the ONNX port run by onnxruntime.

Makes aligned chips from LFW photos of the shared face set (dlib's HOG detector, 5-point
landmarks, ``get_face_chip(size=150, padding=0.25)``), converts dlib's ``.dat`` to ONNX,
then times every engine on the same chips and prints milliseconds per face (wall clock and
CPU time: CPU above wall means more than one core was busy) and the speed-up over dlib.

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

import dlib
import face_recognition_models
import numpy as np
import onnxruntime
from PIL import Image

from ex_app.models.dlib_onnx import INPUT_NAME, chips_to_batch, convert_dlib_face_embedder

DLIB_MODELS = Path(face_recognition_models.__file__).parent / "models"
EMBEDDER_DAT = DLIB_MODELS / "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_DAT = DLIB_MODELS / "shape_predictor_5_face_landmarks.dat"
FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def make_chips(faces_dir: Path, count: int) -> list[np.ndarray]:
    """Up to ``count`` chips, one per LFW identity, in name order."""
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(LANDMARKS_DAT))
    with open(faces_dir / "labels.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["path"])
    seen: set[str] = set()
    chips: list[np.ndarray] = []
    for row in rows:
        if len(chips) == count:
            break
        if not Path(row["path"]).name.startswith("lfw_") or row["identity"] in seen:
            continue
        seen.add(row["identity"])
        image = np.asarray(Image.open(faces_dir / row["path"]).convert("RGB"))
        boxes = detector(image, 1)
        if len(boxes) == 1:
            chips.append(
                dlib.get_face_chip(image, landmarks(image, boxes[0]), size=150, padding=0.25)
            )
    return chips


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

    chips = make_chips(args.faces_dir, args.faces)
    faces = len(chips)
    batch = chips_to_batch(chips)
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

        reference = np.array([np.array(embedder.compute_face_descriptor(chip)) for chip in chips])
        difference = float(np.abs(in_batches(one_thread, batch, 8) - reference).max())

        engines: list[tuple[str, Callable[[], object]]] = [
            ("dlib, one chip a call", lambda: [embedder.compute_face_descriptor(c) for c in chips]),
            ("dlib, one list of all chips", lambda: embedder.compute_face_descriptor(chips)),
            ("onnxruntime 1 thread, batch 1", lambda: in_batches(one_thread, batch, 1)),
            ("onnxruntime 1 thread, batch 8", lambda: in_batches(one_thread, batch, 8)),
            ("onnxruntime 1 thread, batch 8, BASIC", lambda: in_batches(one_basic, batch, 8)),
            ("onnxruntime 2 threads, batch 8", lambda: in_batches(two_threads, batch, 8)),
        ]
        timings = [(name, *per_face(run, faces, args.repeat)) for name, run in engines]

    print(f"{faces} LFW chips, onnxruntime {onnxruntime.__version__}, {args.repeat} runs each")
    print(f"ONNX converted in {converted_in:.2f} s, sha256 {digest}")
    print(f"max |onnx - dlib| over {faces}×128 values: {difference:.3g}")
    print("dlib: compute_face_descriptor; BASIC: ORT_ENABLE_BASIC, else ORT_ENABLE_ALL")
    dlib_wall = timings[0][1]
    print(f"{'engine':<40} {'ms/face':>8} {'cpu ms':>8} {'× dlib':>7}")
    for name, wall, cpu in timings:
        print(f"{name:<40} {wall:8.2f} {cpu:8.2f} {dlib_wall / wall:7.1f}")


if __name__ == "__main__":
    main()
