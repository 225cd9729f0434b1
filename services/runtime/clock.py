"""The one clock: the current time in UTC, timezone-aware. Storage layers that keep naive UTC convert at the edge."""
from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def naive_utc(moment: datetime) -> datetime:
    """The same instant as naive UTC, the form stored on SQLite and PostgreSQL `timestamp` columns."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
