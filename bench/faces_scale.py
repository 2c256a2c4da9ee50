"""Face grouping at scale: add 10,000 faces to a store of 1,000,000, and re-group 100,000.

Synthetic embeddings drawn around real identity statistics: the mean and spread of identity
centres and the spread of faces around their centre are measured on real embeddings (the
default embedder's) of
``../shared/data/faces`` (computed once, cached in ``build/``), then identities and faces
are drawn from those Gaussians.

Each phase runs in its own process, so its peak memory (VmHWM) is its own:
    .venv/bin/python bench/faces_scale.py [--store 1000000] [--add 10000] [--regroup 100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from peak_memory import own_peak_mb
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "faces-scale"
FACES_PER_IDENTITY = 20
EMBEDDER = "sface"  # the default's: the statistics are measured on its embeddings


def identity_statistics() -> tuple[np.ndarray, np.ndarray, float]:
    """Mean and covariance of identity centres, and the per-dimension spread around a centre."""
    cache = ROOT / "build" / "faces-scale-real.npz"  # outside WORK, which each run clears
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, *_embed_shared_faces())
    data = np.load(cache)
    embeddings, identities = data["arr_0"], data["arr_1"]
    centres, residuals = [], []
    for name in np.unique(identities):
        members = embeddings[identities == name]
        if len(members) >= 2:
            centre = members.mean(axis=0)
            centres.append(centre)
            residuals.append(members - centre)
    centres = np.array(centres)
    spread = float(np.concatenate(residuals).std())
    return centres.mean(axis=0), np.cov(centres, rowvar=False), spread


def _embed_shared_faces() -> tuple[np.ndarray, np.ndarray]:
    import csv

    from PIL import Image

    from ex_app.analyzers.faces import FaceAnalyzer, embedder
    from ex_app.analyzers.pipeline import Pipeline
    from ex_app.config import Settings
    from ex_app.models.manifest import load_manifest
    from ex_app.models.store import ModelStore

    shared = ROOT.parent / "shared"
    store = ModelStore(ROOT / "build" / "bench-models", load_manifest(), mirror=shared / "models")
    analyzer = FaceAnalyzer(
        store.path("face_detection_yunet"), embedder(Pipeline(Settings(), store))
    )
    embeddings, identities = [], []
    with open(shared / "data" / "faces" / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["identity"].startswith("__"):
                continue
            rgb = np.asarray(Image.open(shared / "data" / "faces" / row["path"]).convert("RGB"))
            faces = analyzer.analyze(rgb)
            if faces:
                embeddings.append(faces[0].embedding)
                identities.append(row["identity"])
    return np.array(embeddings), np.array(identities)


def draw(
    count: int, identities: int, seed: int, face_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres, faces, identity of each face): faces drawn around drawn centres.

    The same seed gives the same centres; face_seed picks which faces.
    """
    mean, covariance, spread = identity_statistics()
    centres = (
        np.random.default_rng(seed)
        .multivariate_normal(mean, covariance, size=identities)
        .astype(np.float32)
    )
    rng = np.random.default_rng(face_seed)
    owner = rng.integers(0, identities, size=count)
    faces = centres[owner] + rng.normal(0, spread, size=(count, centres.shape[1])).astype(np.float32)
    return centres, faces.astype(np.float32), owner


def _engine(path: Path):
    from ex_app.config import Settings
    from ex_app.engine import Engine

    return Engine(Settings(data_dir=path, face_full_regroup_limit=0))


def _insert_faces(session, faces: np.ndarray, persons: np.ndarray | None) -> None:
    """Each face in a photo of its own (faces of one photo may never share a person)."""
    from ex_app.store import schema

    root_id = session.scalar(select(schema.Root.id))
    first = (session.scalar(select(schema.File.id).order_by(schema.File.id.desc()).limit(1)) or 0) + 1
    for start in range(0, len(faces), 50_000):
        chunk = range(start, min(start + 50_000, len(faces)))
        session.execute(
            insert(schema.File),
            [
                {"id": first + i, "root_id": root_id, "path": f"{first + i}.jpg", "kind": "image",
                 "size": 0, "mtime_ns": 0, "content_hash": "0"}
                for i in chunk
            ],
        )
        session.execute(
            insert(schema.Face),
            [
                {
                    "file_id": first + i,
                    "x": 0.0, "y": 0.0, "w": 120.0, "h": 120.0,
                    "score": 0.95, "quality": 0.9, "sharpness": 200.0, "pose": 1.0,
                    "landmarks": b"",
                    "embedding": faces[i].tobytes(), "embedder": EMBEDDER,
                    "person_id": None if persons is None else int(persons[i]),
                    "pinned": False,
                }
                for i in chunk
            ],
        )


