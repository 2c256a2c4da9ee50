"""Face grouping quality: the whole pipeline on identity-labelled photos, ours against the peers.

    .venv/bin/python bench/faces_quality.py [FOLDER] [--embedder sface|dlib] [--cache DIR]
                                            [--gate-study]

FOLDER holds ``<identity>/<images>`` and ``labels.csv`` (``path,identity``; identities
starting with ``__`` such as ``__group__`` are left out); default ``../shared/data/faces``.
Each photo goes through detection → embedding (:class:`FaceAnalyzer`, min_size 16,
min_score 0.8; the largest face of a photo is taken as the labelled one) → grouping, once per
embedder (SFace and dlib, side by side; the last table puts every grouping on both).
Embeddings are cached in ``build/faces-embeddings-<embedder>.npz`` keyed by relative path,
file size and modification time, and dropped when the analyzer's code or thresholds change.

Measures, over all labelled photos (a photo without a detected face and a face left
unassigned each count as a cluster of its own): BCubed precision, recall and F1 (Bagga &
Baldwin 1998: per face, the share of its cluster that is its identity and the share of its
identity that is in its cluster), pairwise precision and recall over face pairs, persons
found (clusters) against identities, and the share of faces left unassigned.

Ours runs with the app's settings (``ex_app/config.py``, the embedder's distances) and its
quality gate; everything else sees every face. The peers are re-implemented on the same
embeddings; their Euclidean distances are dlib's, so on SFace's they are scaled by the ratio
of the two embedders' link distances (Immich's cosine 0.5 is its own, for ArcFace-like
models such as SFace):

- Recognize for Nextcloud (PHP; nextcloud/recognize ``lib/Service/FaceClusterAnalyzer.php``,
  ``lib/Clustering/{HDBSCAN,MstSolver,MrdBallTree,MstClusterer}.php`` at 40eff428):
  HDBSCAN on Euclidean distance with min cluster size round(clip(n^(1/4.7), 2, 5)) and
  sample size round(clip(n^(1/5.6), 2, 4)) (core distance: the sample-size-th nearest other
  face), then its own MST clusterer with MIN_CLUSTER_SEPARATION 0.35 (splits below it are
  not clusters) and MAX_CLUSTER_EDGE_LENGTH 0.5 (clusters joined by longer edges get no
  weight; a cluster whose last edge is longer is noise); no clustering under
  MIN_DATASET_SIZE 120 faces. Its face-api.js embeddings are dlib-like 128-D, so the
  same distances apply. Ported line by line as :class:`PhpMstClusterer`.
- facerecognition for Nextcloud (matiasdelellis/facerecognition
  ``lib/BackgroundJob/Tasks/CreateClustersTask.php``, ``SettingsService::DEFAULT_SENSITIVITY``
  0.4): an edge for every pair with Euclidean distance < 0.4, then dlib's Chinese whispers
  (pdlib's ``dlib_chinese_whispers``, the same as ``dlib.chinese_whispers_clustering``).
  Every face gets a cluster; its ``min_faces_in_cluster`` only hides small ones in the UI.
- Immich (immich-app/immich ``server/src/services/person.service.ts``
  ``handleRecognizeFaces``, defaults minFaces 3, maxDistance 0.5): faces one after the
  other (here in a fixed pseudo-random order, as a library's uploads interleave people);
  the minFaces nearest faces within maxDistance of cosine distance (pgvector ``<=>``, on
  the normalised embedding) are its matches, itself included; a face with at least
  minFaces matches is core; a non-core face waits until all others are done; a face takes
  the person of a match, else of the nearest face with a person within maxDistance; a core
  face without one starts a person. Immich's 0.5 is meant for its ArcFace model; a second
  row runs the same rule with dlib's Euclidean 0.5.

Choosing by measurement: the generic families (DBSCAN, HDBSCAN, Chinese whispers, average
and complete linkage) and ours each run over a small grid on four libraries made from the
folder: all photos, half of them and two disjoint 30% samples (sparse samples leave most
identities with one to three photos, where forced merges show). Per family, the grid
point with the best mean F1 while BCubed precision stays ≥ 0.98 in every library is its
choice; table 1 shows it next to the point best on all photos alone. Table 2 is the
issue's table on all photos. Table 3 splits the identities in two halves by a hash of
their names, chooses on one half, measures on the other and averages both ways round: how
a choice carries over to identities never seen. ``--gate-study`` measures how small or
blurred faces degrade recognition, the evidence behind the gate's defaults. Table 4 merges
half the photos of two identities into one person, as a user may, and counts the other
halves that join it and the strangers that do, with one centroid against the person's
prototypes. A summary line per embedder sums up ours.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import dlib
import numpy as np
from PIL import Image
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist, pdist, squareform
from sklearn.cluster import DBSCAN, HDBSCAN

from ex_app.analyzers.faces import EMBEDDERS, FaceAnalyzer
from ex_app.analyzers.faces import embedder as face_embedder
from ex_app.analyzers.pipeline import Pipeline
from ex_app.analyzers.results import Face
from ex_app.config import Settings
from ex_app.models.manifest import load_manifest
from ex_app.models.store import ModelStore
from ex_app.people.clustering import (
    UNASSIGNED,
    ClusterParams,
    QualityGate,
    cluster,
    passes_quality_gate,
    person_prototypes,
)
from ex_app.people.distances import EMBEDDER_DISTANCES, Distances

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "faces"
CACHE_DIR = ROOT / "build"  # faces-embeddings-<embedder>.npz
MODELS = ROOT.parent / "shared" / "models"
ANALYZER_MIN_SIZE, ANALYZER_MIN_SCORE = 16, 0.8
MIN_PRECISION = 0.99  # the bar: a wrongly merged person hurts more than a split
# The grid of ours per embedder: its two main distances (link, join); the others stay at the
# embedder's defaults.
OURS_GRID = {
    "sface": ((1.0, 1.05, 1.1, 1.15), (0.95, 1.0, 1.05)),
    "dlib": ((0.5, 0.55, 0.6), (0.4, 0.45)),
}


@dataclass
class FaceSet:
    """One labelled photo per row; its largest face's measurements, zeros where none was found."""

    paths: np.ndarray
    identities: np.ndarray
    found: np.ndarray  # bool: a face was detected
    embeddings: np.ndarray  # n × 128 float32
    size: np.ndarray  # shorter box side, pixels
    score: np.ndarray
    sharpness: np.ndarray
    pose: np.ndarray

    def subset(self, rows: np.ndarray) -> FaceSet:
        return FaceSet(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    pair_precision: float
    pair_recall: float
    persons: int
    unassigned: float


Method = Callable[[FaceSet], np.ndarray]


# --- Embeddings -------------------------------------------------------------------------


def labelled_photos(folder: Path) -> list[tuple[str, str]]:
    """(relative path, identity) of every labelled photo, in labels.csv order."""
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(row["path"], row["identity"]) for row in rows if not row["identity"].startswith("__")]


