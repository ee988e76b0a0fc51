"""Live quality: how right a deployment's predictions were, once their labels arrived.

Labels (see :mod:`shipway.monitoring.feedback`) join the predictions logged in the window by
(request_id, row), whenever they arrived: a label sent a week after its prediction counts for the
window the prediction was made in. The metrics are computed on the labelled predictions only, per
window, per arm, per version and per time bucket, each with its number of labelled rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipway.core.errors import InvalidInput
from shipway.monitoring.feedback import read_labels
from shipway.monitoring.sources import Window, answered, log_batches, no_predictions, resolve_target

if TYPE_CHECKING:
    import pyarrow as pa

    from shipway.store import Store

CLASSIFICATION, REGRESSION = "classification", "regression"
METRICS = {CLASSIFICATION: ("accuracy", "f1", "auc"), REGRESSION: ("rmse", "mae")}
# Time buckets: the smallest of these that cuts the window into at most MAX_BUCKETS.
BUCKETS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
)
MAX_BUCKETS = 24
# Prediction columns (``prediction.<name>``) read as the predicted label, and as a score for AUC.
LABEL_NAMES = ("label", "class", "prediction", "predicted", "predict", "y")
SCORE_HINTS = ("proba", "probability", "score")


@dataclass(frozen=True)
class QualityRow:
    """The metrics of one group of predictions: all of them, one arm, one version or one time bucket."""

    group: str  # "window", "arm", "version" or "time"
    key: str  # "all", "stable", "3", "2024-05-01 12:00"
    predictions: int  # answered predictions in the group
    labelled: int  # of them, those with a label
    metrics: dict[str, float | None]  # None: not computable on these rows (see the report's notes)

    @property
    def coverage(self) -> float:
        """The share of predictions that have a label."""
        return self.labelled / self.predictions if self.predictions else 0.0


class QualityReport:
    """Classification or regression metrics of the labelled predictions of a window."""

    def __init__(
        self,
        *,
        model: str,
        versions: list[str],
        window: Window,
        task: str,
        metrics: list[str],
        rows: list[QualityRow],
        prediction: str,
        score: str | None,
        labels_read: int,
        duplicates: int,
        notes: list[str],
    ) -> None:
        self.model = model
        self.versions = versions
        self.window = window
        self.task = task
        self.metrics = metrics
        self.rows = rows
        self.prediction = prediction
        self.score = score
        self.labels_read = labels_read
        self.duplicates = duplicates
        self.notes = notes

    def __repr__(self) -> str:
        o = self.overall
        shown = ", ".join(f"{m}={_fmt(o.metrics.get(m))}" for m in self.metrics)
        return f"QualityReport({self.model!r}, {self.window.label}: {o.labelled} labelled, {shown})"

    @property
    def overall(self) -> QualityRow:
        """The whole window."""
        return self.rows[0]

    @property
    def labelled(self) -> int:
        """Labelled predictions in the window."""
        return self.overall.labelled

    def group(self, group: str) -> list[QualityRow]:
        """The rows of one grouping: ``arm``, ``version`` or ``time``."""
        return [r for r in self.rows if r.group == group]

    def to_frame(self) -> Any:
        """One row per group: group, key, predictions, labelled, coverage and one column per metric."""
        import pandas as pd

        records = [
            {
                "group": r.group,
                "key": r.key,
                "predictions": r.predictions,
                "labelled": r.labelled,
                "coverage": r.coverage,
                **{m: r.metrics.get(m) for m in self.metrics},
            }
            for r in self.rows
        ]
        columns = ["group", "key", "predictions", "labelled", "coverage", *self.metrics]
        frame = pd.DataFrame(records, columns=columns)
        for m in self.metrics:
            frame[m] = frame[m].astype("float64")
        return frame

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "versions": self.versions,
            "window": self.window.to_dict(),
            "task": self.task,
            "metrics": self.metrics,
            "prediction": self.prediction,
            "score": self.score,
            "labelled": self.labelled,
            "labels_read": self.labels_read,
            "duplicates": self.duplicates,
            "rows": [{**asdict(r), "coverage": r.coverage} for r in self.rows],
            "notes": self.notes,
        }

    def to_html(self, path: str | os.PathLike[str] | None = None, *, title: str | None = None) -> str:
        """A self-contained page with the metrics per group and over time."""
        from shipway.monitoring.live_html import render_quality

        html = render_quality(self, title=title or f"Live quality: {self.model}")
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


# ---------------------------------------------------------------------------------------------
# live_quality
# ---------------------------------------------------------------------------------------------


def live_quality(
    model_ref: str,
    *,
    window: str | timedelta = "7d",
    until: datetime | str | None = None,
    version: int | str | None = None,
    task: str | None = None,
    prediction: str | None = None,
    score: str | None = None,
    store: Store | None = None,
) -> QualityReport:
    """Metrics of the predictions ``model_ref`` logged over the ``window`` ending at ``until`` (default
    now), from the labels recorded for them so far.

    ``task`` (``classification`` or ``regression``) is taken from the version's signature output, else
    from the types of the labels and predictions. ``prediction`` and ``score`` name the logged columns
    to read as the predicted value and as the positive class's score (for AUC) when the model returns
    several outputs (``prediction.<name>``); AUC is left out when no score was logged.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from shipway.store import get_store

    store = store or get_store()
    if task is not None and task not in METRICS:
        raise InvalidInput(f"task must be 'classification' or 'regression', not {task!r}.")
    target = resolve_target(model_ref, version, store)
    span = Window.ending(window, until)
    bucket = next((b for b in BUCKETS if span.length / b <= MAX_BUCKETS), BUCKETS[-1])
    labels = read_labels(target.name, since=span.start, store=store)
    keyed = labels.table.select(["request_id", "row", "label"])
    # Buckets on the clock (whole hours, days ...), the first holding the window's start.
    bucket_us = int(bucket.total_seconds() * 1_000_000)
    start_us = int(span.start.timestamp() * 1_000_000) // bucket_us * bucket_us
    last_bucket = (int(span.end.timestamp() * 1_000_000) - 1 - start_us) // bucket_us

    counts: dict[tuple[str, str], int] = {}
    joined: list[pa.Table] = []
    columns: tuple[str, str | None] | None = None
    prediction_type: pa.DataType | None = None
    seen = 0
    for batch in log_batches(target.name, span, version=target.version_label, store=store):
        ok = answered(batch)
        if not len(ok):
            continue
        seen += len(ok)
        if columns is None:
            columns = _outputs(ok, prediction, score)
        names = {
            "request_id": ok.meta("request_id"),
            "row": ok.meta("row"),
            "time": ok.meta("time"),
            "version": ok.meta("version"),
            "arm": ok.meta("arm"),
            "prediction": _real_column(ok, columns[0]),
        }
        if columns[1] is not None:
            names["score"] = _real_column(ok, columns[1])
        n = len(ok)
        names = {k: (v if v is not None else pa.nulls(n, pa.string())) for k, v in names.items()}
        part = pa.table(
            {
                **names,
                "request_id": pc.cast(names["request_id"], pa.string()),
                "row": pc.cast(names["row"], pa.int64()),
                "version": pc.cast(names["version"], pa.string()),
                "arm": pc.cast(names["arm"], pa.string()),
                "bucket": _buckets(names["time"], start_us, bucket_us),
            }
        )
        prediction_type = prediction_type or part.schema.field("prediction").type
        _count(part, counts)
        if keyed.num_rows:
            found = part.join(keyed, keys=["request_id", "row"], join_type="inner")
            if found.num_rows:
                joined.append(found)
    if columns is None:
        raise no_predictions(target, span)

    notes: list[str] = []
    if labels.duplicates:
        notes.append(
            f"{labels.duplicates:,} label(s) were sent again for a prediction already labelled; the "
            "last one received counts, each prediction once."
        )
    table = _latest_per_key(joined, notes)
    table, y_true, y_pred, y_score = _aligned(table, prediction_type)
    kind = task or _task(target, y_true, y_pred, prediction_type)
    metrics = list(METRICS[kind])
    if kind == CLASSIFICATION and columns[1] is None:
        metrics.remove("auc")
        notes.append("AUC is left out: no score or probability was logged with the predictions.")
    if not len(y_true):
        notes.append(
            "No labels have arrived for these predictions yet: send them with `shipway feedback` or "
            "shipway.monitoring.record_feedback (request_id from the Shipway-Request-Id header)."
        )

    groups: list[tuple[str, str, np.ndarray]] = [("window", "all", np.ones(len(y_true), bool))]
    for group in ("arm", "version"):
        values = _strings(table, group)
        keys = sorted({k for g, k in counts if g == group}, key=_natural)
        groups += [(group, k, values == k) for k in keys]
    buckets = (
        np.asarray(table.column("bucket").to_numpy(zero_copy_only=False)) if table.num_rows else np.array([])
    )
    for b in range(last_bucket + 1):
        groups.append(("time", str(b), buckets == b))
    rows = []
    problems: dict[str, str] = {}
    for group, key, mask in groups:
        values = {
            m: _metric(m, y_true[mask], y_pred[mask], None if y_score is None else y_score[mask], problems)
            for m in metrics
        }
        if group == "time":
            when = datetime.fromtimestamp((start_us + int(key) * bucket_us) / 1e6, UTC)
            shown = when.strftime("%Y-%m-%d %H:%M")
        else:
            shown = key
        total = seen if group == "window" else counts.get((group, key), 0)
        rows.append(QualityRow(group, shown, total, int(mask.sum()), values))
    notes += [f"{m}: {why}" for m, why in problems.items()]
    versions = sorted({k for g, k in counts if g == "version"}, key=_natural)
    return QualityReport(
        model=target.name,
        versions=versions,
        window=span,
        task=kind,
        metrics=metrics,
        rows=rows,
        prediction=columns[0],
        score=columns[1],
        labels_read=labels.received,
        duplicates=labels.duplicates,
        notes=notes,
    )


