"""Telling a user that the files they asked Recognize to analyze are done, and what it found."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from nc_py_api import AsyncNextcloudApp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.store import schema
from ex_app.store.schema import TaskStatus

MOST_TAGS = 8  # tags named in a notification; the rest are counted


@dataclass(frozen=True)
class FilesRequest:
    """Files a user asked for from the Files menu (Nextcloud file ids)."""

    user: str
    remote_ids: frozenset[int]


def request_summary(sessions: sessionmaker[Session], remote_ids: Collection[int]) -> tuple[str, str]:
    """The subject and message of the notification for these files."""
    ids = list(remote_ids)
    with sessions() as session:
        failed = session.execute(
            select(schema.File.path, schema.Task.error)
            .join(schema.Task)
            .where(schema.File.remote_id.in_(ids), schema.Task.status == TaskStatus.ERROR)
        ).all()
        tags = Counter(
            session.scalars(
                select(schema.FileTag.tag).join(schema.File).where(schema.File.remote_id.in_(ids))
            )
        )
        persons = session.execute(
            select(schema.Face.person_id, schema.Person.name)
            .join(schema.File)
            .outerjoin(schema.Person)
            .where(schema.File.remote_id.in_(ids))
        ).all()
    count = len(ids)
    subject = f"Recognize analyzed {count} file{'s' if count != 1 else ''}"
    parts = []
    if persons:
        names = sorted({name for _, name in persons if name})
        unnamed = len({pid for pid, name in persons if pid is not None and not name})
        who = names + ([f"{unnamed} unnamed"] if unnamed else [])
        parts.append(f"{len(persons)} face{'s' if len(persons) != 1 else ''}"
                     + (f" ({', '.join(who)})" if who else ""))
    if tags:
        shown = [f"{tag} ({n})" for tag, n in tags.most_common(MOST_TAGS)]
        more = len(tags) - len(shown)
        parts.append("tags: " + ", ".join(shown) + (f" and {more} more" if more else ""))
    if failed:
        first_path, first_error = failed[0]
        parts.append(f"{len({path for path, _ in failed})} could not be analyzed "
                     f"({first_path}: {first_error})")
    message = "Found " + "; ".join(parts) + "." if parts else "Nothing was found."
    return subject, message


async def notify(nc: AsyncNextcloudApp, subject: str, message: str) -> None:
    """Send the user nc acts as a notification."""
    await nc.notifications.create(subject, message)
