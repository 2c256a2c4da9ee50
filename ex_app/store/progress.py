"""How far the work is: counts per analyzer, recent throughput and the time left.

For the whole instance (:func:`measure_progress`) and per user (:func:`measure_user_progress`:
a Nextcloud root's user, or ``local:<folder>`` for a scanned folder).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from ex_app.store import schema
from ex_app.store.schema import Source, TaskStatus

THROUGHPUT_WINDOW = timedelta(minutes=10)
MIN_SPAN = timedelta(seconds=30)  # a rate from fewer seconds than this is noise


@dataclass
class AnalyzerProgress:
    analyzer: str
    done: int
    pending: int  # retrying ones included
    failed: int  # the dead-letter state: `recognize retry` sends them again
    per_minute: float  # tasks finished per minute over the recent window
    eta_seconds: float | None  # None while nothing has finished recently
    retrying: int = 0  # pending after a failure that may pass

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line for people: counts, rate and time left ("nothing left" when none is pending)."""
        if not self.pending:
            left = "nothing left"
        elif self.eta_seconds is None:
            left = "time left unknown"
        else:
            left = f"time left {duration_text(self.eta_seconds)}"
        retrying = f" ({self.retrying} retrying)" if self.retrying else ""
        return (
            f"{self.analyzer}: {self.done} done, {self.pending} pending{retrying}, "
            f"{self.failed} failed; {self.per_minute:.1f}/min; {left}"
        )


def duration_text(seconds: float) -> str:
    """3h05m, 4m07s."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def measure_progress(session: Session, now: datetime | None = None) -> list[AnalyzerProgress]:
    """Progress of each analyzer; throughput is over tasks finished in the last ten minutes."""
    return _measure(session, now, by_user=False).get(None, [])


def measure_user_progress(session: Session, now: datetime | None = None) -> dict[str, list[AnalyzerProgress]]:
    """Progress of each analyzer for each user (a Nextcloud user id, or ``local:<folder>``)."""
    return _measure(session, now, by_user=True)


def _measure(session: Session, now: datetime | None, by_user: bool) -> dict[str | None, list[AnalyzerProgress]]:
    now = now or datetime.now(UTC)
    finished = and_(schema.Task.status != TaskStatus.PENDING, schema.Task.updated_at >= now - THROUGHPUT_WINDOW)
    retrying = and_(schema.Task.status == TaskStatus.PENDING, schema.Task.error.is_not(None))
    owner = (schema.Root.source, schema.Root.location) if by_user else ()

    def count(condition):
        return func.sum(case((condition, 1), else_=0))

    rows = session.execute(
        select(
            *owner, schema.Task.analyzer,
            *(count(schema.Task.status == status) for status in (
                TaskStatus.DONE, TaskStatus.PENDING, TaskStatus.ERROR)),
            count(retrying), count(finished), func.min(case((finished, schema.Task.updated_at))),
        )
        .select_from(schema.Task)
        .join(schema.File)
        .join(schema.Root)
        .group_by(*owner, schema.Task.analyzer)
    )
    result: dict[str | None, list[AnalyzerProgress]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row[-7]):
        analyzer, done, pending, failed, retry_count, recent, oldest = row[-7:]
        per_minute = 0.0
        if recent:
            span = max((now - _as_utc(oldest)).total_seconds(), MIN_SPAN.total_seconds())
            per_minute = recent / span * 60
        eta_seconds = round(pending / per_minute * 60, 1) if per_minute else None
        result[_user(row[0], row[1]) if by_user else None].append(AnalyzerProgress(
            analyzer, done, pending, failed, round(per_minute, 2), eta_seconds, retry_count
        ))  # fmt: skip
    return dict(sorted(result.items(), key=lambda item: item[0] or ""))


def _user(source: str, location: str) -> str:
    return location if source == Source.NEXTCLOUD else f"{source}:{location}"


def _as_utc(moment: datetime | str) -> datetime:
    """SQLite hands datetimes back without their zone (and as text from an aggregate); they
    were written in UTC."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