def file_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def model_store() -> ModelStore:
    return ModelStore(ROOT / "build" / "bench-models", load_manifest(), mirror=MODELS)


def make_analyzer(embedder: str) -> FaceAnalyzer:
    """The production analyzer with this embedder (dlib as the ONNX port of its network)."""
    settings = Settings(face_embedder=embedder, inference_engine="onnx")
    return FaceAnalyzer(
        model_store().path("face_detection_yunet"),
        face_embedder(Pipeline(settings, model_store())),
        min_score=ANALYZER_MIN_SCORE,
        min_size=ANALYZER_MIN_SIZE,
    )


def analyzer_version(embedder: str) -> str:
    """Changes whenever the analyzer's code, embedder or thresholds do."""
    code = hashlib.sha1((ROOT / "ex_app" / "analyzers" / "faces.py").read_bytes()).hexdigest()
    return f"{code}:{embedder}:{ANALYZER_MIN_SIZE}:{ANALYZER_MIN_SCORE}"


def largest_face(analyzer: FaceAnalyzer, rgb: np.ndarray) -> Face | None:
    faces = analyzer.analyze(rgb)
    return max(faces, key=lambda face: face.box[2] * face.box[3]) if faces else None


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def embed_folder(folder: Path, cache: Path, embedder: str) -> FaceSet:
    """Every labelled photo's face by this embedder, from the cache where the file is
    unchanged."""
    photos = labelled_photos(folder)
    known: dict[tuple[str, str], tuple] = {}
    version = analyzer_version(embedder)
    stored = np.load(cache) if cache.exists() else {}
    if "analyzer" in stored and str(stored["analyzer"]) == version:
        fields = ("found", "embeddings", "size", "score", "sharpness", "pose")
        for i, key in enumerate(zip(stored["paths"], stored["stamps"])):
            known[key] = tuple(stored[name][i] for name in fields)
    analyzer = None
    rows, stamps = [], []
    for number, (relative, _) in enumerate(photos):
        stamp = file_stamp(folder / relative)
        if (relative, stamp) not in known:
            analyzer = analyzer or make_analyzer(embedder)
            face = largest_face(analyzer, load_rgb(folder / relative))
            known[(relative, stamp)] = (
                (True, face.embedding, min(face.box[2:]), face.score, face.sharpness, face.pose)
                if face
                else (False, np.zeros(128, np.float32), 0.0, 0.0, 0.0, 0.0)
            )
            if number % 100 == 0:
                print(f"  embedded {number}/{len(photos)}", file=sys.stderr)
        rows.append(known[(relative, stamp)])
        stamps.append(stamp)
    columns = list(zip(*rows))
    faces = FaceSet(
        paths=np.array([p for p, _ in photos]),
        identities=np.array([i for _, i in photos]),
        found=np.array(columns[0], dtype=bool),
        embeddings=np.stack(columns[1]).astype(np.float32),
        size=np.array(columns[2], dtype=float),
        score=np.array(columns[3], dtype=float),
        sharpness=np.array(columns[4], dtype=float),
        pose=np.array(columns[5], dtype=float),
    )
    if analyzer is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, analyzer=version, paths=faces.paths, stamps=np.array(stamps),
                 found=faces.found,
                 embeddings=faces.embeddings, size=faces.size, score=faces.score,
                 sharpness=faces.sharpness, pose=faces.pose)
    return faces


