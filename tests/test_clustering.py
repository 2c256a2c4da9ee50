"""Faces into persons: the gate, full grouping with user decisions, incremental joining.

Synthetic embeddings test the rules exactly; embeddings of real labelled photos (made by
each embedder) test that the rules hold in SFace's and dlib's spaces at their distances.
"""

from __future__ import annotations

import csv
import hashlib
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.cluster.hierarchy import fcluster, linkage

from ex_app.analyzers.faces import DlibEmbedder, FaceAnalyzer, SFaceEmbedder
from ex_app.people.clustering import (
    UNASSIGNED,
    ClusterParams,
    QualityGate,
    assign_to_persons,
    cluster,
    density_clusters,
    passes_quality_gate,
    person_centroids,
    person_prototypes,
)
from ex_app.people.distances import EMBEDDER_DISTANCES

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
PARAMS = ClusterParams(
    neighbours=10,
    min_faces=2,
    max_distance=0.55,
    member_distance=0.5,
    merge_distance=0.3,
    join_distance=0.45,
)
DIMENSIONS = 128


def blobs(
    rng: np.random.Generator, persons: int, faces: int, spread: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """faces embeddings around each of persons random centres: same person ≈ 0.3 apart,
    different persons ≈ 1.1 apart, as with dlib's descriptors."""
    centres = rng.normal(scale=0.07, size=(persons, DIMENSIONS))
    truth = np.repeat(np.arange(persons), faces)
    return centres[truth] + rng.normal(scale=spread, size=(len(truth), DIMENSIONS)), truth


def strangers(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.normal(scale=0.07, size=(count, DIMENSIONS))


def everyone(count: int) -> np.ndarray:
    return np.ones(count, dtype=bool)


def found_whole(labels: np.ndarray, faces: np.ndarray) -> bool:
    """All these faces in one person."""
    persons = set(labels[faces])
    return len(persons) == 1 and UNASSIGNED not in persons


def is_pure(labels: np.ndarray, truth: np.ndarray) -> bool:
    """No person holds faces of two identities."""
    return all(len(set(truth[labels == p])) == 1 for p in set(labels) - {UNASSIGNED})


# --- Synthetic ---------------------------------------------------------------------------


def test_separate_persons_are_found_whole_and_strangers_stay_unassigned() -> None:
    rng = np.random.default_rng(1)
    people, truth = blobs(rng, persons=6, faces=8)
    vectors = np.vstack([people, strangers(rng, 10)])
    truth = np.concatenate([truth, 100 + np.arange(10)])
    labels = cluster(vectors, everyone(len(vectors)), PARAMS)
    assert is_pure(labels, truth)
    assert [len(set(labels[truth == person])) for person in range(6)] == [1] * 6
    assert UNASSIGNED not in labels[:48]
    assert np.all(labels[48:] == UNASSIGNED)
    assert sorted(set(labels[:48])) == list(range(6))  # new persons numbered from 0


def test_two_faces_close_together_make_a_person_one_face_does_not() -> None:
    rng = np.random.default_rng(2)
    pair, _ = blobs(rng, persons=1, faces=2)
    vectors = np.vstack([pair, strangers(rng, 5)])
    labels = cluster(vectors, everyone(7), PARAMS)
    assert labels[0] == labels[1] != UNASSIGNED
    assert np.all(labels[2:] == UNASSIGNED)
    three = ClusterParams(**{**PARAMS.__dict__, "min_faces": 3})
    no_pairs = np.zeros((0, 2), dtype=int)
    assert np.all(density_clusters(vectors.astype(np.float32), three, no_pairs) == UNASSIGNED)


def test_a_chain_of_links_does_not_merge_two_persons() -> None:
    """Two persons joined by a sparser line of lone faces, each within a link of the next."""
    rng = np.random.default_rng(3)
    people, _ = blobs(rng, persons=2, faces=10)
    start, end = people[:10].mean(axis=0), people[10:].mean(axis=0)
    steps = int(np.ceil(np.linalg.norm(end - start) / 0.45))
    bridge = start + np.linspace(0, 1, steps + 1)[1:-1, None] * (end - start)
    vectors = np.vstack([people, bridge])
    chained = fcluster(linkage(vectors, "single"), PARAMS.max_distance, criterion="distance")
    assert chained[0] == chained[10]  # single linkage at the longest link would merge them
    labels = cluster(vectors, everyone(len(vectors)), PARAMS)
    assert labels[0] != UNASSIGNED and labels[10] != UNASSIGNED
    assert labels[0] != labels[10]


def test_a_cannot_link_pair_never_ends_in_one_person() -> None:
    rng = np.random.default_rng(4)
    vectors, _ = blobs(rng, persons=1, faces=10)
    free = cluster(vectors, everyone(10), PARAMS)
    assert len(set(free)) == 1 and free[0] != UNASSIGNED
    labels = cluster(vectors, everyone(10), PARAMS, cannot_link=np.array([[0, 9], [3, 4]]))
    for a, b in ((0, 9), (3, 4)):
        assert labels[a] == UNASSIGNED or labels[a] != labels[b]


def test_fixed_groups_are_kept_never_merged_and_may_grow() -> None:
    rng = np.random.default_rng(5)
    people, truth = blobs(rng, persons=2, faces=10)
    # the user split person 0 into groups 7 and 9 (one person, as far as embeddings go)
    groups = np.full(20, UNASSIGNED)
    groups[[0, 1, 2]] = 7
    groups[[3, 4, 5]] = 9
    labels = cluster(people, everyone(20), PARAMS, groups=groups)
    assert np.all(labels[:3] == 7) and np.all(labels[3:6] == 9)
    assert set(labels[6:10]) <= {7, 9}  # the rest of person 0 joined one of the two
    new = set(labels[10:])
    assert len(new) == 1 and new.pop() == 10  # person 1 is new, numbered above the groups


def test_a_new_cluster_near_a_fixed_group_joins_it() -> None:
    rng = np.random.default_rng(6)
    people, _ = blobs(rng, persons=1, faces=12)
    groups = np.full(12, UNASSIGNED)
    groups[:2] = 4
    labels = cluster(people, everyone(12), PARAMS, groups=groups)
    assert np.all(labels == 4)


def test_a_face_removed_from_a_person_never_returns_to_it() -> None:
    rng = np.random.default_rng(7)
    people, _ = blobs(rng, persons=1, faces=8)
    groups = np.full(8, UNASSIGNED)
    groups[:5] = 2
    labels = cluster(people, everyone(8), PARAMS, groups=groups, forbidden=np.array([[6, 2]]))
    assert labels[6] != 2
    assert labels[5] == 2 and labels[7] == 2


def test_faces_below_the_gate_never_seed_a_person_but_can_join_one() -> None:
    rng = np.random.default_rng(8)
    people, truth = blobs(rng, persons=2, faces=8)
    seedable = everyone(16)
    seedable[8:] = False  # person 1 only has unsure faces
    seedable[[0, 1]] = False  # person 0 has two unsure faces among six good ones
    labels = cluster(people, seedable, PARAMS)
    assert np.all(labels[8:] == UNASSIGNED)
    assert len(set(labels[:8])) == 1 and labels[0] != UNASSIGNED


def test_the_gate_checks_size_score_sharpness_and_pose() -> None:
    gate = QualityGate(min_size=20, min_score=0.85, min_sharpness=30, min_pose=0.2)
    size = np.array([40, 19, 40, 40, 40])
    score = np.array([0.9, 0.9, 0.84, 0.9, 0.9])
    sharpness = np.array([100, 100, 100, 29, 100])
    pose = np.array([0.8, 0.8, 0.8, 0.8, 0.19])
    passed = passes_quality_gate(size, score, sharpness, pose, gate)
    assert passed.tolist() == [True, False, False, False, False]


def test_assignment_joins_the_nearest_allowed_person_and_leaves_strangers() -> None:
    rng = np.random.default_rng(9)
    people, truth = blobs(rng, persons=3, faces=6)
    ids, centroids = person_centroids(people.astype(np.float32), truth)
    newcomers = people[[0, 6, 12]] + rng.normal(scale=0.02, size=(3, DIMENSIONS))
    faces = np.vstack([newcomers, strangers(rng, 2)])
    rows = assign_to_persons(faces, centroids, PARAMS.join_distance)
    assert ids[rows[:3]].tolist() == [0, 1, 2]
    assert rows[3:].tolist() == [UNASSIGNED, UNASSIGNED]
    barred = assign_to_persons(faces, centroids, PARAMS.join_distance, forbidden=np.array([[1, 1]]))
    assert barred[1] == UNASSIGNED and barred[0] == 0


def test_a_person_of_two_looks_has_a_prototype_for_each() -> None:
    rng = np.random.default_rng(12)
    people, truth = blobs(rng, persons=2, faces=6)
    one = person_prototypes(people[truth == 0], PARAMS.max_distance)
    assert one.shape == (1, DIMENSIONS) and np.allclose(one[0], people[truth == 0].mean(axis=0))
    two = person_prototypes(np.vstack([people, strangers(rng, 1)]), PARAMS.max_distance)
    assert two.shape == (2, DIMENSIONS)  # the lone stranger makes no prototype
    means = np.stack([people[truth == t].mean(axis=0) for t in (0, 1)])
    assert np.abs(np.sort(two, axis=0) - np.sort(means, axis=0)).max() < 1e-5


def test_new_faces_of_either_look_join_a_merged_person_and_a_stranger_does_not() -> None:
    """The user merged two looks into one person: a new face of either joins it, though the
    mean of both is farther than the join distance from each."""
    rng = np.random.default_rng(13)
    people, truth = blobs(rng, persons=2, faces=6)
    newcomers = people[[0, 6]] + rng.normal(scale=0.02, size=(2, DIMENSIONS))
    assert (np.linalg.norm(newcomers - people.mean(axis=0), axis=1) > PARAMS.join_distance).all()
    faces = np.vstack([people, newcomers, strangers(rng, 1)])
    groups = np.concatenate([np.zeros(len(people), int), np.full(3, UNASSIGNED)])
    labels = cluster(faces, np.zeros(len(faces), bool), PARAMS, groups=groups)
    assert labels[-3:].tolist() == [0, 0, UNASSIGNED]


def test_regrouping_20000_faces_never_holds_a_distance_matrix() -> None:
    rng = np.random.default_rng(10)
    vectors, truth = blobs(rng, persons=1000, faces=20)
    vectors = vectors.astype(np.float32)
    tracemalloc.start()
    try:
        labels = cluster(vectors, everyone(len(vectors)), PARAMS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    matrix = len(vectors) ** 2 * 8
    assert peak < matrix / 50, f"peak {peak / 1e6:.0f} MB against {matrix / 1e6:.0f} MB for n × n"
    assert is_pure(labels, truth)
    assert len(set(labels) - {UNASSIGNED}) >= 990


# --- Real photos --------------------------------------------------------------------------


def sample_photos() -> tuple[list[Path], np.ndarray]:
    """12 identities × 5 photos and 10 identities × 1 photo, picked by a hash of the name."""
    with open(FACES / "labels.csv", newline="") as handle:
        by_identity: dict[str, list[str]] = {}
        for row in csv.DictReader(handle):
            if not row["identity"].startswith("__"):
                by_identity.setdefault(row["identity"], []).append(row["path"])
    names = sorted(by_identity, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    rich = [n for n in names if len(by_identity[n]) >= 5][:12]
    lone = [n for n in names if n not in rich][:10]
    picks = [(n, p) for n in rich for p in sorted(by_identity[n])[:5]]
    picks += [(n, sorted(by_identity[n])[0]) for n in lone]
    return [FACES / p for _, p in picks], np.array([n for n, _ in picks])


def embedder_params(embedder: str) -> ClusterParams:
    """The grouping rules at an embedder's own distances."""
    distances = EMBEDDER_DISTANCES[embedder]
    return ClusterParams(
        neighbours=10, min_faces=2, max_distance=distances.link, member_distance=distances.member,
        merge_distance=distances.merge, join_distance=distances.join,
    )


@pytest.fixture(scope="module", params=["sface", "dlib"])
def real_faces(model_store, request) -> tuple[np.ndarray, np.ndarray, np.ndarray, ClusterParams]:
    """(embeddings, identities, seedable, params) of the sample's largest face per photo, by
    each embedder, with its grouping distances."""
    if request.param == "sface":
        embedder = SFaceEmbedder(model_store.path("face_recognition_sface"))
    else:
        embedder = DlibEmbedder(
            model_store.path("dlib_face_landmarks_5"), model_store.path("dlib_face_embedder_onnx")
        )
    analyzer = FaceAnalyzer(model_store.path("face_detection_yunet"), embedder)
    gate = QualityGate(min_size=16, min_score=0.85, min_sharpness=30, min_pose=0.2)
    paths, identities = sample_photos()
    rows = []
    for path, identity in zip(paths, identities):
        faces = analyzer.analyze(np.asarray(Image.open(path).convert("RGB")))
        if faces:
            face = max(faces, key=lambda f: f.box[2] * f.box[3])
            seedable = passes_quality_gate(
                [min(face.box[2:])], [face.score], [face.sharpness], [face.pose], gate
            )[0]
            rows.append((face.embedding, identity, seedable))
    assert len(rows) >= len(paths) - 1
    embeddings, names, seedable = zip(*rows)
    return np.stack(embeddings), np.array(names), np.array(seedable), embedder_params(request.param)


def test_real_faces_group_into_pure_persons_and_lone_faces_stay_unassigned(real_faces) -> None:
    embeddings, identities, seedable, params = real_faces
    labels = cluster(embeddings, seedable, params)
    assert is_pure(labels, identities)
    counts = Counter(identities)
    rich = [n for n in counts if counts[n] >= 5]
    whole = [n for n in rich if found_whole(labels, identities == n)]
    assert len(whole) >= 10, f"only {len(whole)} of {len(rich)} identities found whole"
    lone = np.isin(identities, [n for n in counts if counts[n] == 1])
    assert np.all(labels[lone] == UNASSIGNED)


def test_real_new_faces_join_their_person_and_a_stranger_does_not(real_faces) -> None:
    embeddings, identities, seedable, params = real_faces
    counts = Counter(identities)
    last = np.array([counts[n] >= 5 and i == np.flatnonzero(identities == n).max()
                     for i, n in enumerate(identities)])
    lone = np.isin(identities, [n for n in counts if counts[n] == 1])
    known = ~last & ~lone
    labels = cluster(embeddings[known], seedable[known], params)
    ids, centroids = person_centroids(embeddings[known], labels)
    rows = assign_to_persons(embeddings[last | lone], centroids, params.join_distance)
    newcomers = identities[last | lone]
    person_identity = {p: identities[known][labels == p][0] for p in ids}
    joined = rows != UNASSIGNED
    assert all(person_identity[ids[r]] == n for r, n in zip(rows[joined], newcomers[joined]))
    is_last = last[last | lone]
    assert joined[is_last].sum() >= 10
    assert not joined[~is_last].any()
