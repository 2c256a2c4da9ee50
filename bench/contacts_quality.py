"""Names from contacts: how often a person is offered the right contact name, and a wrong one.

    .venv/bin/python bench/contacts_quality.py [FOLDER] [--embedder sface|dlib] [--contacts 30]

FOLDER holds ``<identity>/<images>`` and ``labels.csv`` (default ``../shared/data/faces``).
Identities with at least 4 photos are split in two by a hash of their names: a *choosing* set
and a *reported* set, ``--contacts`` identities each. For each of them one photo (the last in
name order) is held out as its contact photo; every other photo of every identity (with or
without a contact) is the user's library, scanned and grouped by the app's own code
(``Engine.scan``: YuNet, the embedder, the grouping). The contact photos go through the app's
contact path (:func:`ex_app.people.contacts.contact_face`) and :func:`suggest_names` offers
names at each distance of a sweep.

A person belongs to the identity of most of its faces. Per distance, over the persons of the
identities with a contact: **right** is the share offered their identity's name; **wrong**
counts offers of another name to any person (also to persons of identities without a
contact), as a share of all persons. The distance is chosen on the choosing set (the largest
at which wrong stays ≤ 0.5%, half the target) and reported on the other set, whose contacts
played no part in the choice.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from ex_app.analyzers.faces import face_analyzer  # noqa: E402
from ex_app.config import Settings  # noqa: E402
from ex_app.engine import Engine  # noqa: E402
from ex_app.people.clustering import QualityGate  # noqa: E402
from ex_app.people.contacts import CONTACT_DISTANCES, contact_face, suggest_names  # noqa: E402
from ex_app.store import contacts as store  # noqa: E402
from ex_app.store import schema  # noqa: E402

DISTANCES = [round(0.05 * i, 2) for i in range(6, 27)]  # 0.30 .. 1.30 (dlib's sit lower)
WRONG_TARGET = 0.005


def identities_of(folder: Path) -> dict[str, list[str]]:
    photos: dict[str, list[str]] = defaultdict(list)
    with open(folder / "labels.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            if not row["identity"].startswith("__"):
                photos[row["identity"]].append(row["path"])
    return {identity: sorted(paths) for identity, paths in sorted(photos.items())}


def person_identities(engine: Engine) -> dict[int, str]:
    """person id → the identity of most of its faces (photos lie in <identity>/ folders)."""
    with engine.sessions() as session:
        rows = session.execute(
            select(schema.Face.person_id, schema.File.path).join(schema.File)
            .where(schema.Face.person_id.is_not(None))
        ).all()
    votes: dict[int, Counter] = defaultdict(Counter)
    for person_id, path in rows:
        votes[person_id][path.split("/")[0]] += 1
    return {person_id: counts.most_common(1)[0][0] for person_id, counts in votes.items()}


def measure(engine: Engine, contacts: dict[str, bytes], persons: dict[int, str]) -> dict:
    """Load these contacts (identity → photo) as the one address book, then sweep distances."""
    s = engine.settings
    gate = QualityGate.from_settings(s)
    faces, skipped = [], []
    for identity, photo in contacts.items():
        embedding, why = contact_face(engine.pipeline.part(face_analyzer), gate, photo,
                                      s.images.max_side, s.images.max_pixels)
        if embedding is None:
            skipped.append(f"{identity}: {why}")
        else:
            faces.append(store.StoredContactFace(identity, identity, embedding))
    with engine.sessions.begin() as session:
        store.replace_book(session, None, "bench", "", s.face_embedder, faces)
    theirs = [p for p, identity in persons.items() if identity in contacts]
    rows = []
    for distance in DISTANCES:
        with engine.sessions() as session:
            offered = {x.person_id: x.name for x in suggest_names(session, None, s.face_embedder, distance)}
        right = sum(1 for p in theirs if offered.get(p) == persons[p])
        wrong = sum(1 for p, name in offered.items() if name != persons.get(p))
        rows.append({"distance": distance, "right": right / max(len(theirs), 1),
                     "wrong": wrong, "wrong_share": wrong / max(len(persons), 1),
                     "offers": len(offered)})
    return {"rows": rows, "persons": len(theirs), "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "faces")
    parser.add_argument("--embedder", choices=("sface", "dlib"), default="sface")
    parser.add_argument("--contacts", type=int, default=30)
    args = parser.parse_args()

    photos = identities_of(args.folder)
    eligible = [i for i, paths in photos.items() if len(paths) >= 4]
    halves = ([i for i in eligible if zlib.crc32(i.encode()) % 2 == k] for k in (0, 1))
    choosing, reported = (half[:args.contacts] for half in halves)
    held_out = {identity: photos[identity][-1] for identity in choosing + reported}
    with tempfile.TemporaryDirectory() as work:
        tree = Path(work) / "library"
        for identity, paths in photos.items():
            for path in paths:
                if held_out.get(identity) != path:
                    target = tree / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to((args.folder / path).resolve())
        engine = Engine(Settings(
            data_dir=Path(work) / "state", face_embedder=args.embedder, objects_enabled=False,
            places_enabled=False, music_enabled=False, video_enabled=False))
        report = engine.scan(tree)
        persons = person_identities(engine)
        print(f"{args.embedder}: {report.sync.added} photos in the library, {len(persons)} persons; "
              f"contacts for {len(choosing)} + {len(reported)} identities")
        results = {}
        for label, chosen in (("choosing", choosing), ("reported", reported)):
            contacts = {i: (args.folder / held_out[i]).read_bytes() for i in chosen}
            results[label] = measure(engine, contacts, persons)
        engine.sessions.kw["bind"].dispose()

    print("\n| distance | right (choosing) | wrong (choosing) | right (reported) | wrong (reported) |")
    print("|---|---|---|---|---|")
    for a, b in zip(results["choosing"]["rows"], results["reported"]["rows"]):
        print(f"| {a['distance']:.2f} | {a['right']:.1%} | {a['wrong']} ({a['wrong_share']:.2%}) "
              f"| {b['right']:.1%} | {b['wrong']} ({b['wrong_share']:.2%}) |")
    safe = [r for r in results["choosing"]["rows"] if r["wrong_share"] <= WRONG_TARGET]
    chosen = max(safe, key=lambda r: (r["right"], -r["distance"]))["distance"] if safe else None
    for label in ("choosing", "reported"):
        print(f"{label}: {results[label]['persons']} persons of identities with a contact; "
              f"contact photos skipped: {results[label]['skipped'] or 'none'}")
    print(f"\nchosen on the choosing set: {chosen} (the app's value for {args.embedder}: "
          f"{CONTACT_DISTANCES[args.embedder]})")
    current = next(r for r in results["reported"]["rows"]
                   if abs(r["distance"] - CONTACT_DISTANCES[args.embedder]) < 1e-9)
    print(f"reported set at the app's value: right {current['right']:.1%} of "
          f"{results['reported']['persons']} persons, wrong {current['wrong']} "
          f"({current['wrong_share']:.2%} of all persons)")


if __name__ == "__main__":
    main()