def _natural(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 62, key)


def _outputs(batch: Any, prediction: str | None, score: str | None) -> tuple[str, str | None]:
    """The predicted-value column and the score column (or None), by their usual names."""
    shown = {batch.prediction_name(p): p for p in batch.predictions}
    for given in (prediction, score):
        if given is not None and given not in shown:
            raise InvalidInput(
                f"The prediction log of this model has no column {given!r}; it has "
                f"{', '.join(shown) or 'none'}."
            )
    if not shown:
        raise InvalidInput("The prediction log has no prediction column to compare the labels with.")
    if prediction is None:
        if len(shown) == 1:
            prediction = next(iter(shown))
        else:
            suffix = {name.split(".", 1)[-1].lower(): name for name in shown}
            found = next((suffix[n] for n in LABEL_NAMES if n in suffix), None)
            if found is None:
                raise InvalidInput(
                    f"The model logs several outputs ({', '.join(shown)}): say which is the predicted "
                    "value with prediction='prediction.<name>' (--prediction)."
                )
            prediction = found
    if score is None and len(shown) > 1:
        import pyarrow as pa

        for name, real in shown.items():
            hinted = any(h in name.lower() for h in SCORE_HINTS)
            if name != prediction and hinted and pa.types.is_floating(batch.batch.column(real).type):
                score = name
                break
    for name in (prediction, score):
        if name is not None and _nested(batch.batch.column(shown[name]).type):
            raise InvalidInput(
                f"The prediction log's column {name!r} holds a list of values per row, and live quality "
                "compares one value per row with its label; name a column of single values with "
                f"prediction= (and score=) if the model logs one: it logs {', '.join(shown)}."
            )
    return prediction, score


