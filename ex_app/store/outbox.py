"""The outbox: what each sink must still do, marked in the transaction that made it due.

Recording a file's results, and any change of which persons' names its faces carry (a
regrouping, a correction on the People page), marks the Nextcloud files whose tags must be
made again (``TAGS``); a Files menu request marks its files for one notification
(``NOTIFICATIONS``, the marks of a request share its ``request``), sent once none of them
has work left. Whichever process wrote the results, the ExApp's service drains the marks:
a take claims a batch in one conditional UPDATE (as workers claim tasks), so two drainers
never hold one mark; a mark is deleted once its sink did the work, and a failed one waits
out a delay that doubles with each attempt. A mark of a file that is deleted goes with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from ex_app.store import schema
from ex_app.store.schema import TaskStatus

TAGS = "nextcloud_tags"
NOTIFICATIONS = "nextcloud_notifications"
BATCH = 200  # marks taken at a time
LEASE = timedelta(minutes=10)  # a drainer that died: its marks go to another after this
MAX_RETRY_DELAY = 3600.0  # seconds: the backoff stops doubling here


def mark(session: Session, sink: str, file_ids: Iterable[int], user: str | None = None,
         request: str | None = None) -> None:
    """Mark these stored files for the sink, in the session's transaction."""
    rows = [{"sink": sink, "file_id": file_id, "user": user, "request": request}
            for file_id in sorted(set(file_ids))]
    if rows:
        session.execute(insert(schema.SinkOutbox), rows)


def mark_request(session: Session, user: str, file_ids: Iterable[int]) -> None:
    """Mark a Files menu request of user's: one notification once these files are done."""
    mark(session, NOTIFICATIONS, file_ids, user=user, request=uuid.uuid4().hex)


def person_tags(session: Session, owner: str | None = None,
                file_ids: Collection[int] | None = None) -> dict[int, frozenset[str]]:
    """The names of the named, visible persons on each Nextcloud file's faces (of owner's
    persons, of these files, when given); files without any are left out."""
    query = (
        select(schema.Face.file_id, schema.Person.name)
        .join(schema.Person, schema.Person.id == schema.Face.person_id)
        .join(schema.File, schema.File.id == schema.Face.file_id)
        .where(schema.Person.name.is_not(None), schema.Person.hidden.is_(False))
        .where(schema.File.remote_id.is_not(None))
    )
    if owner is not None:
        query = query.where(schema.Person.owner == owner)
    if file_ids is not None:
        query = query.where(schema.Face.file_id.in_(file_ids))
    names: dict[int, set[str]] = {}
    for file_id, name in session.execute(query):
        names.setdefault(file_id, set()).add(name)
    return {file_id: frozenset(found) for file_id, found in names.items()}


@contextmanager
def person_tag_changes(session: Session, owner: str | None = None) -> Iterator[None]:
    """Mark for TAGS the Nextcloud files whose persons' names change within the block (a
    regrouping, a rename, a merge, a face moved; of owner's persons, when given)."""
    before = person_tags(session, owner)
    yield
    session.flush()
    after = person_tags(session, owner)
    mark(session, TAGS, [f for f in before.keys() | after.keys() if before.get(f) != after.get(f)])


def _free(now: datetime):
    """Marks no drainer holds and whose retry time has come."""
    return or_(schema.SinkOutbox.lease_until.is_(None), schema.SinkOutbox.lease_until < now)


def _claim(session: Session, where, now: datetime) -> list[schema.SinkOutbox]:
    """Claim the free marks matching where for a new drainer; the marks it got."""
    drainer = uuid.uuid4().hex
    session.execute(
        update(schema.SinkOutbox)
        .where(where, _free(now))
        .values(drainer=drainer, lease_until=now + LEASE)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(
        select(schema.SinkOutbox).where(schema.SinkOutbox.drainer == drainer).order_by(schema.SinkOutbox.id)
    ))  # fmt: skip


def take(session: Session, sink: str, limit: int = BATCH,
         now: datetime | None = None) -> list[schema.SinkOutbox]:
    """Claim up to limit of the sink's free marks, oldest first."""
    now = now or datetime.now(UTC)
    oldest = select(schema.SinkOutbox.id).where(schema.SinkOutbox.sink == sink, _free(now))
    oldest = oldest.order_by(schema.SinkOutbox.id).limit(limit)
    return _claim(session, schema.SinkOutbox.id.in_(oldest.scalar_subquery()), now)


def take_finished_requests(session: Session, now: datetime | None = None) -> list[schema.SinkOutbox]:
    """Claim the marks of every free request none of whose files has a pending task."""
    now = now or datetime.now(UTC)
    free = (schema.SinkOutbox.sink == NOTIFICATIONS, _free(now))
    marks = select(schema.SinkOutbox.request).where(*free)
    waiting = set(session.scalars(marks.distinct()))
    waiting -= set(session.scalars(
        marks.join(schema.Task, schema.Task.file_id == schema.SinkOutbox.file_id)
        .where(schema.Task.status == TaskStatus.PENDING)
        .distinct()
    ))  # fmt: skip
    return _claim(session, schema.SinkOutbox.request.in_(waiting), now) if waiting else []


def _held(marks: Iterable[schema.SinkOutbox]):
    """These marks, while the drainers that took them still hold them."""
    marks = list(marks)
    drainers = {m.drainer for m in marks}
    return schema.SinkOutbox.id.in_([m.id for m in marks]) & schema.SinkOutbox.drainer.in_(drainers)


def done(session: Session, marks: Iterable[schema.SinkOutbox]) -> None:
    """The sink did it: the marks go."""
    session.execute(delete(schema.SinkOutbox).where(_held(marks)))


def retry(session: Session, marks: Collection[schema.SinkOutbox], retry_delay: float,
          now: datetime | None = None) -> float:
    """The sink failed: the marks wait retry_delay seconds, doubled for each earlier
    attempt (at most MAX_RETRY_DELAY), for the next drain; returns the delay."""
    now = now or datetime.now(UTC)
    attempts = max((m.attempts for m in marks), default=0) + 1
    delay = min(retry_delay * 2 ** (attempts - 1), MAX_RETRY_DELAY)
    session.execute(
        update(schema.SinkOutbox)
        .where(_held(marks))
        .values(attempts=attempts, lease_until=now + timedelta(seconds=delay), drainer=None)
    )
    return delay


@dataclass(frozen=True)
class TagsDue:
    """A marked Nextcloud file and the tags it should carry."""

    user: str  # its root's user, who sees it
    path: str
    remote_id: int
    tags: frozenset[str]


def tags_due(session: Session, file_ids: Iterable[int], person_names: bool) -> dict[int, TagsDue]:
    """For these stored files (those of Nextcloud), by stored id: the tags they should carry:
    their analyzers' tags and, when ``person_names``, their persons' names."""
    ids = sorted(set(file_ids))
    tags: dict[int, set[str]] = {file_id: set() for file_id in ids}
    query = select(schema.FileTag.file_id, schema.FileTag.tag)
    for file_id, tag in session.execute(query.where(schema.FileTag.file_id.in_(ids))):
        tags[file_id].add(tag)
    for file_id, names in (person_tags(session, file_ids=ids) if person_names else {}).items():
        tags[file_id] |= names
    rows = session.execute(
        select(schema.File.id, schema.File.path, schema.File.remote_id, schema.Root.location)
        .join(schema.Root)
        .where(schema.File.id.in_(ids), schema.File.remote_id.is_not(None))
    )
    return {
        file_id: TagsDue(user, path, remote_id, frozenset(tags[file_id]))
        for file_id, path, remote_id, user in rows
    }
