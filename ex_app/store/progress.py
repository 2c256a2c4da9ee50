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


def measure_user_progress(
    session: Session, now: datetime | None = None
) -> dict[str, list[AnalyzerProgress]]:
    """Progress of each analyzer for each user (a Nextcloud user id, or ``local:<folder>``)."""
    return _measure(session, now, by_user=True)


def _measure(
    session: Session, now: datetime | None, by_user: bool
) -> dict[str | None, list[AnalyzerProgress]]:
    now = now or datetime.now(UTC)
    since = now - THROUGHPUT_WINDOW
    finished = and_(schema.Task.status != TaskStatus.PENDING, schema.Task.updated_at >= since)
    retrying = and_(schema.Task.status == TaskStatus.PENDING, schema.Task.error.is_not(None))
    owner = (schema.Root.source, schema.Root.location) if by_user else ()
    rows = session.execute(
        select(
            *owner,
            schema.Task.analyzer,
            schema.Task.status,
            func.count(),
            func.sum(case((retrying, 1), else_=0)),
            func.sum(case((finished, 1), else_=0)),
            func.min(case((finished, schema.Task.updated_at))),
        )
        .select_from(schema.Task)
        .join(schema.File)
        .join(schema.Root)
        .group_by(*owner, schema.Task.analyzer, schema.Task.status)
    )
    counts: dict[tuple[str | None, str], dict] = defaultdict(
        lambda: {"statuses": {}, "retrying": 0, "recent": 0, "oldest": None}
    )
    for row in rows:
        user = _user(row[0], row[1]) if by_user else None
        analyzer, status, count, retry_count, recent, oldest = row[-6:]
        entry = counts[(user, analyzer)]
        entry["statuses"][status] = count
        entry["retrying"] += retry_count or 0
        entry["recent"] += recent or 0
        if oldest is not None:
            oldest = _as_utc(oldest)
            entry["oldest"] = oldest if entry["oldest"] is None else min(entry["oldest"], oldest)
    result: dict[str | None, list[AnalyzerProgress]] = defaultdict(list)
    for (user, analyzer), entry in sorted(counts.items(), key=lambda item: (item[0][0] or "", item[0][1])):
        per_minute = 0.0
        if entry["recent"]:
            span = max((now - entry["oldest"]).total_seconds(), MIN_SPAN.total_seconds())
            per_minute = entry["recent"] / span * 60
        pending = entry["statuses"].get(TaskStatus.PENDING, 0)
        result[user].append(
            AnalyzerProgress(
                analyzer=analyzer,
                done=entry["statuses"].get(TaskStatus.DONE, 0),
                pending=pending,
                failed=entry["statuses"].get(TaskStatus.ERROR, 0),
                per_minute=round(per_minute, 2),
                eta_seconds=round(pending / per_minute * 60, 1) if per_minute else None,
                retrying=entry["retrying"],
            )
        )
    return dict(result)


def _user(source: str, location: str) -> str:
    return location if source == Source.NEXTCLOUD else f"{source}:{location}"


def _as_utc(moment: datetime | str) -> datetime:
    """SQLite hands datetimes back without their zone (and as text from an aggregate); they
    were written in UTC."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