def name_hash(text: str) -> int:
    """A stable pseudo-random number for a path or a name (splits and orders)."""
    return int(hashlib.sha1(text.encode()).hexdigest(), 16)


# --- Metrics ----------------------------------------------------------------------------


def score(labels: np.ndarray, identities: np.ndarray) -> Scores:
    """BCubed and pairwise scores; every UNASSIGNED face is a cluster of its own."""
    labels = np.asarray(labels).copy()
    loose = labels == UNASSIGNED
    _, sizes = np.unique(labels[~loose], return_counts=True)
    persons = int((sizes >= 2).sum())
    labels[loose] = labels.max(initial=0) + 1 + np.arange(loose.sum())
    _, clusters = np.unique(labels, return_inverse=True)
    _, truth = np.unique(identities, return_inverse=True)
    joint = csr_matrix((np.ones(len(labels)), (clusters, truth)))
    joint.sum_duplicates()
    overlap = joint.data
    rows, cols = joint.nonzero()
    cluster_sizes = np.bincount(clusters).astype(float)
    identity_sizes = np.bincount(truth).astype(float)
    precision = float((overlap**2 / cluster_sizes[rows]).sum() / len(labels))
    recall = float((overlap**2 / identity_sizes[cols]).sum() / len(labels))
    same = (overlap * (overlap - 1) / 2).sum()
    clustered_pairs = (cluster_sizes * (cluster_sizes - 1) / 2).sum()
    identity_pairs = (identity_sizes * (identity_sizes - 1) / 2).sum()
    return Scores(
        precision=precision,
        recall=recall,
        f1=2 * precision * recall / (precision + recall),
        pair_precision=float(same / clustered_pairs) if clustered_pairs else 1.0,
        pair_recall=float(same / identity_pairs) if identity_pairs else 1.0,
        persons=persons,
        unassigned=float(loose.mean()),
    )


def on_found(method: Callable[[np.ndarray], np.ndarray]) -> Method:
    """Run a method on the embeddings of photos with a face; the others stay unassigned."""

    def run(faces: FaceSet) -> np.ndarray:
        labels = np.full(len(faces.found), UNASSIGNED)
        if faces.found.any():
            labels[faces.found] = method(faces.embeddings[faces.found].astype(np.float64))
        return labels

    return run


def drop_small(labels: np.ndarray, min_faces: int) -> np.ndarray:
    """Clusters smaller than min_faces become unassigned."""
    labels = np.asarray(labels).copy()
    sizes = np.bincount(labels[labels >= 0], minlength=1)
    labels[(labels >= 0) & (sizes[np.maximum(labels, 0)] < min_faces)] = UNASSIGNED
    return labels


# --- Ours -------------------------------------------------------------------------------


def ours(gate: QualityGate, params: ClusterParams) -> Method:
    def run(faces: FaceSet) -> np.ndarray:
        seedable = passes_quality_gate(faces.size, faces.score, faces.sharpness, faces.pose, gate)
        return on_found(lambda x: cluster(x, seedable[faces.found], params))(faces)

    return run


# --- Peers ------------------------------------------------------------------------------

PHP_MIN_DATASET_SIZE = 120
PHP_MIN_CLUSTER_SEPARATION = 0.35
PHP_MAX_CLUSTER_EDGE_LENGTH = 0.5


