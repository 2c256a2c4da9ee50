"""Face pipeline speed against the peers' pipelines, on the same photos, in one run.

Pipelines, each in its own process so that its peak memory is its own:

- ours: the face analyzer exactly as the production pipeline builds it
  (``ex_app.analyzers.faces.face_analyzer``), so a change of its models shows up here; once with SFace
  (the default) and once with dlib's embedder (the default before SFace), each with the
  CPU time its embedder takes per face.
- facerecognition (Nextcloud app, matiasdelellis/facerecognition, through the pdlib PHP
  extension): each image is resized to an area first (up or down, as its TempImage does),
  then dlib's detector runs without upsampling, then per face dlib's 5-point landmarks and
  ResNet descriptor. Configurations: its fast pass (HOG model on a 640×480 area), its HOG
  model at the analysis area its Docker setup configures (1024×1024) and, with ``--cnn``,
  its default model (dlib's CNN detector at 1024×1024; about 5 s per image here). Its
  ``min_image_size`` default of 512 px would skip every small crop, so it is not applied.
  Loading and saving the temporary PNG files pdlib reads is not timed: the peer is timed on
  its models alone.
- face-api (the PHP Recognize app, nextcloud/recognize ``src/classifier_faces.js`` in its
  pure-JS mode): @vladmandic/face-api's SSD MobileNet v1 + 68-point landmarks + recognition
  net on TensorFlow.js's WASM backend, in Node (``bench/faceapi``, installed from npm with
  ``npm ci`` when missing).

Every pipeline gets the same decoded RGB pixels; decoding is not timed. The first image is
run once before timing. Prints images/s, faces/s, faces found, CPU time over wall time (one
thread each shows as about 1.0) and peak RSS per pipeline, our speed ratio to each, and the
faces each finds against the labels: single-face photos with a face found (recall; the LFW
crops were kept only where YuNet found one face, so their recall favours ours), extra faces
on single-face photos, faces in the group photos and false faces on the no-face photos.

    .venv/bin/python bench/faces_speed.py [--images 150] [--threads 1] [--cnn]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from peak_memory import run_measured

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FACES = PROJECT_ROOT.parent / "shared" / "data" / "faces"
FACEAPI_DIR = Path(__file__).resolve().parent / "faceapi"

# facerecognition's image areas (pixels²): SettingsService::DEFAULT_FAST_PASS_IMAGE_AREA, and
# the analysis_image_area its docker/ setup configures (the setting has no default in code).
FAST_PASS_AREA = 640 * 480
ANALYSIS_AREA = 1024 * 1024

# Each peer pipeline's name: facerecognition's (detector, image area), run in Python.
PYTHON_PEERS = {
    "facerecognition HOG, fast pass": ("hog", FAST_PASS_AREA),
    "facerecognition HOG model": ("hog", ANALYSIS_AREA),
    "facerecognition CNN model (default)": ("cnn", ANALYSIS_AREA),
}
FACEAPI = "face-api (PHP Recognize)"
# Our pipeline with each embedder: SFace (the default) and dlib (the default before it).
OURS = {"ours": "sface", "ours with dlib (before)": "dlib"}

LFW, OTHER_SINGLE, GROUP, NOFACE = "lfw", "single", "group", "noface"
NON_LFW_SOURCES = ("orl", "yale", "dlib", "faceapi")  # file name prefixes of labelled crops


@dataclass(frozen=True)
class Photo:
    path: Path
    kind: str  # LFW, OTHER_SINGLE (one labelled face), GROUP or NOFACE


@dataclass
class Result:
    """What one pipeline's process reported, with its peak memory."""

    faces: list[int]  # per photo, in manifest order
    seconds: float  # wall time of the analysis, summed over photos
    cpu_seconds: float  # CPU time of the analysis, summed over photos
    peak_rss_mb: float
    about: str
    embed_ms_per_face: float | None = None  # our pipelines: the embedder's CPU time per face


def evenly(items: list, count: int) -> list:
    """`count` items spread evenly over the list."""
    if count >= len(items):
        return list(items)
    return [items[math.floor(i * len(items) / count)] for i in range(count)]


