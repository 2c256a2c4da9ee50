"""How far apart two faces' vectors may be, per embedder: the grouping's distances.

Kept apart from the grouping itself, so that reading them loads none of its libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ex_app.config import Settings


@dataclass(frozen=True)
class Distances:
    """Every distance a face embedder's vectors are compared at."""

    link: float  # longest link inside a new person
    member: float  # a face that drops out of a cluster stays in it up to this link
    merge: float  # new persons whose centroids are this close become one
    join: float  # a loose face joins a person whose centroid is at most this far
    suggestion: float  # persons this close "may be the same person"


# Chosen by bench/faces_quality.py on identity-split halves of the development set (see
# bench/README.md); dlib's are the values tuned before SFace.
EMBEDDER_DISTANCES = {
    "sface": Distances(link=1.1, member=1.05, merge=0.75, join=1.0, suggestion=1.05),
    "dlib": Distances(link=0.55, member=0.5, merge=0.3, join=0.45, suggestion=0.5),
}


SENSITIVITY = {"strict": 0.95, "balanced": 1.0, "loose": 1.05}  # on link, member and join


def face_distances(settings: Settings) -> Distances:
    """The configured embedder's distances at the chosen sensitivity, each replaced by its
    setting where one is set."""
    faces = settings.faces
    base = EMBEDDER_DISTANCES[faces.embedder]
    factor = SENSITIVITY[faces.sensitivity]
    scaled = replace(base, link=base.link * factor, member=base.member * factor,
                     join=base.join * factor)
    chosen = {"link": faces.cluster_distance, "member": faces.member_distance,
              "merge": faces.merge_distance, "join": faces.join_distance,
              "suggestion": faces.suggestion_distance}
    return replace(scaled, **{key: value for key, value in chosen.items() if value is not None})