class PhpMstClusterer:
    """Recognize's ``lib/Clustering/MstClusterer.php``, ported statement by statement."""

    def __init__(self, edges: dict[int, tuple[int, int, float]], vertex_edges: dict | None,
                 min_size: int, starting_lambda: float | None, separation: float, max_edge: float):
        self.edges = dict(sorted(edges.items(), key=lambda item: item[1][2]))
        self.remaining = dict(self.edges)
        if vertex_edges is None:
            vertex_edges = {}
            for key, (a, b, _) in self.edges.items():
                vertex_edges.setdefault(a, {})[key] = True
                vertex_edges.setdefault(b, {})[key] = True
        self.vertex_edges = vertex_edges
        self.is_root = starting_lambda is None
        self.starting_lambda = 0.0 if starting_lambda is None else starting_lambda
        self.min_size, self.separation, self.max_edge = min_size, separation, max_edge
        self.weight = 0.0

    def process(self) -> list[PhpMstClusterer]:
        current = last = self.starting_lambda
        length = math.inf
        while True:
            count = len(self.remaining)
            if not self.remaining or count < self.min_size - 1:
                return [] if length > self.max_edge else [self]
            key = next(reversed(self.remaining))
            a, b, length = self.remaining.pop(key)
            self.vertex_edges[a].pop(key, None)
            self.vertex_edges[b].pop(key, None)
            if length > self.max_edge:
                last = current = 1.0 / length
            elif length > 0:
                current = 1.0 / length
            self.weight += (current - last) * count
            last = current
            if not self._prune(b) and not self._prune(a):
                edges_b, map_b = self._component(b)
                edges_a, map_a = self._component(a)
                if length < self.separation:
                    if len(edges_b) > len(edges_a):
                        self.remaining, self.vertex_edges = edges_b, map_b
                    else:
                        self.remaining, self.vertex_edges = edges_a, map_a
                    continue
                children = [
                    PhpMstClusterer(e, m, self.min_size, current, self.separation, self.max_edge)
                    for e, m in ((edges_b, map_b), (edges_a, map_a))
                ]
                chosen = children[0].process() + children[1].process()
                if sum(c.weight for c in chosen) >= self.weight or self.is_root:
                    return chosen
                return [self]
            if length > self.max_edge:
                self.edges = dict(self.remaining)

    def _walk(self, vertex: int) -> Iterable[tuple[int, int]]:
        """(vertex, edge key) pairs reached from vertex over the remaining edges."""
        stack, seen = [vertex], set()
        while stack:
            current = stack.pop()
            yield current, -1
            for key in list(self.vertex_edges[current]):
                if key in seen:
                    continue
                a, b, _ = self.remaining[key]
                if current in (a, b):
                    seen.add(key)
                    stack.append(b if a == current else a)
                    yield current, key

    def _prune(self, vertex: int) -> bool:
        vertices, keys = [], set()
        for current, key in self._walk(vertex):
            if key == -1:
                vertices.append(current)
                if len(vertices) >= self.min_size:
                    return False
            else:
                keys.add(key)
        for key in keys:
            del self.remaining[key]
        for current in vertices:
            self.vertex_edges.pop(current, None)
        return True

    def _component(self, vertex: int) -> tuple[dict, dict]:
        vertices, keys = {}, set()
        for current, key in self._walk(vertex):
            vertices[current] = dict(self.vertex_edges[current])
            if key != -1:
                keys.add(key)
        return {k: e for k, e in self.remaining.items() if k in keys}, vertices

    def vertices(self) -> set[int]:
        return {v for a, b, _ in self.edges.values() for v in (a, b)}


def php_recognize(x: np.ndarray, unit: float = 1.0) -> np.ndarray:
    """Recognize (PHP)'s HDBSCAN with its size-dependent parameters and distance limits
    (scaled by unit for another embedder's distances)."""
    count = len(x)
    labels = np.full(count, UNASSIGNED)
    if count < PHP_MIN_DATASET_SIZE:
        return labels
    min_cluster_size = round(max(2.0, min(5.0, count ** (1 / 4.7))))
    sample_size = round(max(2, min(4, count ** (1 / 5.6))))
    distances = squareform(pdist(x))
    np.fill_diagonal(distances, np.inf)
    core = np.sort(distances, axis=1)[:, sample_size - 1]
    np.fill_diagonal(distances, 0.0)
    reachability = np.maximum(distances, np.maximum(core[:, None], core[None, :]))
    tree = minimum_spanning_tree(csr_matrix(np.triu(reachability + 1e-12, 1))).tocoo()
    edges = {i: (int(a), int(b), float(w))
             for i, (a, b, w) in enumerate(zip(tree.row, tree.col, tree.data))}
    clusters = PhpMstClusterer(edges, None, min_cluster_size, None,
                               PHP_MIN_CLUSTER_SEPARATION * unit,
                               PHP_MAX_CLUSTER_EDGE_LENGTH * unit).process()
    for number, found in enumerate(clusters):
        labels[list(found.vertices())] = number
    return labels


def chinese_whispers(x: np.ndarray, threshold: float) -> np.ndarray:
    """dlib's Chinese whispers over all pairs closer than threshold (facerecognition's way)."""
    vectors = [dlib.vector(row.tolist()) for row in x]
    return np.array(dlib.chinese_whispers_clustering(vectors, threshold))


def immich(
    x: np.ndarray, order: np.ndarray, max_distance: float, cosine: bool, min_faces: int = 3
) -> np.ndarray:
    """Immich's handleRecognizeFaces, face by face in the given order, non-core faces last."""
    if cosine:
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        distances = 1.0 - unit @ unit.T
    else:
        distances = squareform(pdist(x))
    person = np.full(len(x), UNASSIGNED)
    persons = 0
    deferred = []

    def recognize(face: int, is_deferred: bool) -> None:
        nonlocal persons
        nearest = np.argsort(distances[face], kind="stable")[:min_faces]
        matches = nearest[distances[face, nearest] <= max_distance]
        if min_faces > 1 and len(matches) <= 1:
            return
        core = len(matches) >= min_faces
        if not core and not is_deferred:
            deferred.append(face)
            return
        chosen = next((person[m] for m in matches if person[m] != UNASSIGNED), UNASSIGNED)
        if chosen == UNASSIGNED:
            with_person = np.flatnonzero(person != UNASSIGNED)
            if len(with_person):
                closest = with_person[np.argmin(distances[face, with_person])]
                if distances[face, closest] <= max_distance:
                    chosen = person[closest]
        if core and chosen == UNASSIGNED:
            chosen, persons = persons, persons + 1
        person[face] = chosen

    for face in order:
        recognize(int(face), False)
    for face in list(deferred):
        recognize(face, True)
    return person


