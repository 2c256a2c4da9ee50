"""Telling a user that the files they asked Recognize to analyze are done, and what it found.

A Files menu request is the outbox's ``NOTIFICATIONS`` marks of its files
(:func:`ex_app.store.outbox.mark_request`); :func:`drain` sends one notification per
request once none of its files has work left.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection

from nc_py_api import AsyncNextcloudApp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ex_app.store import outbox, schema
from ex_app.store.schema import TaskStatus

log = logging.getLogger(__name__)

MOST_TAGS = 8  # tags named in a notification; the rest are counted


def request_summary(sessions: sessionmaker[Session], file_ids: Collection[int]) -> tuple[str, str]:
    """The subject and message of the notification for these stored files."""
    ids = list(file_ids)
    with sessions() as session:
        in_files = schema.File.id.in_(ids)
        failed = session.execute(select(schema.File.path, schema.Task.error).join(schema.Task)
                                 .where(in_files, schema.Task.status == TaskStatus.ERROR)).all()
        tags = Counter(session.scalars(select(schema.FileTag.tag).join(schema.File)
                                       .where(in_files)))
        persons = session.execute(select(schema.Face.person_id, schema.Person.name)
                                  .join(schema.File).outerjoin(schema.Person).where(in_files)).all()
    subject = f"Recognize analyzed {len(ids)} file{'s' if len(ids) != 1 else ''}"
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


async def drain(sessions: sessionmaker[Session], retry_delay: float) -> int:
    """Tell each user whose Files menu request has no work left what was found; a
    notification that fails is sent by a later drain (after retry_delay seconds, doubled
    each time). Returns how many were sent."""
    with sessions.begin() as session:
        marks = outbox.take_finished_requests(session)
    requests: dict[str, list[schema.SinkOutbox]] = {}
    for held in marks:
        requests.setdefault(held.request, []).append(held)
    sent = 0
    for held in requests.values():
        user = held[0].user
        try:
            subject, message = request_summary(sessions, [m.file_id for m in held])
            await AsyncNextcloudApp(user=user).notifications.create(subject, message)
        except Exception as error:  # noqa: BLE001 (Nextcloud away: a later drain tries again)
            log.warning("notifying %s failed: %s", user, error)
            with sessions.begin() as session:
                outbox.retry(session, held, retry_delay)
        else:
            with sessions.begin() as session:
                outbox.done(session, held)
            sent += 1
    return sent