def build_store(size: int, seed: int) -> dict:
    """A store of `size` faces already grouped into persons (one per identity)."""
    from ex_app.store import schema

    identities = max(1, size // FACES_PER_IDENTITY)
    centres, faces, owner = draw(size, identities, seed, face_seed=seed)
    engine = _engine(WORK / "store")
    with engine.sessions.begin() as session:
        session.add(schema.Root(source="bench", location="synthetic"))
        session.flush()
        session.execute(
            insert(schema.Person),
            [{"id": i + 1, "hidden": False, "confirmed": False, "centroid": centres[i].tobytes(),
              "embedder": EMBEDDER} for i in range(identities)],
        )
        _insert_faces(session, faces, owner + 1)
    return {"faces": size, "persons": identities}


def add_faces(count: int, seed: int, identities: int) -> dict:
    """Add `count` new faces of known identities and let the incremental update place them."""
    from ex_app.people.clustering import ClusterParams, QualityGate
    from ex_app.people.grouping import update_persons
    from ex_app.store import schema

    _, faces, owner = draw(count, identities, seed, face_seed=seed + 1)  # the store's persons
    engine = _engine(WORK / "store")
    with engine.sessions.begin() as session:
        first_new = (session.scalar(select(schema.Face.id).order_by(schema.Face.id.desc()).limit(1)) or 0) + 1
        _insert_faces(session, faces, None)
    start = time.perf_counter()
    with engine.sessions.begin() as session:
        update_persons(session, ClusterParams.from_settings(engine.settings),
                       QualityGate.from_settings(engine.settings), EMBEDDER)
    seconds = time.perf_counter() - start
    with engine.sessions() as session:
        placed = session.execute(
            select(schema.Face.person_id).where(schema.Face.id >= first_new).order_by(schema.Face.id)
        ).scalars().all()
    right = sum(p == o + 1 for p, o in zip(placed, owner))
    joined = sum(p is not None for p in placed)
    return {"seconds": seconds, "faces_per_second": count / seconds, "joined": joined / count, "right_person": right / count}


def regroup(count: int, seed: int) -> dict:
    """Full clustering of `count` faces (no store: the grouping's own time and memory)."""
    from ex_app.config import Settings
    from ex_app.people.clustering import ClusterParams, cluster

    _, faces, owner = draw(count, max(1, count // FACES_PER_IDENTITY), seed + 2, face_seed=seed + 2)
    start = time.perf_counter()
    labels = cluster(faces, np.ones(count, bool), ClusterParams.from_settings(Settings()))
    seconds = time.perf_counter() - start
    assigned = labels != -1
    purity = 0.0
    if assigned.any():
        pairs = np.stack([labels[assigned], owner[assigned]], axis=1)
        _, counts = np.unique(pairs, axis=0, return_counts=True)
        per_label = {}
        for (label, _), n in zip(np.unique(pairs, axis=0), counts):
            per_label[label] = max(per_label.get(label, 0), n)
        purity = sum(per_label.values()) / assigned.sum()
    return {"seconds": seconds, "persons": int(len(np.unique(labels[assigned]))), "assigned": float(assigned.mean()), "purity": float(purity)}


def run_phase(*args: str) -> dict:
    """Run one phase in a child process; returns its result and its peak memory."""
    output = subprocess.run(
        [sys.executable, __file__, "--phase", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=int, default=1_000_000)
    parser.add_argument("--add", type=int, default=10_000)
    parser.add_argument("--regroup", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        name, *values = args.phase
        result = {"build": build_store, "add": add_faces, "regroup": regroup}[name](*map(int, values))
        result["peak_mb"] = own_peak_mb()
        print(json.dumps(result))
        return

    import shutil

    shutil.rmtree(WORK, ignore_errors=True)
    start = time.perf_counter()
    built = run_phase("build", str(args.store), str(args.seed))
    print(f"store: {built['faces']:,} faces in {built['persons']:,} persons, built in "
          f"{time.perf_counter() - start:.0f} s (peak {built['peak_mb']:.0f} MB)")
    added = run_phase("add", str(args.add), str(args.seed), str(built["persons"]))
    print(f"add {args.add:,} faces to it: {added['seconds']:.1f} s ({added['faces_per_second']:.0f} faces/s), "
          f"peak {added['peak_mb']:.0f} MB; {added['joined']:.1%} joined a person, "
          f"{added['right_person']:.1%} the right one")
    grouped = run_phase("regroup", str(args.regroup), str(args.seed))
    print(f"re-group {args.regroup:,} faces: {grouped['seconds']:.1f} s, peak {grouped['peak_mb']:.0f} MB; "
          f"{grouped['persons']:,} persons, {grouped['assigned']:.1%} assigned, purity {grouped['purity']:.3f}")


if __name__ == "__main__":
    main()