def immich_method(cosine: bool, unit: float = 1.0) -> Method:
    def run(faces: FaceSet) -> np.ndarray:
        order = np.argsort([name_hash(p) for p in faces.paths[faces.found]])
        distance = 0.5 if cosine else 0.5 * unit
        return on_found(lambda x: immich(x, order, distance, cosine))(faces)

    return run


# --- Choosing by measurement -------------------------------------------------------------


def libraries(faces: FaceSet) -> dict[str, np.ndarray]:
    """Rows of four libraries made from one folder: all photos, half of them, and two
    disjoint 30% samples (by a hash of the path). Sparse samples leave most identities
    with one to three photos, as in a young library: there, forced merges show."""
    share = np.array([name_hash(p) % 100 for p in faces.paths])
    return {
        "all": np.arange(len(share)),
        "50%": np.flatnonzero(share < 50),
        "30% a": np.flatnonzero(share < 30),
        "30% b": np.flatnonzero(share >= 70),
    }


def identity_halves(faces: FaceSet) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the two halves of the identities, split by a hash of each name."""
    half = np.array([name_hash(name) % 2 for name in faces.identities])
    return np.flatnonzero(half == 0), np.flatnonzero(half == 1)


@dataclass
class Trial:
    """One method on every library of a folder."""

    scores: dict[str, Scores]

    @property
    def worst_precision(self) -> float:
        return min(s.precision for s in self.scores.values())

    @property
    def mean_f1(self) -> float:
        return float(np.mean([s.f1 for s in self.scores.values()]))


def trial(method: Method, faces: FaceSet) -> Trial:
    return Trial({name: score(method(faces.subset(rows)), faces.identities[rows])
                  for name, rows in libraries(faces).items()})


def choose(trials: dict[str, Trial]) -> str:
    """The best mean F1 among those keeping BCubed precision ≥ MIN_PRECISION in every
    library; the one with the best worst precision when none does."""
    good = [label for label, t in trials.items() if t.worst_precision >= MIN_PRECISION]
    if good:
        return max(good, key=lambda label: trials[label].mean_f1)
    return max(trials, key=lambda label: trials[label].worst_precision)


def family_grids(
    gate: QualityGate, app: ClusterParams, embedder: str, unit: float
) -> dict[str, dict[str, Method]]:
    """Per family, its methods by parameter label; the generic families' distances are
    dlib's, times unit for another embedder."""

    def agglomerative(method: str, threshold: float, min_faces: int) -> Method:
        def run(x: np.ndarray) -> np.ndarray:
            tree = linkage(pdist(x), method=method)
            return drop_small(fcluster(tree, threshold, criterion="distance") - 1, min_faces)

        return on_found(run)

    def hdbscan(min_cluster_size: int, min_samples: int) -> Method:
        return on_found(lambda x: HDBSCAN(
            min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True
        ).fit_predict(x))

    def dbscan(eps: float, min_samples: int) -> Method:
        return on_found(lambda x: DBSCAN(eps=eps, min_samples=min_samples).fit_predict(x))

    def whispers(threshold: float, min_faces: int) -> Method:
        return on_found(lambda x: drop_small(chinese_whispers(x, threshold), min_faces))

    return {
        "ours": {  # its two main distances; the others stay at the app's settings
            f"link {d} join {j}": ours(gate, replace(app, max_distance=d, join_distance=j))
            for d, j in itertools.product(*OURS_GRID[embedder])
        },
        "DBSCAN": {
            f"eps {e * unit:.3g} min {m}": dbscan(e * unit, m)
            for e, m in itertools.product((0.35, 0.4, 0.45, 0.5), (2, 3, 4, 5))
        },
        "HDBSCAN": {
            f"min_cluster_size {c} min_samples {s}": hdbscan(c, s)
            for c, s in itertools.product((2, 3, 4, 5), (1, 2, 3, 4))
        },
        "Chinese whispers": {
            f"t {t * unit:.3g} min {m}": whispers(t * unit, m)
            for t, m in itertools.product((0.35, 0.4, 0.42, 0.45, 0.5), (1, 2, 3))
        },
        "average linkage": {
            f"t {t * unit:.3g} min {m}": agglomerative("average", t * unit, m)
            for t, m in itertools.product((0.4, 0.45, 0.475, 0.5, 0.525, 0.55), (2, 3))
        },
        "complete linkage": {
            f"t {t * unit:.3g} min {m}": agglomerative("complete", t * unit, m)
            for t, m in itertools.product((0.5, 0.55, 0.6, 0.65, 0.7), (2, 3))
        },
    }


# --- Gate study -------------------------------------------------------------------------


