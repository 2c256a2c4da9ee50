"""Results as one JSON document that other tools can read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from ex_app.store import schema
from ex_app.store.schema import TaskStatus

if TYPE_CHECKING:  # `recognize stats` reads this module without the clustering libraries
    from ex_app.people.clustering import QualityGate


def overall_status(task_statuses: set[str]) -> str:
    """A file's status from its tasks': error wins over pending, which wins over done.

    A file that no enabled analyzer handles (music, until a music model is enabled) is skipped.
    """
    for status in (TaskStatus.ERROR, TaskStatus.PENDING, TaskStatus.DONE):
        if status in task_statuses:
            return status
    return "skipped"


def export_results(session: Session, gate: QualityGate, root_id: int | None = None) -> dict:
    """Files (paths relative to their root) with status, tags, labels and faces; and persons.

    A face below the quality gate is marked ``unsure``: it never seeds a person.
    """
    query = (
        select(schema.File)
        .options(
            selectinload(schema.File.tasks),
            selectinload(schema.File.faces),
            selectinload(schema.File.labels),
            selectinload(schema.File.tags),
            selectinload(schema.File.root),
        )
        .order_by(schema.File.root_id, schema.File.path)
    )
    if root_id is not None:
        query = query.where(schema.File.root_id == root_id)
    files = []
    for file in session.scalars(query):
        errors = [t.error for t in file.tasks if t.status == TaskStatus.ERROR]
        files.append(
            {
                "path": file.path,
                "root": file.root.location,
                "kind": file.kind,
                "status": overall_status({t.status for t in file.tasks}),
                "error": errors[0] if errors else None,
                "width": file.width,
                "height": file.height,
                "tags": sorted({t.tag for t in file.tags}),
                "labels": [
                    {"id": l.label_id, "name": l.name, "score": round(l.score, 4)}
                    for l in sorted(file.labels, key=lambda l: -l.score)
                ],
                "faces": [
                    {
                        "id": f.id,
                        "box": [round(v, 1) for v in (f.x, f.y, f.w, f.h)],
                        "score": round(f.score, 4),
                        "quality": round(f.quality, 4),
                        "unsure": not gate.admits(f),
                        "person": f.person_id,
                        "frame_time": f.frame_time,
                    }
                    for f in sorted(file.faces, key=lambda f: (f.x, f.y))
                ],
            }
        )
    counts = dict(
        session.execute(
            select(schema.Face.person_id, func.count()).group_by(schema.Face.person_id)
        ).all()
    )
    persons = [
        {"id": p.id, "name": p.name, "hidden": p.hidden, "faces": counts.get(p.id, 0)}
        for p in session.scalars(select(schema.Person).order_by(schema.Person.id))
    ]
    return {"files": files, "persons": persons}
