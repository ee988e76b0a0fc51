"""Buffered metric logging: ``log_metric`` appends to memory; one background thread writes.

A point is a tuple ``(key, value, step, timestamp_ms)``. Each run has a deque (appends and
pops are atomic, so the training thread never takes a lock). The process-wide writer drains
every live run's deque into one transaction when a buffer passes ``FLUSH_POINTS`` or every
``FLUSH_SECONDS``, and ``flush`` does the same synchronously; a flush lock makes ``end()`` wait
for any write in flight, so nothing logged before ``end()`` returns is lost.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.store import audit, schema
from shipway.store.db import insert_for

if TYPE_CHECKING:
    from shipway.client import Client
    from shipway.store import Store

FLUSH_POINTS = 20_000
FLUSH_SECONDS = 1.0
HEARTBEAT_SECONDS = 30.0

Point = tuple[str, float | None, int, int]


class MetricPoint(NamedTuple):
    """One logged value of a metric."""

    step: int
    timestamp: int
    value: float


class RunBuffer:
    """The unwritten points of one run."""

    __slots__ = ("client", "pending", "points", "run_id", "store")

    def __init__(self, store: Store | None, run_id: str, client: Client | None = None) -> None:
        # Points go to ``store`` in embedded mode, or through ``client`` to a server.
        self.store = store
        self.client = client
        self.run_id = run_id
        self.points: deque[Point] = deque()
        # Points drained but not yet committed because a write failed; retried first.
        self.pending: list[Point] = []


@functools.cache
def _latest_upsert(dialect: str) -> Any:
    # Built once per dialect: constructing an ON CONFLICT statement costs more than running it.
    table = schema.latest_metrics
    stmt = insert_for(dialect)(table)
    newer = sa.or_(
        stmt.excluded.step > table.c.step,
        sa.and_(stmt.excluded.step == table.c.step, stmt.excluded.timestamp >= table.c.timestamp),
    )
    return stmt.on_conflict_do_update(
        index_elements=[table.c.run_id, table.c.key],
        set_={"step": stmt.excluded.step, "timestamp": stmt.excluded.timestamp, "value": stmt.excluded.value},
        where=newer,
    )


_FINISH = (
    schema.runs.update()
    .where(schema.runs.c.id == sa.bindparam("run_id"))
    .values(status=sa.bindparam("status"), end_time=sa.bindparam("end_time"), error=sa.bindparam("error"))
)


def upsert_latest(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Keep ``latest_metrics`` at the point with the highest (step, timestamp) per run and key."""
    if rows:
        conn.execute(_latest_upsert(conn.dialect.name), rows)


def write_points(conn: sa.Connection, run_id: str, points: list[Point]) -> None:
    """Insert points and move the run's latest values forward, inside the caller's transaction."""
    conn.execute(
        schema.metrics.insert(),
        [{"run_id": run_id, "key": k, "value": v, "step": s, "timestamp": t} for k, v, s, t in points],
    )
    latest: dict[str, Point] = {}
    for p in points:
        cur = latest.get(p[0])
        if cur is None or (p[2], p[3]) >= (cur[2], cur[3]):
            latest[p[0]] = p
    upsert_latest(
        conn,
        [
            {"run_id": run_id, "key": k, "value": v, "step": s, "timestamp": t}
            for k, v, s, t in latest.values()
        ],
    )


class MetricWriter:
    """The process's single background writer for every live run's metric buffer."""

    def __init__(self) -> None:
        self._live: dict[str, RunBuffer] = {}
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._last_heartbeat = 0.0
        self.last_error: BaseException | None = None

    def register(self, buffer: RunBuffer) -> None:
        """Start draining ``buffer`` in the background."""
        self._live[buffer.run_id] = buffer
        self._ensure_thread()

    def unregister(self, buffer: RunBuffer) -> None:
        """Stop draining ``buffer`` (after its final flush)."""
        self._live.pop(buffer.run_id, None)

    def nudge(self) -> None:
        """Ask the background thread to flush now (a buffer passed its size limit)."""
        self._wake.set()

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="shipway-metric-writer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        import time

        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            buffers = list(self._live.values())
            for buffer in buffers:
                try:
                    self.flush(buffer)
                    self.last_error = None
                except Exception as exc:  # kept and retried; end() reports it to the caller
                    self.last_error = exc
            if buffers and time.monotonic() - self._last_heartbeat > HEARTBEAT_SECONDS:
                self._last_heartbeat = time.monotonic()
                self._heartbeat(buffers)

    def _heartbeat(self, buffers: list[RunBuffer]) -> None:
        by_store: dict[int, tuple[Store, list[str]]] = {}
        for b in buffers:
            if b.client is not None:
                try:
                    b.client.log_run(b.run_id)  # any call to a run's log endpoint is its heartbeat
                except Exception as exc:
                    self.last_error = exc
                continue
            by_store.setdefault(id(b.store), (b.store, []))[1].append(b.run_id)
        for store, ids in by_store.values():
            try:
                with store.write() as conn:
                    conn.execute(
                        schema.runs.update().where(schema.runs.c.id.in_(ids)).values(heartbeat_at=now_ms())
                    )
            except Exception as exc:
                self.last_error = exc

    def flush(self, buffer: RunBuffer, finish: dict[str, Any] | None = None) -> int:
        """Write everything ``buffer`` holds now, and with ``finish`` end the run in the same
        transaction; returns the number of points written."""
        with self._flush_lock:
            points = buffer.pending
            buffer.pending = []
            dq = buffer.points
            n = len(dq)
            points.extend(dq.popleft() for _ in range(n))
            if not points and finish is None:
                return 0
            actor = finish.pop("actor", None) if finish is not None else None
            total = len(points)
            try:
                if buffer.client is not None:
                    # Sends in chunks and removes each chunk the server took from ``points``,
                    # so a retry after a failure resends only what was not written.
                    buffer.client.log_points(buffer.run_id, points, finish)
                else:
                    commit_points(buffer.store, buffer.run_id, points, finish, actor)  # type: ignore[arg-type]
            except BaseException:
                buffer.pending = points
                raise
            return total


def commit_points(
    store: Store,
    run_id: str,
    points: list[Point],
    finish: dict[str, Any] | None = None,
    actor: str | None = None,
    *,
    heartbeat: bool = False,
) -> None:
    """Write points and, with ``finish`` (status, end_time, error), end the run, in one transaction;
    ``heartbeat`` also records that the run's process is alive."""
    with store.write() as conn:
        if heartbeat:
            conn.execute(schema.runs.update().where(schema.runs.c.id == run_id).values(heartbeat_at=now_ms()))
        if points:
            write_points(conn, run_id, points)
        if finish is not None:
            conn.execute(_FINISH, {"run_id": run_id, **finish})
            audit.append(
                conn,
                "run.ended",
                f"run/{run_id}",
                {"status": finish["status"], "points": len(points)},
                actor=actor,
            )


writer = MetricWriter()