def choose_photos(count: int) -> list[Photo]:
    """All group and no-face photos; the rest half LFW crops, half other labelled crops."""
    with open(FACES / "labels.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["path"])
    group = [Photo(FACES / r["path"], GROUP) for r in rows if r["identity"] == "__group__"]
    noface = [Photo(FACES / r["path"], NOFACE) for r in rows if r["identity"] == "__noface__"]
    singles = [r["path"] for r in rows if not r["identity"].startswith("__")]
    source = {path: Path(path).name.split("_")[0] for path in singles}
    remaining = count - len(group) - len(noface)
    least = len(group) + len(noface) + 2 * len(NON_LFW_SOURCES)
    if count < least:
        raise SystemExit(f"--images must be at least {least}")
    others: list[Photo] = []
    per_source = (remaining // 2) // len(NON_LFW_SOURCES)
    for name in NON_LFW_SOURCES:
        paths = [p for p in singles if source[p] == name]
        others += [Photo(FACES / p, OTHER_SINGLE) for p in evenly(paths, per_source)]
    lfw_paths = [p for p in singles if source[p] == "lfw"]
    lfw = [Photo(FACES / p, LFW) for p in evenly(lfw_paths, remaining - len(others))]
    # Mixed, so that the kinds spread over the run; the first (the warm-up) is an LFW crop.
    return interleave(lfw, others, group, noface)


def interleave(*lists: list) -> list:
    """All items, each list's spread evenly over the result, in their order."""
    longest = max(len(items) for items in lists)
    rounds: list[list] = [[] for _ in range(longest)]
    for items in lists:
        for i, item in enumerate(items):
            rounds[math.floor(i * longest / len(items))].append(item)
    return [item for round_items in rounds for item in round_items]


def write_manifest(photos: list[Photo], folder: Path) -> Path:
    """Decode every photo upright to raw RGB bytes in folder; the manifest lists them."""
    entries = []
    for index, photo in enumerate(photos):
        with Image.open(photo.path) as image:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        raw = folder / f"{index:04d}.rgb"
        raw.write_bytes(rgb.tobytes())
        entries.append({"raw": str(raw), "width": rgb.shape[1], "height": rgb.shape[0]})
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(entries))
    return manifest


def read_rgb(entry: dict) -> np.ndarray:
    data = np.fromfile(entry["raw"], dtype=np.uint8)
    return data.reshape(entry["height"], entry["width"], 3)


# --- the Python pipelines, run inside a worker process -----------------------------------


class TimedEmbedder:
    """An embedder that adds up the CPU time it takes, and the faces it embeds."""

    def __init__(self, embedder):
        self.name, self._embedder = embedder.name, embedder
        self.cpu_seconds, self.faces = 0.0, 0

    def embed(self, rgb: np.ndarray, detections) -> np.ndarray:
        start = time.process_time()
        vectors = self._embedder.embed(rgb, detections)
        self.cpu_seconds += time.process_time() - start
        self.faces += len(detections)
        return vectors


def our_analyzer(
    threads: int, data_dir: Path, embedder: str
) -> tuple[Callable[[np.ndarray], int], str, TimedEmbedder]:
    """The production face analyzer with this embedder, its models fetched by the model
    store into data_dir; and its embedder, timed."""
    from ex_app.analyzers.faces import face_analyzer
    from ex_app.analyzers.pipeline import Pipeline
    from ex_app.analyzers.registry import face_models
    from ex_app.config import MANIFEST_PATH, Settings
    from ex_app.models.manifest import load_manifest
    from ex_app.models.store import ModelStore

    settings = Settings(data_dir=data_dir, threads=threads, face_embedder=embedder)
    store = ModelStore(settings.models_dir, load_manifest(MANIFEST_PATH), settings.model_mirror)
    analyzer = Pipeline(settings, store).part(face_analyzer)
    timed = analyzer.embedder = TimedEmbedder(analyzer.embedder)
    about = "the pipeline's face analyzer: " + " + ".join(face_models(settings))
    return (lambda rgb: len(analyzer.analyze(rgb))), about, timed


def facerecognition_analyzer(detector: str, area: int) -> tuple[Callable[[np.ndarray], int], str]:
    """facerecognition's model on one image: resize to area, detect, then per face embed."""
    import cv2
    import dlib
    import face_recognition_models

    models = Path(face_recognition_models.__file__).parent / "models"
    landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    embedder = dlib.face_recognition_model_v1(
        str(models / "dlib_face_recognition_resnet_model_v1.dat")
    )
    if detector == "hog":
        hog = dlib.get_frontal_face_detector()

        def detect(rgb: np.ndarray) -> list:
            # pdlib's dlib_face_detection loads the image as 8-bit grey; no upsampling.
            return list(hog(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 0))

    else:
        cnn = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))

        def detect(rgb: np.ndarray) -> list:
            return [found.rect for found in cnn(rgb, 0)]

    def analyze(rgb: np.ndarray) -> int:
        height, width = rgb.shape[:2]
        scale = math.sqrt(area / (width * height))  # TempImage::getResizeRatio, not clamped
        size = (round(width * scale), round(height * scale))
        interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        resized = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=interpolation))
        faces = detect(resized)
        for rect in faces:
            # pdlib's computeDescriptor: a 150 px chip with padding 0.25, no jitter.
            embedder.compute_face_descriptor(resized, landmarks(resized, rect))
        return len(faces)

    about = f"dlib {dlib.__version__} {detector.upper()} on a {area:,} px² image"
    return analyze, about


