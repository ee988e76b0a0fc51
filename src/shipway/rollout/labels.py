"""Live quality for the rollout analysis: how many of each arm's answers the labels say were wrong.

Serving logs every answer with its arm and rollout (the prediction log); labels arrive later
through feedback (``shipway feedback``, or ``POST /v2/models/{name}/feedback``), keyed by request
id and row. For a rollout in progress, this joins the two: each logged, answered, non-shadow
prediction of the rollout that has a label counts once for its arm (a relabelled key counts its
latest label), and is wrong when the label differs from the predicted class. Only class
predictions are judged (integers, booleans or text); regression outputs are left to monitoring.

The whole rollout counts, not only the current step: quality needs labels, which come slowly,
and both arms are compared over the same stretch of time.

The controller asks at every tick, and a long rollout's log is large, so the files read are
remembered per rollout (log and label files are written once and never changed): each tick reads
only the files that appeared since the last, keeping just this rollout's answered rows of the few
columns the join needs, and joins in memory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from shipway.store import Store, schema

log = logging.getLogger("shipway.rollout")

ARMS = ("stable", "candidate")


LOG_COLUMNS = ["request_id", "row", "time", "arm", "rollout_id", "status", "prediction"]
FORGET_AFTER_S = 3600.0  # a rollout not asked about for this long is dropped from the cache


@dataclass
class _Read:
    """The files of one rollout read so far, by key: its rows of each log file (None when a file
    held none), and each label file."""

    predictions: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


_cache: dict[tuple[int, str], _Read] = {}
_cache_lock = threading.Lock()


@contextlib.contextmanager
def _read_so_far(store: Store, rollout_id: str) -> Iterator[_Read]:
    """What was read for this rollout, held by one caller at a time."""
    now = time.monotonic()
    with _cache_lock:
        for key in [k for k, v in _cache.items() if now - v.used > FORGET_AFTER_S]:
            del _cache[key]
        read = _cache.setdefault((id(store), rollout_id), _Read())
        read.used = now
    with read.lock:
        yield read


def forget(rollout_id: str) -> None:
    """Drop what was read for a rollout that ended."""
    with _cache_lock:
        for key in [k for k in _cache if k[1] == rollout_id]:
            del _cache[key]


def labelled_by_arm(store: Store, model: str, rollout_id: str) -> dict[str, tuple[int, int]]:
    """``{arm: (labelled, wrong)}`` for the rollout so far; empty when nothing is labelled yet."""
    with _read_so_far(store, rollout_id) as read:
        return _labelled(store, model, rollout_id, read)


def _labelled(store: Store, model: str, rollout_id: str, read: _Read) -> dict[str, tuple[int, int]]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from shipway.monitoring.feedback import label_files, latest_labels, read_label_file
    from shipway.serving.predlog_read import prediction_files, read_prediction_file

    with store.read() as conn:
        started = conn.execute(
            sa.select(schema.rollouts.c.started_at).where(schema.rollouts.c.id == rollout_id)
        ).scalar()
    if started is None:
        return {}
    since = datetime.fromtimestamp(started / 1000, tz=UTC)
    for key in label_files(model, since=since, store=store):
        if key not in read.labels:
            read.labels[key] = read_label_file(key, store=store)
    labels = latest_labels(list(read.labels.values())).table
    if labels.num_rows == 0:
        return {}
    # Up to now: the days since the rollout started are listed, not the model's whole history.
    for key in prediction_files(model, since=since, until=datetime.now(UTC), store=store):
        if key not in read.predictions:
            rows = read_prediction_file(key, LOG_COLUMNS, store=store)
            ours = pc.and_(
                pc.and_(
                    pc.equal(rows.column("rollout_id"), rollout_id), pc.equal(rows.column("status"), 200)
                ),
                pc.is_in(rows.column("arm"), pa.array(ARMS)),
            )
            rows = rows.filter(pc.fill_null(ours, False)).select(
                ["request_id", "row", "time", "arm", "prediction"]
            )
            read.predictions[key] = rows if rows.num_rows else None
    parts = [t for t in read.predictions.values() if t is not None]
    if not parts:
        return {}
    logged = _concat(parts)
    if not _classes(logged.column("prediction").type):
        return {}
    # A request id a client reused keeps its latest answer, so a label never counts twice.
    logged = logged.take(pc.sort_indices(logged, [("time", "ascending")]))
    logged = logged.append_column("_order", pa.array(np.arange(logged.num_rows), pa.int64()))
    latest = logged.group_by(["request_id", "row"]).aggregate([("_order", "max")]).column("_order_max")
    logged = _keyed(logged.take(latest).select(["request_id", "row", "arm", "prediction"]))
    keyed = _keyed(labels.select(["request_id", "row", "label"]))
    joined = logged.join(keyed, ["request_id", "row"], join_type="inner")
    if joined.num_rows == 0:
        return {}
    wrong = _differs(joined.column("prediction"), joined.column("label"))
    arms = joined.column("arm").to_numpy(zero_copy_only=False)
    return {arm: (int((arms == arm).sum()), int(wrong[arms == arm].sum())) for arm in ARMS}


def _concat(tables: list[Any]) -> Any:
    """The rows of several log files as one table; predictions typed differently between versions
    (integers in one, text in another) become text, which is how they are compared anyway."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types = {t.schema.field("prediction").type for t in tables}
    if len(types) > 1:
        known = [t for t in types if not pa.types.is_null(t)]
        if len(known) > 1 and not all(pa.types.is_integer(t) for t in known):
            tables = [
                t.set_column(4, "prediction", pc.cast(t.column("prediction"), pa.string())) for t in tables
            ]
    return pa.concat_tables(tables, promote_options="permissive")


def _keyed(table: object) -> object:
    """``table`` with its key columns as (string, int64), so logs and labels join."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = table
    t = t.set_column(
        t.schema.get_field_index("request_id"), "request_id", pc.cast(t["request_id"], pa.string())
    )  # type: ignore[attr-defined]
    return t.set_column(t.schema.get_field_index("row"), "row", pc.cast(t["row"], pa.int64()))  # type: ignore[attr-defined]


def _classes(arrow_type: object) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type) or pa.types.is_string(arrow_type)
    )


def _differs(predicted: object, labels: object) -> object:
    """Per row, whether the predicted class differs from the label (compared as text, so 1, 1.0
    and "1" are one class)."""
    import numpy as np

    def text(values: object) -> np.ndarray:
        out = []
        for v in values.to_pylist():  # type: ignore[attr-defined]
            if isinstance(v, bool) or (isinstance(v, float) and v.is_integer()):
                v = int(v)
            out.append(str(v))
        return np.array(out, dtype=object)

    return text(predicted) != text(labels)
