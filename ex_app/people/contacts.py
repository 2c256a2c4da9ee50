"""Names from contacts: a person whose faces match a contact's photo is offered that name.

Each contact photo is decoded and searched with the app's own face detector and embedder; a
photo is kept only when it shows exactly one face and that face passes the quality gate
(:func:`contact_face`). A person is offered the name of the nearest contact face when it lies
within the embedder's contact distance of one of the person's prototypes and clearly nearer
than any contact of another name (:func:`suggest_names`). Nothing is named without the user:
:func:`accept` names the person (which confirms it, as any naming does), :func:`reject`
records that it is not that contact, and that name is never offered to it again. Persons
with a name, hidden ones and persons of another owner are never offered one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session

from ex_app.media.errors import MediaError
from ex_app.media.images import decode_image
from ex_app.people import operations
from ex_app.people.clustering import QualityGate, passes_quality_gate
from ex_app.people.operations import NotFound, Owner
from ex_app.store import contacts as store

if TYPE_CHECKING:
    from ex_app.analyzers.faces import FaceAnalyzer

# The largest distance between a contact's face and a person's nearest prototype at which
# the contact's name is offered, per embedder; and the least ratio by which a contact of
# another name must lie farther. Measured by bench/contacts_quality.py (bench/README.md).
CONTACT_DISTANCES = {"sface": 0.9, "dlib": 0.4}
CONTACT_MARGIN = 1.1


@dataclass(frozen=True)
class NameSuggestion:
    """Person ``person_id`` may be the contact ``name`` (``distance``: to its prototypes)."""

    person_id: int
    name: str
    distance: float


def contact_face(
    analyzer: FaceAnalyzer, gate: QualityGate, photo: bytes, max_side: int, max_pixels: int
) -> tuple[np.ndarray | None, str]:
    """The embedding of the one clear face of a contact photo, or None and why not."""
    try:
        image = decode_image(photo, max_side=max_side, max_pixels=max_pixels)
    except MediaError as error:
        return None, f"the photo cannot be read: {error}"
    faces = analyzer.analyze(image.pixels)
    if len(faces) != 1:
        return None, f"the photo shows {len(faces)} faces, not one"
    face = faces[0]
    size = min(face.box[2], face.box[3]) / (image.scale or 1.0)
    if not passes_quality_gate(size, face.score, face.sharpness, face.pose, gate):
        return None, "the face in the photo is too small, blurred or turned away"
    return face.embedding, ""


def suggest_names(
    session: Session, owner: str | None, embedder: str, distance: float | None = None,
    margin: float = CONTACT_MARGIN,
) -> list[NameSuggestion]:
    """For each of the owner's unnamed persons, the contact name it may have, nearest first."""
    limit = CONTACT_DISTANCES[embedder] if distance is None else distance
    faces = store.contact_faces(session, owner, embedder)
    persons = store.unnamed_persons(session, owner, embedder)
    if not faces or not persons:
        return []
    names = [f.name for f in faces]
    vectors = np.stack([f.embedding for f in faces])
    rejected = store.rejected_names(session, [p for p, _ in persons])
    found = []
    for person_id, prototypes in persons:
        gaps = np.linalg.norm(vectors[:, None, :] - prototypes[None, :, :], axis=2).min(axis=1)
        nearest: dict[str, float] = {}
        for name, gap in zip(names, gaps.tolist()):
            if name not in rejected.get(person_id, ()):
                nearest[name] = min(gap, nearest.get(name, np.inf))
        if not nearest:
            continue
        ranked = sorted(nearest.items(), key=lambda item: item[1])
        name, gap = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else np.inf
        if gap <= limit and runner_up >= gap * margin:
            found.append(NameSuggestion(person_id, name, round(float(gap), 4)))
    return sorted(found, key=lambda s: s.distance)


def suggestion_for(session: Session, person_id: int, owner: Owner, embedder: str,
                   distance: float | None = None) -> NameSuggestion | None:
    """The name offered to one of the owner's persons now (NotFound: not the owner's)."""
    person = operations._person(session, person_id, owner)  # noqa: SLF001 (owner check)
    found = suggest_names(session, person.owner, embedder, distance)
    return next((s for s in found if s.person_id == person_id), None)


def accept(session: Session, person_id: int, name: str, owner: Owner, embedder: str,
           distance: float | None = None) -> None:
    """Name the person with the contact name offered to it; NotFound when that name is not
    (or no longer) offered to it."""
    offered = suggestion_for(session, person_id, owner, embedder, distance)
    if offered is None or offered.name != name:
        raise NotFound(f"{name!r} is not offered to person {person_id}")
    operations.rename(session, person_id, name, owner=owner)


def reject(session: Session, person_id: int, name: str, owner: Owner) -> None:
    """The person is not the contact of that name: never offered again."""
    operations._person(session, person_id, owner)  # noqa: SLF001 (owner check)
    store.reject_name(session, person_id, name)