def _nested(type_: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_nested(type_))


def _real_column(batch: Any, name: str) -> Any:
    for real in batch.predictions:
        if batch.prediction_name(real) == name:
            return batch.batch.column(real)
    return None


def _buckets(times: Any, start_us: int, bucket_us: int) -> Any:
    import pyarrow as pa

    micros = np.asarray(times.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    return pa.array((micros - start_us) // bucket_us, pa.int64())


def _count(part: Any, counts: dict[tuple[str, str], int]) -> None:
    import pyarrow.compute as pc

    for group in ("arm", "version", "bucket"):
        found = pc.value_counts(part.column(group))
        name = "time" if group == "bucket" else group
        for value, count in zip(
            found.field("values").to_pylist(), found.field("counts").to_pylist(), strict=True
        ):
            key = (name, "-" if value is None else str(value))
            counts[key] = counts.get(key, 0) + int(count)


def _latest_per_key(parts: list[Any], notes: list[str]) -> Any:
    """The labelled predictions, one per (request_id, row): a request id a client reused keeps its
    latest prediction, so a label is never counted twice."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not parts:
        return pa.table(
            {
                "request_id": pa.array([], pa.string()),
                "row": pa.array([], pa.int64()),
                "arm": pa.array([], pa.string()),
                "version": pa.array([], pa.string()),
                "bucket": pa.array([], pa.int64()),
                "prediction": pa.array([], pa.float64()),
                "label": pa.array([], pa.float64()),
            }
        )
    table = pa.concat_tables(parts, promote_options="permissive")
    table = table.take(pc.sort_indices(table, [("time", "ascending")]))
    table = table.append_column("_order", pa.array(np.arange(table.num_rows), pa.int64()))
    last = table.group_by(["request_id", "row"]).aggregate([("_order", "max")])
    if last.num_rows < table.num_rows:
        notes.append(
            f"{table.num_rows - last.num_rows:,} prediction(s) reused a request id already logged in the "
            "window; each label counts once, for the latest of them."
        )
        table = table.take(np.sort(last.column("_order_max").to_numpy()))
    return table.drop_columns(["_order"])


def _strings(table: Any, column: str) -> np.ndarray:
    values = table.column(column).to_pylist()
    return np.array(["-" if v is None else str(v) for v in values], dtype=object)


def _aligned(table: Any, prediction_type: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels and predictions as arrays of one kind: numbers (float64) or text, without the rows
    whose prediction or score is missing (null or NaN); the table without them too, so the arm,
    version and time groups built from it line up with the arrays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    label = table.column("label")
    pred = table.column("prediction")
    if pa.types.is_string(label.type) and not pa.types.is_string(pred.type):
        if pa.types.is_boolean(pred.type):
            pred = pc.cast(pc.cast(pred, pa.int64()), pa.string())
        else:
            pred = pc.cast(pred, pa.string())
    elif not pa.types.is_string(label.type) and pa.types.is_string(pred.type):
        try:
            pred = pc.cast(pred, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InvalidInput(
                "The labels are numbers but the predictions are text; send the labels as the model "
                "predicts them (the same class names)."
            ) from None
    elif not pa.types.is_string(label.type):
        pred = pc.cast(pred, pa.float64())
    y_true = np.asarray(label.to_numpy(zero_copy_only=False))
    y_pred = np.asarray(pred.to_numpy(zero_copy_only=False))
    y_score = None
    if "score" in table.column_names:
        y_score = np.asarray(pc.cast(table.column("score"), pa.float64()).to_numpy(zero_copy_only=False))
    keep = np.array([v is not None for v in y_pred]) if y_pred.dtype == object else ~np.isnan(y_pred)
    if y_score is not None:
        keep &= ~np.isnan(y_score)
    if not keep.all():
        table = table.filter(pa.array(keep, pa.bool_()))
        y_true, y_pred = y_true[keep], y_pred[keep]
        y_score = None if y_score is None else y_score[keep]
    return table, y_true, y_pred, y_score


def _task(target: Any, y_true: np.ndarray, y_pred: np.ndarray, prediction_type: Any) -> str:
    """Classification or regression: from the version's signature output, else from the data."""
    import pyarrow as pa

    output = (target.version.schema or {}).get("output") if target.version is not None else None
    dtype = None
    if output and output.get("kind") == "tensor":
        dtype = str(output.get("dtype", ""))
    if dtype:
        return REGRESSION if dtype.startswith("float") else CLASSIFICATION
    if y_true.dtype == object or (prediction_type is not None and not pa.types.is_floating(prediction_type)):
        return CLASSIFICATION
    both = np.concatenate([y_true.astype(np.float64), y_pred.astype(np.float64)])
    whole = bool(np.all(np.equal(np.mod(both, 1), 0)))
    return CLASSIFICATION if whole and len(np.unique(both)) <= 20 else REGRESSION


def _metric(
    metric: str, y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray | None, problems: dict[str, str]
) -> float | None:
    from shipway.governance.metrics import compute

    if not len(y_true):
        return None
    if metric == "auc" and y_score is None:
        return None
    try:
        if metric == "auc":
            return compute("auc", y_true, y_score=y_score)
        return compute(metric, y_true, y_pred)
    except InvalidInput as err:
        problems.setdefault(metric, f"not computed on some groups ({err.message})")
        return None
