"""Faces into persons: the quality gate, the full grouping and the incremental assignment.

Pure functions of numpy arrays (128-D face vectors, Euclidean distance); the caller decides
which faces are free and which belong to persons the user confirmed. Each embedder has its
own distances (:data:`EMBEDDER_DISTANCES`): SFace's vectors are unit length (distance
sqrt(2 − 2·cosine)), dlib's are raw descriptors.

The algorithm, chosen by measurement (``bench/faces_quality.py`` compares it with DBSCAN,
HDBSCAN, Chinese whispers, average and complete linkage and the peers' methods, on all
photos, on sparse samples of them and on identities held out):

1. **Gate.** A face may seed a person only when its box is big enough, the detector is
   sure, it is sharp and roughly frontal (:func:`passes_quality_gate`). Faces below the
   gate are kept ("unsure"): they may join a person in step 5 but never start or shape one.
2. **Graph.** Each seedable free face is linked to its ``neighbours`` nearest seedable free
   faces (exact k-nearest-neighbour search in chunks: memory n × k, never n × n). Links
   longer than ``max_distance`` are dropped: no new person spans a longer link.
3. **Density clusters** (HDBSCAN, Campello et al. 2013, with min_samples 1, on that graph).
   Kruskal's algorithm over the links builds the single-linkage forest and refuses every
   merge that would put two cannot-linked faces together. The forest is condensed with
   ``min_faces`` as the smallest cluster and clusters are chosen by excess of mass; each
   tree is born at 1 / ``max_distance``. HDBSCAN counts a face that drops out of a chosen
   cluster as a member; here it stays a member only when its own link into the cluster is
   at most ``member_distance`` (otherwise lone strangers ride in on a long link). Faces in
   no cluster stay unassigned. Larger min_samples merged small identities in sparse
   libraries, and no separate "min cluster separation" helped, so neither is a setting.
4. **Merging.** Persons whose centroids lie within ``merge_distance`` become one, closest
   pairs first (excess of mass sometimes splits a varied person), unless both are fixed
   groups or the two hold a cannot-link pair. Fixed groups (persons the user confirmed)
   are never split and never merged with each other; a new cluster may grow one, less any
   face the group forbids (that face goes on to step 5, which never puts it back).
5. **Joining.** Every free face still unassigned (noise, or below the gate) joins the
   person with the nearest prototype within ``join_distance`` that no constraint forbids,
   nearest faces first. :func:`assign_to_persons` is the same rule for the incremental path.

A person's **prototypes** (:func:`person_prototypes`) stand for it when faces join: the means
of the groups its faces fall into when linked at ``link`` distance (up to
:data:`MAX_PROTOTYPES`, largest first). One mean is enough for a person of one look; for a
person the user built from faces far apart (two look-alikes merged, one human over decades)
the single mean lies between them, attracting neither well and strangers more:
bench/faces_quality.py measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.neighbors import NearestNeighbors

from ex_app.people.distances import face_distances

if TYPE_CHECKING:
    from ex_app.config import Settings

UNASSIGNED = -1
DISTANCE_FLOOR = 1e-6  # keeps 1 / distance finite for duplicate photos
CENTROID_CANDIDATES = 8  # nearest prototypes looked at when the nearest one is forbidden
MAX_PROTOTYPES = 4  # per person
PROTOTYPE_NEIGHBOURS = 10  # k of the graph that splits a person's faces into groups


@dataclass(frozen=True)
class QualityGate:
    """The least a face needs to seed a person."""

    min_size: float  # shorter side of the face box, pixels
    min_score: float  # detection score
    min_sharpness: float  # analyzers.faces.box_sharpness: Laplacian variance at 64×64
    min_pose: float  # analyzers.faces.frontality, 0..1

    def admits(self, face) -> bool:
        """Whether one face (anything with w, h, score, sharpness and pose) passes the gate."""
        size = min(face.w, face.h)
        return bool(passes_quality_gate(size, face.score, face.sharpness, face.pose, self))

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityGate:
        faces = settings.faces
        return cls(faces.gate_min_size, faces.gate_min_score, faces.gate_min_sharpness,
                   faces.gate_min_pose)


@dataclass(frozen=True)
class ClusterParams:
    """How faces group into persons; distances are Euclidean between face vectors."""

    neighbours: int  # k of the k-nearest-neighbour graph
    min_faces: int  # smallest new person
    max_distance: float  # longest link inside a new person
    member_distance: float  # a face that drops out of a cluster stays in it up to this link
    merge_distance: float  # persons whose centroids are this close become one
    join_distance: float  # a loose face joins a person whose centroid is at most this far

    def __post_init__(self) -> None:
        if self.neighbours < 1:
            raise ValueError("the graph needs at least 1 neighbour per face")
        if self.min_faces < 2:
            raise ValueError("a person needs at least 2 faces")

    @classmethod
    def from_settings(cls, settings: Settings) -> ClusterParams:
        found = face_distances(settings)
        return cls(settings.faces.cluster_neighbours, settings.faces.min_faces_per_person,
                   found.link, found.member, found.merge, found.join)


def passes_quality_gate(
    size: np.ndarray, score: np.ndarray, sharpness: np.ndarray, pose: np.ndarray, gate: QualityGate
) -> np.ndarray:
    """True for each face good enough to seed a person (arrays of equal length, or numbers)."""
    return ((np.asarray(size) >= gate.min_size) & (np.asarray(score) >= gate.min_score)
            & (np.asarray(sharpness) >= gate.min_sharpness) & (np.asarray(pose) >= gate.min_pose))


def cluster(
    embeddings: np.ndarray, seedable: np.ndarray, params: ClusterParams, *,
    groups: np.ndarray | None = None, forbidden: np.ndarray | None = None,
    cannot_link: np.ndarray | None = None,
) -> np.ndarray:
    """A person label per face: fixed groups keep theirs, new persons get new numbers.

    - ``seedable``: bool per face, from :func:`passes_quality_gate`.
    - ``groups``: per face, the id (≥ 0) of a fixed group (a person the user confirmed or
      named) or UNASSIGNED for a free face. Fixed faces keep their group.
    - ``forbidden``: (m, 2) rows of face index, group id: that face never joins that group
      (the user removed it from the person).
    - ``cannot_link``: (m, 2) rows of two face indices that never share a person (the user
      said so, or they are two faces of one photo).

    Returns, per face, a fixed group id, a new person id (numbered from one above the
    largest group id, in order of each person's first face), or UNASSIGNED.
    """
    vectors = np.asarray(embeddings, dtype=np.float32)
    labels = np.full(len(vectors), UNASSIGNED) if groups is None else np.array(groups, dtype=int)
    fixed = labels != UNASSIGNED
    constraints = _Constraints(len(vectors), forbidden, cannot_link)
    first_new = int(labels.max(initial=UNASSIGNED)) + 1

    seeds = np.flatnonzero(~fixed & np.asarray(seedable, dtype=bool))
    found = density_clusters(vectors[seeds], params, constraints.pairs_within(seeds))
    labels[seeds] = np.where(found == UNASSIGNED, UNASSIGNED, found + first_new)
    _merge_persons(vectors, labels, first_new, params.merge_distance, constraints)
    for face in np.flatnonzero(~fixed & (labels != UNASSIGNED) & (labels < first_new)):
        group, labels[face] = labels[face], UNASSIGNED  # joined a group: unless it may not
        if constraints.allows(int(face), int(group), labels):
            labels[face] = group
    labels[~fixed] = _renumber(labels[~fixed], first_new)

    person_ids, prototypes = all_prototypes(vectors, labels, params.max_distance)
    loose = np.flatnonzero(labels == UNASSIGNED)
    candidates = _nearest_within(vectors[loose], prototypes, params.join_distance)
    for face, row in sorted(zip(loose, candidates), key=lambda pair: (_nearest(pair[1]), pair[0])):
        for _, index in row:
            if constraints.allows(int(face), int(person_ids[index]), labels):
                labels[face] = person_ids[index]
                break
    return labels


def assign_to_persons(embeddings: np.ndarray, centroids: np.ndarray, join_distance: float,
                      forbidden: np.ndarray | None = None) -> np.ndarray:
    """For each new face, the row of the nearest allowed centroid within join_distance, or -1.

    ``forbidden``: (m, 2) rows of face row, centroid row that must not be chosen.
    """
    vectors = np.asarray(embeddings, dtype=np.float32)
    banned = {(int(face), int(row)) for face, row in _pairs(forbidden)}
    candidates = _nearest_within(vectors, np.asarray(centroids, dtype=np.float32), join_distance)
    return np.array([next((row for _, row in rows if (face, row) not in banned), UNASSIGNED)
                     for face, rows in enumerate(candidates)], dtype=int)


def person_centroids(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The person ids present in labels and the mean embedding of each, in id order."""
    assigned = labels != UNASSIGNED
    person_ids, rows = np.unique(labels[assigned], return_inverse=True)
    sums = np.zeros((len(person_ids), embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, rows, embeddings[assigned])
    return person_ids, (sums / np.bincount(rows)[:, None]).astype(np.float32)


def person_prototypes(embeddings: np.ndarray, link: float) -> np.ndarray:
    """A person's prototypes: the means of the groups of two or more faces its faces form
    when faces at most link apart are joined (through each face's nearest neighbours), the
    largest MAX_PROTOTYPES groups, largest first; the one mean of all when fewer than two such
    groups form."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if len(vectors) < 3:
        return vectors.mean(axis=0, keepdims=True)
    distances, neighbours = _nearest_neighbours(vectors, PROTOTYPE_NEIGHBOURS)
    sets = _DisjointSets(len(vectors), np.zeros((0, 2), dtype=int))
    for face, (row_distances, row_neighbours) in enumerate(zip(distances, neighbours)):
        for distance, other in zip(row_distances, row_neighbours):
            if distance <= link:
                sets.union(face, int(other))
    roots = np.array([sets.find(face) for face in range(len(vectors))])
    groups, sizes = np.unique(roots, return_counts=True)
    order = groups[np.argsort(-sizes, kind="stable")][:MAX_PROTOTYPES]
    order = [root for root in order if (roots == root).sum() >= 2]  # a lone face: no prototype
    if len(order) < 2:
        return vectors.mean(axis=0, keepdims=True)
    return np.stack([vectors[roots == root].mean(axis=0) for root in order]).astype(np.float32)


def all_prototypes(embeddings: np.ndarray, labels: np.ndarray,
                   link: float) -> tuple[np.ndarray, np.ndarray]:
    """Per prototype row, its person id, and the prototypes of every person in labels."""
    person_ids, rows = [], []
    for person in np.unique(labels[labels != UNASSIGNED]):
        found = person_prototypes(embeddings[labels == person], link)
        person_ids += [int(person)] * len(found)
        rows.append(found)
    if not rows:
        return np.zeros(0, dtype=int), np.zeros((0, embeddings.shape[1]), dtype=np.float32)
    return np.array(person_ids, dtype=int), np.vstack(rows)


def density_clusters(vectors: np.ndarray, params: ClusterParams,
                     cannot_link: np.ndarray) -> np.ndarray:
    """Steps 2 and 3: a cluster number per face (0, 1, … in order of first face) or UNASSIGNED.

    ``cannot_link``: (m, 2) rows of face indices into ``vectors``.
    """
    count = len(vectors)
    if count < max(params.min_faces, 2):
        return np.full(count, UNASSIGNED)
    distances, neighbours = _nearest_neighbours(vectors, params.neighbours)
    sources = np.repeat(np.arange(count), neighbours.shape[1])
    keep = distances.ravel() <= params.max_distance
    merges = _single_linkage(count, sources[keep], neighbours.ravel()[keep],
                             distances.ravel()[keep], cannot_link)
    numbers = _excess_of_mass(count, merges, params.min_faces, 1.0 / params.max_distance)
    numbers[merges.leaf_link > params.member_distance] = UNASSIGNED
    sizes = np.bincount(numbers[numbers != UNASSIGNED], minlength=1)
    too_small = sizes[np.maximum(numbers, 0)] < params.min_faces
    numbers[(numbers != UNASSIGNED) & too_small] = UNASSIGNED
    return _renumber(numbers, 0)


class _DisjointSets:
    """Union-find that refuses to join two sets holding a cannot-link pair or two anchors."""

    def __init__(self, count: int, cannot_link: np.ndarray, anchored: np.ndarray | None = None):
        self.parent = list(range(count))
        self.anchored = [False] * count if anchored is None else [bool(a) for a in anchored]
        self.blocked = _partners(cannot_link)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> int | None:
        """Join the sets of a and b; the new root, or None when already one or refused."""
        a, b = self.find(a), self.find(b)
        if a == b or (self.anchored[a] and self.anchored[b]):
            return None
        small, large = sorted((a, b), key=lambda root: len(self.blocked.get(root, ())))
        if any(self.find(member) == large for member in self.blocked.get(small, ())):
            return None
        self.blocked.setdefault(large, set()).update(self.blocked.pop(small, ()))
        self.anchored[large] = self.anchored[large] or self.anchored[small]
        self.parent[small] = large
        return large


@dataclass
class _Forest:
    """The single-linkage forest: merge i joins dendrogram nodes left[i] and right[i]."""

    left: list[int]
    right: list[int]
    density: list[float]  # 1 / link length at each merge
    size: list[int]  # faces under each node, leaves first
    roots: list[int]  # the top node of each tree
    leaf_link: np.ndarray  # per face, the length of the link that first joined it (inf: none)


def _single_linkage(count: int, sources: np.ndarray, targets: np.ndarray, lengths: np.ndarray,
                    cannot_link: np.ndarray) -> _Forest:
    """Kruskal's algorithm, skipping links that would join cannot-linked faces."""
    sets = _DisjointSets(count, cannot_link)
    top = list(range(count))  # set root -> its dendrogram node
    forest = _Forest([], [], [], [1] * count, [], np.full(count, np.inf))
    for edge in np.argsort(lengths, kind="stable"):
        a, b = sets.find(int(sources[edge])), sets.find(int(targets[edge]))
        root = sets.union(a, b)
        if root is None:
            continue
        length = float(lengths[edge])
        for node in (top[a], top[b]):
            if node < count:
                forest.leaf_link[node] = length
        forest.left.append(top[a])
        forest.right.append(top[b])
        forest.density.append(1.0 / max(length, DISTANCE_FLOOR))
        forest.size.append(forest.size[top[a]] + forest.size[top[b]])
        top[root] = count + len(forest.left) - 1
    forest.roots = sorted({top[sets.find(face)] for face in range(count)})
    return forest


def _excess_of_mass(count: int, forest: _Forest, min_size: int, birth_density: float) -> np.ndarray:
    """HDBSCAN's condensed tree and excess-of-mass choice: a chosen cluster per face or UNASSIGNED.

    Walks the forest from the top; a split where both sides have min_size faces starts two
    clusters, a smaller side falls out of its cluster. Cluster 0 is a virtual root above
    all trees that is never chosen.
    """
    nodes = count + len(forest.left)
    owner = np.zeros(nodes, dtype=int)  # the condensed cluster each dendrogram node lies in
    fallen = np.zeros(nodes, dtype=bool)
    birth, stability, parent = [0.0], [0.0], [-1]

    def new_cluster(parent_cluster: int, density: float) -> int:
        birth.append(density)
        stability.append(0.0)
        parent.append(parent_cluster)
        return len(birth) - 1

    for root in forest.roots:
        if forest.size[root] >= min_size:
            owner[root] = new_cluster(0, birth_density)
        else:
            fallen[root] = True
    for node in range(nodes - 1, count - 1, -1):
        merge = node - count
        children = (forest.left[merge], forest.right[merge])
        current = owner[node]
        if fallen[node]:
            owner[list(children)] = current
            fallen[list(children)] = True
            continue
        density = forest.density[merge]
        big = [forest.size[child] >= min_size for child in children]
        if all(big):
            stability[current] += forest.size[node] * (density - birth[current])
            for child in children:
                owner[child] = new_cluster(current, density)
            continue
        for child, is_big in zip(children, big):
            owner[child] = current
            if not is_big:
                fallen[child] = True
                stability[current] += forest.size[child] * (density - birth[current])

    clusters = len(birth)
    chosen = np.zeros(clusters, dtype=bool)
    below = np.zeros(clusters)  # the best total stability of chosen clusters under each one
    for c in range(clusters - 1, 0, -1):
        chosen[c] = stability[c] >= below[c]
        below[parent[c]] += stability[c] if chosen[c] else below[c]
    final = np.full(clusters, UNASSIGNED)
    for c in range(1, clusters):
        above = final[parent[c]]
        final[c] = above if above != UNASSIGNED else (c if chosen[c] else UNASSIGNED)
    return final[owner[:count]]


def _merge_persons(vectors: np.ndarray, labels: np.ndarray, first_new: int,
                   merge_distance: float, constraints: _Constraints) -> None:
    """Step 4: persons with centroids within merge_distance become one, closest pairs first.

    Fixed groups (ids below first_new) are anchors: two never merge, and a merged person
    takes the group's id. Two persons holding a cannot-link pair of free faces never merge;
    faces a group may not take are the caller's to send away afterwards.
    """
    person_ids, centroids = person_centroids(vectors, labels)
    if len(person_ids) < 2:
        return
    row_of = np.full(int(person_ids.max()) + 1, -1)
    row_of[person_ids] = np.arange(len(person_ids))
    apart = constraints.person_pairs(labels, row_of, first_new)
    sets = _DisjointSets(len(person_ids), apart, person_ids < first_new)
    search = NearestNeighbors(radius=merge_distance, algorithm="brute").fit(centroids)
    distances, neighbours = search.radius_neighbors(sort_results=True)
    pairs = [(float(d), a, int(b)) for a, (ds, bs) in enumerate(zip(distances, neighbours))
             for d, b in zip(ds, bs) if a < b]
    for _, a, b in sorted(pairs):
        sets.union(a, b)
    name: dict[int, int] = {}  # set root -> the smallest person id in it: its fixed group if any
    for row in range(len(person_ids)):  # person_ids ascend
        name.setdefault(sets.find(row), int(person_ids[row]))
    assigned = labels != UNASSIGNED
    rows = row_of[labels[assigned]]
    labels[assigned] = [name[sets.find(int(row))] for row in rows]


def _renumber(labels: np.ndarray, first: int) -> np.ndarray:
    """Labels from first upwards, in order of each label's first face; labels below first
    (fixed groups) and UNASSIGNED stay."""
    result = np.array(labels, dtype=int)
    new = result >= first
    _, first_seen, inverse = np.unique(result[new], return_index=True, return_inverse=True)
    rank = np.empty(len(first_seen), dtype=int)
    rank[np.argsort(first_seen)] = np.arange(len(first_seen))
    result[new] = first + rank[inverse]
    return result


class _Constraints:
    """The user's decisions: faces barred from groups, and faces that never share a person."""

    def __init__(self, count: int, forbidden: np.ndarray | None, cannot_link: np.ndarray | None):
        self.count = count
        self.cannot_link = _pairs(cannot_link)
        self.barred: dict[int, set[int]] = {}
        for face, group in _pairs(forbidden):
            self.barred.setdefault(int(face), set()).add(int(group))
        self.apart = _partners(self.cannot_link)

    def allows(self, face: int, person: int, labels: np.ndarray) -> bool:
        """Whether face may join person, given everyone's current labels."""
        return person not in self.barred.get(face, ()) and not any(
            labels[other] == person for other in self.apart.get(face, ()))

    def pairs_within(self, faces: np.ndarray) -> np.ndarray:
        """The cannot-link pairs among faces, as indices into faces."""
        position = np.full(self.count, -1)
        position[faces] = np.arange(len(faces))
        pairs = position[self.cannot_link]
        return pairs[(pairs >= 0).all(axis=1)]

    def person_pairs(self, labels: np.ndarray, row_of: np.ndarray, first_new: int) -> np.ndarray:
        """Pairs of rows of new persons that hold the two faces of a cannot-link pair."""
        pairs = self.cannot_link[(labels[self.cannot_link] >= first_new).all(axis=1)]
        return row_of[labels[pairs]]


def _pairs(rows: np.ndarray | None) -> np.ndarray:
    return np.asarray([] if rows is None else rows, dtype=int).reshape(-1, 2)


def _partners(pairs: np.ndarray | None) -> dict[int, set[int]]:
    """Per face of any pair, the faces it is paired with (both ways)."""
    partners: dict[int, set[int]] = {}
    for a, b in _pairs(pairs).tolist():
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    return partners


def _nearest_within(vectors: np.ndarray, centroids: np.ndarray,
                    max_distance: float) -> list[list[tuple[float, int]]]:
    """Per vector, (distance, centroid row) of its nearest centroids within max_distance."""
    if not len(vectors) or not len(centroids):
        return [[] for _ in range(len(vectors))]
    distances, rows = _nearest_neighbours(centroids, CENTROID_CANDIDATES, vectors)
    return [[(float(d), int(r)) for d, r in zip(ds, rs) if d <= max_distance]
            for ds, rs in zip(distances, rows)]


def _nearest_neighbours(points: np.ndarray, k: int,
                        queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances and rows of each query's k nearest points (exact, searched in chunks); without
    queries, of each point's k nearest other points. k is capped at what there is."""
    k = min(k, len(points) - (queries is None))
    return NearestNeighbors(n_neighbors=k, algorithm="brute").fit(points).kneighbors(queries)


def _nearest(candidates: list[tuple[float, int]]) -> float:
    return candidates[0][0] if candidates else np.inf
