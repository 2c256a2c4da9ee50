"""How far the work is: counts per analyzer, recent throughput and the time left."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ex_app.store import schema
from ex_app.store.schema import TaskStatus

THROUGHPUT_WINDOW = timedelta(minutes=10)
MIN_SPAN = timedelta(seconds=30)  # a rate from fewer seconds than this is noise


@dataclass
class AnalyzerProgress:
    analyzer: str
    done: int
    pending: int
    failed: int
    per_minute: float  # tasks finished per minute over the recent window
    eta_seconds: float | None  # None while nothing has finished recently

    def as_dict(self) -> dict:
        return asdict(self)


def measure_progress(session: Session, now: datetime | None = None) -> list[AnalyzerProgress]:
    """Progress of each analyzer; throughput is over tasks finished in the last ten minutes."""
    now = now or datetime.now(timezone.utc)
    counts: dict[str, dict[str, int]] = {}
    for analyzer, status, count in session.execute(
        select(schema.Task.analyzer, schema.Task.status, func.count()).group_by(
            schema.Task.analyzer, schema.Task.status
        )
    ):
        counts.setdefault(analyzer, {})[status] = count
    since = now - THROUGHPUT_WINDOW
    finished = {
        analyzer: (count, _as_utc(oldest))
        for analyzer, count, oldest in session.execute(
            select(schema.Task.analyzer, func.count(), func.min(schema.Task.updated_at))
            .where(schema.Task.status != TaskStatus.PENDING, schema.Task.updated_at >= since)
            .group_by(schema.Task.analyzer)
        )
    }
    result = []
    for analyzer in sorted(counts):
        by_status = counts[analyzer]
        per_minute = 0.0
        if analyzer in finished:
            count, oldest = finished[analyzer]
            span = max((now - oldest).total_seconds(), MIN_SPAN.total_seconds())
            per_minute = count / span * 60
        pending = by_status.get(TaskStatus.PENDING, 0)
        result.append(
            AnalyzerProgress(
                analyzer=analyzer,
                done=by_status.get(TaskStatus.DONE, 0),
                pending=pending,
                failed=by_status.get(TaskStatus.ERROR, 0),
                per_minute=round(per_minute, 2),
                eta_seconds=round(pending / per_minute * 60, 1) if per_minute else None,
            )
        )
    return result


def _as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