def run_worker(pipeline: str, manifest_path: Path, threads: int, data_dir: Path) -> None:
    """Prints, like faceapi/embed.mjs, one JSON line per image and a last line about it."""
    timed = None
    if pipeline in OURS:
        analyze, about, timed = our_analyzer(threads, data_dir, OURS[pipeline])
    else:
        detector, area = PYTHON_PEERS[pipeline]
        analyze, about = facerecognition_analyzer(detector, area)
    manifest = json.loads(manifest_path.read_text())
    analyze(read_rgb(manifest[0]))
    if timed is not None:
        timed.cpu_seconds, timed.faces = 0.0, 0
    for entry in manifest:
        rgb = read_rgb(entry)
        wall, cpu = time.perf_counter(), time.process_time()
        faces = analyze(rgb)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(json.dumps({"faces": faces, "seconds": wall, "cpu_seconds": cpu}), flush=True)
    embed_ms = 1000 * timed.cpu_seconds / max(timed.faces, 1) if timed is not None else None
    print(json.dumps({"about": about, "embed_ms_per_face": embed_ms}), flush=True)


# --- the parent: one process per pipeline ------------------------------------------------


def ensure_faceapi() -> None:
    """Installs the face-api bench's npm packages from its lock file when missing."""
    if (FACEAPI_DIR / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("node and npm are needed for the face-api pipeline")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=FACEAPI_DIR, check=True)


