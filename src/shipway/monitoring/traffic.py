"""Per-minute traffic counters: what each model's versions answered, summed over any window.

Serving workers save, for each (model, version, minute) of the environment they serve (see
:class:`shipway.serving.traffic.TrafficRecorder`), how many requests they answered, how many
failed with a server error (5xx: the model raised, or its queue was full), and how many took at
most each bound of the latency histogram (:data:`shipway.core.latency.LATENCY_BUCKETS`, the
bounds of ``/metrics``). A worker's row is cumulative for its minute, so saving it again replaces
it and never counts twice; readers add the workers and versions up. Alert rules and SLOs read
these sums for their own environment (:func:`window_totals`), one query for every window they
need, so a staging server's failures never count against prod.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.latency import LATENCY_BUCKETS
from shipway.store import Store, schema

__all__ = [
    "BOUNDS_MS",
    "MINUTE_MS",
    "Counts",
    "Totals",
    "bound_index",
    "nearest_bound",
    "prune_traffic",
    "read_counts",
    "record_traffic",
    "window_totals",
]

MINUTE_MS = 60_000
# The histogram bounds in milliseconds, as users write latency thresholds.
BOUNDS_MS: tuple[float, ...] = tuple(round(b * 1000, 6) for b in LATENCY_BUCKETS)

_T = schema.traffic


@dataclass
class Counts:
    """One worker's counts for one (model, version, minute); ``latency[i]`` counts requests that
    took at most ``BOUNDS_MS[i]`` (cumulative, like Prometheus' ``le`` buckets)."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))

    def record(self, seconds: float, *, error: bool) -> None:
        """Count one request that took ``seconds``."""
        self.requests += 1
        if error:
            self.errors += 1
        # The first bound at or above the latency, and every bound after it (le is inclusive).
        for i in range(bisect.bisect_left(LATENCY_BUCKETS, seconds), len(self.latency)):
            self.latency[i] += 1

    def merge(self, other: Counts) -> Counts:
        """The counts of both (a restarted worker carrying on from what it saved)."""
        return Counts(
            self.requests + other.requests,
            self.errors + other.errors,
            [a + b for a, b in zip(self.latency, other.latency, strict=True)],
        )

    def copy(self) -> Counts:
        return Counts(self.requests, self.errors, list(self.latency))


def record_traffic(
    store: Store, worker: str, rows: Mapping[tuple[str, str, int], Counts], *, environment: str
) -> None:
    """Save one worker's cumulative counts in ``environment``, keyed by (model, version, minute), in
    one transaction."""
    if not rows:
        return
    from shipway.store.db import insert_for

    now = now_ms()
    values = [
        {
            "model": model,
            "environment": environment,
            "minute": minute,
            "version": version,
            "worker": worker,
            "requests": c.requests,
            "errors": c.errors,
            "latency": list(c.latency),
            "updated_at": now,
        }
        for (model, version, minute), c in rows.items()
    ]
    stmt = insert_for(store.dialect)(_T)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_T.c.model, _T.c.environment, _T.c.minute, _T.c.version, _T.c.worker],
        set_={
            "requests": stmt.excluded.requests,
            "errors": stmt.excluded.errors,
            "latency": stmt.excluded.latency,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    with store.write() as conn:
        conn.execute(stmt, values)


def read_counts(
    store: Store, model: str, version: str, minute: int, worker: str, *, environment: str
) -> Counts | None:
    """What one worker saved for one (model, version, minute) in ``environment``, if anything."""
    with store.read() as conn:
        row = conn.execute(
            sa.select(_T.c.requests, _T.c.errors, _T.c.latency).where(
                _T.c.model == model,
                _T.c.environment == environment,
                _T.c.minute == minute,
                _T.c.version == version,
                _T.c.worker == worker,
            )
        ).first()
    return None if row is None else Counts(row.requests, row.errors, list(row.latency))


@dataclass(frozen=True)
class Totals:
    """Requests, server errors and latency counts of one model in one environment over one window
    (all versions and workers); ``latency`` has one cumulative count per bound asked for (``bounds``)."""

    requests: int
    errors: int
    latency: tuple[int, ...] = ()
    bounds: tuple[int, ...] = ()  # indices into BOUNDS_MS

    @property
    def error_rate(self) -> float | None:
        """Server errors per request; None without requests (no data)."""
        return self.errors / self.requests if self.requests else None

    def slower_than(self, bound: int) -> int:
        """Requests that took longer than ``BOUNDS_MS[bound]``."""
        return self.requests - self.latency[self.bounds.index(bound)]

    def quantile_ms(self, q: float) -> float | None:
        """The ``q`` quantile of latency in ms, interpolated within its bucket as Prometheus'
        ``histogram_quantile`` does; None without requests. Needs every bound."""
        if not self.requests:
            return None
        if self.bounds != tuple(range(len(BOUNDS_MS))):
            raise ValueError("quantile_ms needs the counts of every bound")
        rank = q * self.requests
        lower_bound, lower_count = 0.0, 0
        for bound_ms, count in zip(BOUNDS_MS, self.latency, strict=True):
            if count >= rank:
                if count == lower_count:
                    return bound_ms
                return lower_bound + (bound_ms - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound_ms, count
        # Beyond the last bound: Prometheus answers the highest finite bound.
        return BOUNDS_MS[-1]


def window_totals(
    store: Store,
    model: str,
    windows: Mapping[str, int],
    *,
    environment: str,
    bounds: Sequence[int] | None = None,
    now: int | None = None,
) -> dict[str, Totals]:
    """Totals of ``model`` in ``environment`` for each named window (its length in ms, ending at
    ``now``), in one query.

    A window holds every minute that overlaps it, so a 5-minute window ending mid-minute holds six
    minutes; the minute in progress holds what workers have saved of it so far. ``bounds`` are the
    latency bounds to count (indices into :data:`BOUNDS_MS`; all of them when None).
    """
    now = now_ms() if now is None else now
    wanted = tuple(range(len(BOUNDS_MS))) if bounds is None else tuple(bounds)
    longest = max(windows.values(), default=0)
    columns: list[Any] = []
    for length in windows.values():
        inside = _T.c.minute > now - length - MINUTE_MS
        columns.append(sa.func.sum(sa.case((inside, _T.c.requests), else_=0)))
        columns.append(sa.func.sum(sa.case((inside, _T.c.errors), else_=0)))
        columns.extend(sa.func.sum(sa.case((inside, _T.c.latency[i].as_integer()), else_=0)) for i in wanted)
    query = sa.select(*columns).where(
        _T.c.model == model,
        _T.c.environment == environment,
        _T.c.minute > now - longest - MINUTE_MS,
        _T.c.minute <= now,
    )
    with store.read() as conn:
        row = conn.execute(query).one()
    values = [int(v or 0) for v in row]
    out, width = {}, 2 + len(wanted)
    for n, name in enumerate(windows):
        chunk = values[n * width : (n + 1) * width]
        out[name] = Totals(chunk[0], chunk[1], tuple(chunk[2:]), wanted)
    return out


def prune_traffic(store: Store, before: int) -> int:
    """Delete counters of minutes before ``before`` (ms); how many rows went."""
    with store.write() as conn:
        return conn.execute(_T.delete().where(_T.c.minute < before)).rowcount or 0


def bound_index(ms: float) -> int | None:
    """The index of ``ms`` among :data:`BOUNDS_MS`, or None when it is not a bound."""
    for i, bound in enumerate(BOUNDS_MS):
        if abs(bound - ms) < 1e-9:
            return i
    return None


def nearest_bound(ms: float) -> int:
    """The index of the bound nearest ``ms`` (the larger one on a tie)."""
    return min(range(len(BOUNDS_MS)), key=lambda i: (abs(BOUNDS_MS[i] - ms), -i))