def gate_study(
    folder: Path, faces: FaceSet, pair_distance: float, embedder: str, photos: int = 300
) -> None:
    """Recognition of degraded copies: shrunk so the face is s px, or blurred with σ.

    Probes: photos with a face of ≥ 64 px of identities with ≥ 5 faces (at most
    ``photos``, by a hash of the path); gallery: every other found face of the folder.
    Rank-1: the nearest gallery face has the probe's identity. Drift: distance from the
    probe's clean embedding. False pairs: the share of probe pairs of different identities
    closer than pair_distance (two such faces could seed a wrong person), against clean.
    """
    analyzer = make_analyzer(embedder)
    counts = {name: (faces.identities[faces.found] == name).sum() for name in set(faces.identities)}
    usable = np.flatnonzero(faces.found & (faces.size >= 64))
    rows = [i for i in usable if counts[faces.identities[i]] >= 5]
    rows = sorted(rows, key=lambda i: name_hash(faces.paths[i]))[:photos]
    clean: list[float] = []  # the clean probes' false-pair rate, measured first

    def report(label: str, degrade: Callable[[np.ndarray, int], np.ndarray]) -> None:
        probes, rank1, drift, sharp, sizes = [], [], [], [], []
        for i in rows:
            face = largest_face(analyzer, degrade(load_rgb(folder / faces.paths[i]), i))
            if face is None:
                continue
            probes.append((face.embedding, faces.identities[i]))
            distances = np.linalg.norm(faces.embeddings - face.embedding, axis=1)
            distances[i] = np.inf
            distances[~faces.found] = np.inf
            same = faces.identities == faces.identities[i]
            rank1.append(distances[same].min() < distances[~same].min())
            drift.append(float(np.linalg.norm(face.embedding - faces.embeddings[i])))
            sharp.append(face.sharpness)
            sizes.append(min(face.box[2:]))
        if len(probes) < 2:
            print(f"  {label:14s} detected {len(probes)}/{len(rows)}")
            return
        vectors, names = np.stack([p[0] for p in probes]), np.array([p[1] for p in probes])
        upper = np.triu_indices(len(names), 1)
        different = (names[:, None] != names[None, :])[upper]
        rate = float((pdist(vectors)[different] < pair_distance).mean())
        if not clean:
            clean.append(rate)
        ratio = f"{rate / clean[0]:5.1f}× clean" if clean[0] else "  (clean 0)"
        print(f"  {label:14s} detected {len(probes):3d}/{len(rows)}  rank-1 {np.mean(rank1):.3f}  "
              f"drift {np.median(drift):.3f}  false pairs {rate:.4f} {ratio}  "
              f"size {np.median(sizes):5.1f}  sharpness {np.median(sharp):6.1f}")

    def shrink(side: float) -> Callable[[np.ndarray, int], np.ndarray]:
        def run(rgb: np.ndarray, i: int) -> np.ndarray:
            factor = side / faces.size[i]
            size = (max(8, round(rgb.shape[1] * factor)), max(8, round(rgb.shape[0] * factor)))
            return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

        return run

    print(f"gate study: {len(rows)} probe photos; false pairs closer than {pair_distance}")
    report("clean", lambda rgb, i: rgb)
    for side in (16, 18, 20, 24, 32):
        report(f"face {side} px", shrink(side))
    for sigma in (1.5, 2.5, 3.5, 5.0):
        report(f"blur σ {sigma}", lambda rgb, i, s=sigma: cv2.GaussianBlur(rgb, (0, 0), s))


# --- Prototypes -------------------------------------------------------------------------


