"""Persons end to end: `recognize scan` + `recognize export --json` on a folder of photos as a
user's library holds them, scored against the identities.

    .venv/bin/python bench/faces_scan_quality.py [--half 0|1|all] [--embedder sface|dlib]

The folder is made from ``../shared/data/faces`` (labelled photos only): for each identity of
the chosen half (identities split by a hash of the name, as bench/faces_quality.py splits
them), at most 8 of its photos, one photo only for every fifth identity, and every fourth
photo turned grey; names and order are shuffled so the folders say nothing. The scan runs in
its own process with its own data folder, like a user's. Each photo's largest face is its
labelled face; a photo without a face, and a face in no person, count as a person of their
own. Prints BCubed precision, recall and F1 and the persons found.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
MODELS = ROOT.parent / "shared" / "models"
MAX_PHOTOS = 8  # per person
SINGLE_EVERY = 5  # every fifth identity keeps one photo
GREY_EVERY = 4  # every fourth photo turned grey


def name_hash(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16)


def make_library(
    source: Path, target: Path, half: str, identities: int | None = None
) -> dict[str, str]:
    """Write the folder (of the first ``identities`` of the half, in hash order, when given);
    returns file name → identity."""
    with open(source / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if not r["identity"].startswith("__")]
    by_identity: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if half == "all" or name_hash(row["identity"]) % 2 == int(half):
            by_identity[row["identity"]].append(row["path"])
    truth: dict[str, str] = {}
    target.mkdir(parents=True, exist_ok=True)
    for rank, identity in enumerate(sorted(by_identity, key=name_hash)[:identities]):
        paths = sorted(by_identity[identity], key=name_hash)
        for path in paths[: 1 if rank % SINGLE_EVERY == 0 else MAX_PHOTOS]:
            name = f"{name_hash(path) % 10**12:012d}.jpg"
            image = Image.open(source / path)
            image = image.convert("L") if name_hash(path + "grey") % GREY_EVERY == 0 else image.convert("RGB")
            image.save(target / name, quality=92)
            truth[name] = identity
    return truth


def recognize(data_dir: Path, *args: str, embedder: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    env["RECOGNIZE_FACES__EMBEDDER"] = embedder
    command = [sys.executable, "-m", "ex_app", "--data-dir", str(data_dir),
               "--model-mirror", str(MODELS), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=ROOT)


def bcubed(clusters: list[str], identities: list[str]) -> tuple[float, float, float]:
    """BCubed precision, recall and F1 of one cluster label per item."""
    clusters_a, identities_a = np.array(clusters), np.array(identities)
    precision = recall = 0.0
    for c, i in zip(clusters_a, identities_a):
        same_cluster, same_identity = clusters_a == c, identities_a == i
        both = (same_cluster & same_identity).sum()
        precision += both / same_cluster.sum()
        recall += both / same_identity.sum()
    precision, recall = precision / len(clusters), recall / len(clusters)
    return precision, recall, 2 * precision * recall / (precision + recall)


def score_export(export: dict, truth: dict[str, str]) -> dict:
    """BCubed scores of an export against the identities of its photos."""
    clusters, identities = [], []
    for file in export["files"]:
        name = Path(file["path"]).name
        if name not in truth:
            continue
        faces = file.get("faces") or []
        largest = max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None
        person = largest["person"] if largest else None
        clusters.append(f"person {person}" if person is not None else f"alone {name}")
        identities.append(truth[name])
    precision, recall, f1 = bcubed(clusters, identities)
    persons = len({c for c in clusters if c.startswith("person")})
    return {"photos": len(clusters), "identities": len(set(identities)), "persons": persons,
            "precision": precision, "recall": recall, "f1": f1,
            "no face": sum(1 for f in export["files"] if not f.get("faces"))}


def run(half: str, embedder: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "Photos"
        truth = make_library(FACES, library, half)
        recognize(Path(tmp) / "state", "scan", str(library), embedder=embedder)
        export = json.loads(recognize(Path(tmp) / "state", "export", "--json", embedder=embedder).stdout)
        return score_export(export, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=("0", "1", "all"), action="append")
    parser.add_argument("--embedder", choices=("sface", "dlib"), action="append")
    args = parser.parse_args()
    print(f"{'embedder':8s} {'identities':>10s} {'photos':>6s} {'persons':>7s} {'no face':>7s} "
          f"{'B3 P':>6s} {'B3 R':>6s} {'B3 F1':>6s}")
    for embedder in args.embedder or ("sface", "dlib"):
        for half in args.half or ("0", "1"):
            s = run(half, embedder)
            print(f"{embedder:8s} {'half ' + half:>10s} {s['photos']:6d} {s['persons']:7d} "
                  f"{s['no face']:7d} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f}"
                  f"   ({s['identities']} identities)")


if __name__ == "__main__":
    main()