def measure(command: list[str], threads: int, work: Path) -> Result:
    """Runs one pipeline's process; its own JSON lines plus its own peak RSS."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    output = work / "output.jsonl"
    with output.open("w") as stdout:
        returncode, peak_mb = run_measured(command, work / "peak.json", stdout=stdout, env=env, cwd=PROJECT_ROOT)
    if returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {returncode}")
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    images, about = lines[:-1], lines[-1]
    return Result(
        faces=[line["faces"] for line in images],
        seconds=sum(line["seconds"] for line in images),
        cpu_seconds=sum(line["cpu_seconds"] for line in images),
        peak_rss_mb=peak_mb,
        about=about["about"],
        embed_ms_per_face=about.get("embed_ms_per_face"),
    )


def quality_columns(photos: list[Photo], faces: list[int]) -> str:
    """Faces found against the labels, as printed in the quality table."""

    def of(kind: str) -> list[int]:
        return [n for photo, n in zip(photos, faces) if photo.kind == kind]

    cells = []
    for kind in (OTHER_SINGLE, LFW):
        found = of(kind)
        cells.append(f"{sum(n > 0 for n in found):>3}/{len(found):<3}")
    singles = of(OTHER_SINGLE) + of(LFW)
    cells.append(f"{sum(max(n - 1, 0) for n in singles):>5}")
    cells.append(f"{sum(of(GROUP)):>6}")
    cells.append(f"{sum(of(NOFACE)):>6}")
    return "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=150, help="photos, the same for all")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="threads for each pipeline (TensorFlow.js's WASM backend has one in Node anyway)",
    )
    parser.add_argument("--cnn", action="store_true", help="also facerecognition's CNN model")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.manifest, args.threads, args.data_dir)
        return

    ensure_faceapi()
    photos = choose_photos(args.images)
    kinds = {
        kind: sum(p.kind == kind for p in photos) for kind in (LFW, OTHER_SINGLE, GROUP, NOFACE)
    }
    print(
        f"{len(photos)} photos ({kinds[LFW]} LFW crops, {kinds[OTHER_SINGLE]} ORL/Yale/dlib/BBT "
        f"crops, {kinds[GROUP]} group, {kinds[NOFACE]} without faces), threads={args.threads}, "
        f"{os.cpu_count()} CPUs"
    )
    peers = [name for name in PYTHON_PEERS if args.cnn or "CNN" not in name]
    with tempfile.TemporaryDirectory(prefix="faces_speed_") as folder:
        work = Path(folder)
        manifest = write_manifest(photos, work)
        commands = {
            name: [
                sys.executable, __file__, "--worker", name, "--manifest", str(manifest),
                "--threads", str(args.threads), "--data-dir", str(work / "data"),
            ]
            for name in [*OURS, *peers]
        }
        commands[FACEAPI] = ["node", str(FACEAPI_DIR / "embed.mjs"), str(manifest)]
        results = {}
        for name, command in commands.items():
            results[name] = measure(command, args.threads, work)
            print(f"  ran {name}: {results[name].about}", flush=True)

    ours = results["ours"]
    print(
        f"\n{'pipeline':<37} {'images/s':>8} {'faces/s':>8} {'faces':>6} {'cpu/wall':>8} "
        f"{'peak MB':>8} {'ours ×':>7} {'ours × cpu':>10}"
    )
    for name, result in results.items():
        faces_per_s = sum(result.faces) / result.seconds
        ratio = (sum(ours.faces) / ours.seconds) / faces_per_s
        cpu_ratio = (sum(ours.faces) / ours.cpu_seconds) / (sum(result.faces) / result.cpu_seconds)
        print(
            f"{name:<37} {len(photos) / result.seconds:>8.2f} {faces_per_s:>8.2f} "
            f"{sum(result.faces):>6} {result.cpu_seconds / result.seconds:>8.2f} "
            f"{result.peak_rss_mb:>8.0f} {ratio:>7.2f} {cpu_ratio:>10.2f}"
        )
    print(
        "ours × = our faces/s over theirs; ours × cpu = the same per CPU second (steady when\n"
        "other work shares the CPUs: cpu/wall under 1 means a one-thread pipeline was kept waiting)"
    )
    peer_results = {n: r for n, r in results.items() if n not in OURS}
    fastest = max(peer_results, key=lambda n: sum(peer_results[n].faces) / peer_results[n].cpu_seconds)
    ratio = (sum(ours.faces) / ours.cpu_seconds) / (
        sum(results[fastest].faces) / results[fastest].cpu_seconds)
    before = results["ours with dlib (before)"]
    print(f"\nours over the fastest peer ({fastest}), faces per CPU second: {ratio:.2f}×; "
          f"peak RSS {ours.peak_rss_mb - before.peak_rss_mb:+.0f} MB against ours with dlib")
    for name in OURS:
        print(f"embedder CPU time per face, {name}: {results[name].embed_ms_per_face:.2f} ms "
              f"({OURS[name]})")

    print(
        f"\n{'faces found':<37} {'single':>7}  {'LFW':>7}  {'extra':>5}  {'group':>6}  "
        f"{'noface':>6}"
    )
    for name, result in results.items():
        print(f"{name:<37} {quality_columns(photos, result.faces)}")
    print(
        "single/LFW: labelled one-face photos with a face found; extra: faces beyond one on "
        "them;\ngroup: faces in the group photos; noface: faces found on photos without any."
    )


if __name__ == "__main__":
    main()
