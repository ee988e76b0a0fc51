"""Live quality for the rollout analysis: how many of each arm's answers the labels say were wrong.

Serving logs every answer with its arm and rollout (the prediction log); labels arrive later
through feedback (``shipway feedback``, or ``POST /v2/models/{name}/feedback``), keyed by request
id and row. For a rollout in progress, this joins the two: each logged, answered, non-shadow
prediction of the rollout that has a label counts once for its arm (a relabelled key counts its
latest label), and is wrong when the label differs from the predicted class. Only class
predictions are judged (integers, booleans or text); regression outputs are left to monitoring.

The whole rollout counts, not only the current step: quality needs labels, which come slowly,
and both arms are compared over the same stretch of time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from shipway.store import Store, schema

log = logging.getLogger("shipway.rollout")

ARMS = ("stable", "candidate")


def labelled_by_arm(store: Store, model: str, rollout_id: str) -> dict[str, tuple[int, int]]:
    """``{arm: (labelled, wrong)}`` for the rollout so far; empty when nothing is labelled yet."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from shipway.monitoring.feedback import read_labels
    from shipway.serving import read_predictions

    with store.read() as conn:
        started = conn.execute(
            sa.select(schema.rollouts.c.started_at).where(schema.rollouts.c.id == rollout_id)
        ).scalar()
    if started is None:
        return {}
    since = datetime.fromtimestamp(started / 1000, tz=UTC)
    until = datetime.now(UTC)  # files written after this pass wait for the next one
    labels = read_labels(model, since=since, store=store).table
    if labels.num_rows == 0:
        return {}
    logged = read_predictions(
        model,
        since=since,
        until=until,
        columns=["request_id", "row", "time", "arm", "rollout_id", "status", "prediction"],
        store=store,
    )
    if logged.num_rows == 0 or "prediction" not in logged.column_names:
        return {}
    ours = pc.and_(
        pc.equal(logged.column("rollout_id"), rollout_id),
        pc.and_(pc.equal(logged.column("status"), 200), pc.is_in(logged.column("arm"), pa.array(ARMS))),
    )
    logged = logged.filter(pc.fill_null(ours, False))
    if logged.num_rows == 0 or not _classes(logged.column("prediction").type):
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