def prototype_study(faces: FaceSet, distances: Distances) -> None:
    """Table 4: a person the user merged from two identities (look-alikes: each identity with
    the one whose mean face is nearest; or random pairs), half the photos of each; do the
    other halves join it (within the join distance), and how many faces of everyone else
    join it wrongly? With one centroid against the person's prototypes."""
    x, ids = faces.embeddings[faces.found], faces.identities[faces.found]
    names = sorted(n for n in set(ids) if (ids == n).sum() >= 6)
    means = np.stack([x[ids == n].mean(axis=0) for n in names])
    apart = squareform(pdist(means))
    np.fill_diagonal(apart, np.inf)
    look_alikes = sorted({tuple(sorted((names[i], names[int(apart[i].argmin())])))
                          for i in range(len(names))})
    ordered = sorted(names, key=name_hash)
    random_pairs = list(zip(ordered[0::2], ordered[1::2]))
    print("\n4. Merged persons: half the photos of two identities merged by the user; the other "
          "halves should join it, nobody else")
    print(f"{'pairs':34s} {'stands for the person':22s} {'joined':>14s} {'strangers joined':>17s}")
    for label, pairs in ((f"{len(look_alikes)} look-alike pairs", look_alikes),
                         (f"{len(random_pairs)} random pairs", random_pairs)):
        for kind in ("one centroid", "prototypes"):
            joined = total = strangers = 0
            for a, b in pairs:
                rows_a, rows_b = np.flatnonzero(ids == a), np.flatnonzero(ids == b)
                member = np.concatenate([rows_a[: len(rows_a) // 2], rows_b[: len(rows_b) // 2]])
                new = np.concatenate([rows_a[len(rows_a) // 2 :], rows_b[len(rows_b) // 2 :]])
                others = np.flatnonzero(~np.isin(ids, [a, b]))
                stand = (x[member].mean(axis=0, keepdims=True) if kind == "one centroid"
                         else person_prototypes(x[member], distances.link))
                joined += int((cdist(x[new], stand).min(axis=1) <= distances.join).sum())
                total += len(new)
                strangers += int((cdist(x[others], stand).min(axis=1) <= distances.join).sum())
            print(f"{label:34s} {kind:22s} {joined:5d}/{total:<5d} {joined / total:.3f} "
                  f"{strangers:17d}")


# --- Report -----------------------------------------------------------------------------

HEADER = (f"{'method':52s} {'B3 P':>6s} {'B3 R':>6s} {'B3 F1':>6s} {'pair P':>7s} {'pair R':>7s} "
          f"{'persons/ids':>11s} {'unassigned':>10s}")


def row(name: str, s: Scores, identities: int) -> str:
    return (f"{name:52s} {s.precision:6.3f} {s.recall:6.3f} {s.f1:6.3f} {s.pair_precision:7.3f} "
            f"{s.pair_recall:7.3f} {round(s.persons):5d}/{identities:<5d} "
            f"{100 * s.unassigned:9.1f}%")


def library_row(name: str, t: Trial) -> str:
    cells = "  ".join(f"{s.precision:.3f}/{s.f1:.3f}" for s in t.scores.values())
    return f"{name:64s} {t.worst_precision:6.3f} {t.mean_f1:7.3f}  {cells}"


def mean_scores(runs: list[Scores]) -> Scores:
    fields = Scores.__dataclass_fields__
    return Scores(*(float(np.mean([getattr(r, f) for r in runs])) for f in fields))


def incremental(gate: QualityGate, params: ClusterParams) -> Method:
    """Ours in two steps: half the photos (by a hash of the path) first, then the rest joins
    with the first step's persons kept as fixed groups."""

    def run(faces: FaceSet) -> np.ndarray:
        first = np.array([name_hash(p) % 2 == 0 for p in faces.paths])
        seedable = passes_quality_gate(faces.size, faces.score, faces.sharpness, faces.pose, gate)
        labels = np.full(len(faces.paths), UNASSIGNED)
        early = first & faces.found
        labels[early] = cluster(faces.embeddings[early], seedable[early], params)
        found = faces.found
        labels[found] = cluster(
            faces.embeddings[found], seedable[found], params, groups=labels[found]
        )
        return labels

    return run


def choosing_table(faces: FaceSet, grids: dict[str, dict[str, Method]],
                   fixed: dict[str, Method]) -> dict[str, str]:
    """Table 1: each family's choice over the libraries; returns the choices."""
    print(f"\n1. Choosing by measurement. Libraries: {', '.join(libraries(faces))} of the photos. "
          f"Per family, the grid point with the best mean F1 while BCubed precision stays ≥ "
          f"{MIN_PRECISION} in every library (else the best worst precision); and the grid "
          f"point best on all photos alone, to show what tuning on one library hides.")
    print(f"{'family: parameters':64s} {'min P':>6s} {'mean F1':>7s}  "
          + "  ".join(f"{name + ' P/F1':>11s}" for name in libraries(faces)))
    chosen: dict[str, str] = {}
    for family, methods in grids.items():
        trials = {label: trial(method, faces) for label, method in methods.items()}
        chosen[family] = choose(trials)
        on_all = {label: t.scores["all"] for label, t in trials.items()}
        alone = max(on_all, key=lambda label: (on_all[label].precision >= MIN_PRECISION,
                                               on_all[label].f1))
        print(library_row(f"{family}: {chosen[family]}", trials[chosen[family]]))
        if alone != chosen[family]:
            print(library_row(f"  {family} best on all photos alone: {alone}", trials[alone]))
    for name, method in fixed.items():
        print(library_row(name, trial(method, faces)))
    return chosen


def all_photos_table(faces: FaceSet, methods: dict[str, Method]) -> dict[str, Scores]:
    """Table 2, the issue's table: every method on all labelled photos."""
    print("\n2. All labelled photos (an unassigned face, and a photo without a face, is a cluster "
          "of its own; persons: clusters of ≥ 2 faces)")
    print(HEADER)
    identities = len(set(faces.identities))
    results = {name: score(method(faces), faces.identities) for name, method in methods.items()}
    for name, s in results.items():
        print(row(name, s, identities))
    return results


def held_out_table(faces: FaceSet, grids: dict[str, dict[str, Method]],
                   fixed: dict[str, Method]) -> dict[str, Scores]:
    """Table 3: chosen on one half of the identities, measured on the other."""
    print("\n3. Held out: chosen (as in 1) on one half of the identities, measured on the other; "
          "mean of both ways round. Left: all photos of the other half; right: its libraries")
    print(f"{HEADER} {'min P':>6s} {'mean F1':>7s}")
    halves = identity_halves(faces)
    held: dict[str, Scores] = {}
    choices: dict[str, list[str]] = {}
    for name in [*fixed, *grids]:
        runs = []
        for tune, test in (halves, halves[::-1]):
            if name in fixed:
                method = fixed[name]
            else:
                tuned = {label: trial(m, faces.subset(tune)) for label, m in grids[name].items()}
                choices.setdefault(name, []).append(choose(tuned))
                method = grids[name][choices[name][-1]]
            runs.append(trial(method, faces.subset(test)))
        held[name] = mean_scores([t.scores["all"] for t in runs])
        worst = np.mean([t.worst_precision for t in runs])
        mean_f1 = np.mean([t.mean_f1 for t in runs])
        label = name if name in fixed else f"{name}, chosen on the other half"
        print(f"{row(label, held[name], round(len(set(faces.identities)) / 2))} "
              f"{worst:6.3f} {mean_f1:7.3f}")
    for family, labels in choices.items():
        print(f"  {family} chosen on each half: {' | '.join(labels)}")
    return held


def evaluate(folder: Path, embedder: str, cache: Path, study: bool) -> dict[str, Scores]:
    """Tables 1-3 and the summary for one embedder; returns the all-photos and held-out
    figures of ours and the peers."""
    faces = embed_folder(folder, cache / f"faces-embeddings-{embedder}.npz", embedder)
    settings = Settings(face_embedder=embedder)
    gate, app = QualityGate.from_settings(settings), ClusterParams.from_settings(settings)
    unit = EMBEDDER_DISTANCES[embedder].link / EMBEDDER_DISTANCES["dlib"].link
    seedable = passes_quality_gate(faces.size, faces.score, faces.sharpness, faces.pose, gate)
    identities = len(set(faces.identities))
    with_two = sum(1 for name in set(faces.identities) if (faces.identities == name).sum() >= 2)
    print(f"\n===== {embedder} =====\n{folder}: {len(faces.paths)} labelled photos, {identities} "
          f"identities ({with_two} with ≥ 2 photos), no face found in {int((~faces.found).sum())}; "
          f"{int((seedable & faces.found).sum())} faces pass the gate {gate}")
    print(f"ours: {app}; the peers' Euclidean distances (dlib's) × {unit:.3g}")

    peers: dict[str, Method] = {
        "Recognize PHP: HDBSCAN, separation 0.35, edge 0.5": on_found(
            lambda x: php_recognize(x, unit)),
        "facerecognition: Chinese whispers 0.4": on_found(
            lambda x: chinese_whispers(x, 0.4 * unit)),
        "Immich: min 3 faces, cosine 0.5": immich_method(cosine=True),
        "Immich's rule at Euclidean 0.5": immich_method(cosine=False, unit=unit),
    }
    fixed = {"ours (app settings)": ours(gate, app), **peers}
    grids = family_grids(gate, app, embedder, unit)
    chosen = choosing_table(faces, grids, fixed)
    results = all_photos_table(faces, {
        "ours (app settings)": fixed["ours (app settings)"],
        "ours incremental: half the photos, then the rest": incremental(gate, app),
        "ours without the quality gate": ours(QualityGate(0, 0, 0, 0), app),
        "ours without the merge step": ours(gate, replace(app, merge_distance=0.0)),
        **peers,
        **{f"{family}: {label}": grids[family][label]
           for family, label in chosen.items() if family != "ours"},
    })
    held = held_out_table(faces, grids, fixed)
    prototype_study(faces, EMBEDDER_DISTANCES[embedder])
    if study:
        print()
        gate_study(folder, faces, app.member_distance, embedder)

    mine, tuned_elsewhere = results["ours (app settings)"], held["ours"]
    others = {k: v for k, v in results.items() if not k.startswith("ours")}
    pool = {k: v for k, v in others.items() if v.precision >= MIN_PRECISION} or others
    rival = max(pool, key=lambda k: pool[k].f1)
    verdict = "best" if mine.f1 > pool[rival].f1 else "NOT best"
    print(f"\nSUMMARY {embedder} ours: BCubed P {mine.precision:.3f} R {mine.recall:.3f} "
          f"F1 {mine.f1:.3f}, persons {mine.persons}/{identities}, unassigned "
          f"{100 * mine.unassigned:.1f}%; F1 {verdict} of {len(others)} others (next with "
          f"P ≥ {MIN_PRECISION}: {rival} {pool[rival].f1:.3f}); chosen on half the identities, "
          f"on the other half: P {tuned_elsewhere.precision:.3f} R {tuned_elsewhere.recall:.3f} "
          f"F1 {tuned_elsewhere.f1:.3f}")
    return {**{f"{k} (all photos)": v for k, v in results.items() if k in fixed},
            **{f"{k} (other half)": v for k, v in held.items() if k in peers},
            "ours, chosen on the other half (other half)": held["ours"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="folder of the caches")
    parser.add_argument("--embedder", choices=EMBEDDERS, action="append",
                        help="one embedder (default: each, side by side)")
    parser.add_argument("--gate-study", action="store_true", help="also measure degraded faces")
    args = parser.parse_args()

    embedders = args.embedder or list(EMBEDDERS)
    figures = {e: evaluate(args.folder, e, args.cache, args.gate_study) for e in embedders}
    print("\nSIDE BY SIDE: BCubed P / R / F1 of each grouping on each embedding")
    names = list(dict.fromkeys(name for f in figures.values() for name in f))
    print(f"{'grouping':68s} " + " ".join(f"{e:>20s}" for e in embedders))
    for name in names:
        cells = [figures[e].get(name) for e in embedders]
        print(f"{name:68s} " + " ".join(
            f"{c.precision:6.3f} {c.recall:6.3f} {c.f1:6.3f}" if c else f"{'':20s}" for c in cells))


if __name__ == "__main__":
    main()
