"""Reading runs back: full run records, metric history, staleness."""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from shipway.core.clock import iso, now_ms
from shipway.core.errors import InvalidInput, NotFound
from shipway.store import Store, schema
from shipway.tracking import lineage
from shipway.tracking.artifacts import ArtifactEntry
from shipway.tracking.metrics import MetricPoint
from shipway.tracking.runs import RUNNING, flush_if_live

# A run on another host whose writer has been silent this long is reported as stale.
STALE_AFTER_MS = 10 * 60 * 1000


@dataclass(frozen=True)
class DatasetUse:
    """A dataset version as used by a run."""

    name: str
    version: int
    role: str
    target: str | None
    content_hash: str
    num_rows: int
    id: str


@dataclass(frozen=True)
class RunRecord:
    """Everything recorded about a run, as read from the store."""

    id: str
    experiment: str
    name: str
    status: str
    stale: bool
    start_time: int
    end_time: int | None
    error: str | None
    user: str | None
    host: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    datasets: list[DatasetUse] = field(default_factory=list)
    artifacts: list[ArtifactEntry] = field(default_factory=list)

    @property
    def duration_ms(self) -> int | None:
        """Wall time from start to end, or so far for a live run."""
        if self.end_time is not None:
            return self.end_time - self.start_time
        return None if self.stale else now_ms() - self.start_time

    @property
    def display_status(self) -> str:
        """The status, with RUNNING runs whose process is gone shown as ``STALE``."""
        return "STALE" if self.stale else self.status

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO 8601, NaN metrics as null)."""
        data = asdict(self)
        data["start_time"] = iso(self.start_time)
        data["end_time"] = iso(self.end_time)
        data["metrics"] = {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()}
        data["display_status"] = self.display_status
        return data


_HOST = socket.gethostname()


def is_stale(row: Any) -> bool:
    """Whether a RUNNING run's process is gone (same host) or silent for too long (elsewhere)."""
    if row.status != RUNNING:
        return False
    if row.host == _HOST and row.pid is not None:
        return not lineage.process_alive(row.pid, row.pid_started)
    beat = row.heartbeat_at or row.start_time
    return now_ms() - beat > STALE_AFTER_MS


def _group(rows: Sequence[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row[0], []).append(row)
    return out


def load_records(conn: sa.Connection, rows: Sequence[Any]) -> list[RunRecord]:
    """Build full records for rows of the ``runs`` table (joined with the experiment name)."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    p, m, t = schema.params, schema.latest_metrics, schema.tags
    a, rd, d = schema.run_artifacts, schema.run_datasets, schema.datasets
    params = _group(conn.execute(sa.select(p.c.run_id, p.c.key, p.c.value).where(p.c.run_id.in_(ids))).all())
    metrics = _group(conn.execute(sa.select(m.c.run_id, m.c.key, m.c.value).where(m.c.run_id.in_(ids))).all())
    tags = _group(conn.execute(sa.select(t.c.run_id, t.c.key, t.c.value).where(t.c.run_id.in_(ids))).all())
    arts = _group(
        conn.execute(
            sa.select(a.c.run_id, a.c.path, a.c.digest, a.c.size)
            .where(a.c.run_id.in_(ids))
            .order_by(a.c.path)
        ).all()
    )
    dsets = _group(
        conn.execute(
            sa.select(
                rd.c.run_id,
                d.c.name,
                d.c.version,
                rd.c.role,
                rd.c.target,
                d.c.content_hash,
                d.c.num_rows,
                d.c.id,
            )
            .join(d, d.c.id == rd.c.dataset_id)
            .where(rd.c.run_id.in_(ids))
            .order_by(rd.c.role, d.c.name)
        ).all()
    )
    return [
        RunRecord(
            id=r.id,
            experiment=r.experiment,
            name=r.name,
            status=r.status,
            stale=is_stale(r),
            start_time=r.start_time,
            end_time=r.end_time,
            error=r.error,
            user=r.user,
            host=r.host,
            params={x.key: x.value for x in params.get(r.id, [])},
            metrics={x.key: (math.nan if x.value is None else x.value) for x in metrics.get(r.id, [])},
            tags={x.key: x.value for x in tags.get(r.id, [])},
            lineage=dict(r.lineage or {}),
            datasets=[DatasetUse(*x[1:]) for x in dsets.get(r.id, [])],
            artifacts=[ArtifactEntry(*x[1:]) for x in arts.get(r.id, [])],
        )
        for r in rows
    ]


def run_columns() -> list[Any]:
    """The columns :func:`load_records` needs from ``runs`` joined to ``experiments``."""
    r, e = schema.runs, schema.experiments
    return [
        r.c.id,
        r.c.name,
        r.c.status,
        r.c.start_time,
        r.c.end_time,
        r.c.error,
        r.c.user,
        r.c.host,
        r.c.pid,
        r.c.pid_started,
        r.c.heartbeat_at,
        r.c.lineage,
        e.c.name.label("experiment"),
    ]


def get_run(store: Store, run_id: str) -> RunRecord:
    """The full record of one run."""
    flush_if_live(run_id)
    r, e = schema.runs, schema.experiments
    query = sa.select(*run_columns()).join(e, e.c.id == r.c.experiment_id).where(r.c.id == run_id)
    with store.read() as conn:
        rows = conn.execute(query).all()
        if not rows:
            raise NotFound(f"No run with id {run_id!r}. List runs with `shipway runs list EXPERIMENT`.")
        return load_records(conn, rows)[0]


def metric_history(store: Store, run_id: str, key: str) -> list[MetricPoint]:
    """Every logged point of one metric, in step order (then time)."""
    flush_if_live(run_id)
    m = schema.metrics
    with store.read() as conn:
        if conn.execute(sa.select(schema.runs.c.id).where(schema.runs.c.id == run_id)).first() is None:
            raise NotFound(f"No run with id {run_id!r}.")
        rows = conn.execute(
            sa.select(m.c.step, m.c.timestamp, m.c.value)
            .where(m.c.run_id == run_id, m.c.key == key)
            .order_by(m.c.step, m.c.timestamp)
        ).all()
        if not rows:
            lm = schema.latest_metrics
            keys = (
                conn.execute(sa.select(lm.c.key).where(lm.c.run_id == run_id).order_by(lm.c.key))
                .scalars()
                .all()
            )
            known = f" It has: {', '.join(keys)}." if keys else " It has no metrics."
            raise NotFound(f"Run {run_id} has no metric {key!r}.{known}")
    return [MetricPoint(s, t, math.nan if v is None else v) for s, t, v in rows]


def resolve_run_id(store: Store, ref: str) -> str:
    """A full run id from a full id or a unique prefix of one (as typed on the command line)."""
    ref = ref.strip().lower()
    if len(ref) == 32:
        return ref
    if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
        raise NotFound(f"{ref!r} is not a run id; give the id, or at least its first 4 hex digits.")
    r = schema.runs
    with store.read() as conn:
        ids = conn.execute(sa.select(r.c.id).where(r.c.id.like(ref + "%")).limit(6)).scalars().all()
    if not ids:
        raise NotFound(f"No run id starts with {ref!r}.")
    if len(ids) > 1:
        raise InvalidInput(f"Run id prefix {ref!r} is ambiguous: {', '.join(ids[:5])}… Type more of the id.")
    return ids[0]
