"""Time in one unit everywhere: integer milliseconds since the Unix epoch, UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def to_datetime(ms: int | None) -> datetime | None:
    """A UTC datetime for a millisecond timestamp (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso(ms: int | None) -> str | None:
    """ISO 8601 text for a millisecond timestamp, to the millisecond."""
    dt = to_datetime(ms)
    return None if dt is None else dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
