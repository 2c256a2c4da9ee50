"""When work may run: quiet hours ("22-6": none from 22:00 until 06:00, server time)."""

from __future__ import annotations

from datetime import datetime


def in_quiet_hours(quiet_hours: str, now: datetime) -> bool:
    """Whether now falls in "start-end" hours (end excluded; "22-6" spans midnight)."""
    if not quiet_hours:
        return False
    start, end = (int(hour) for hour in quiet_hours.split("-"))
    return start <= now.hour < end if start <= end else (now.hour >= start or now.hour < end)
