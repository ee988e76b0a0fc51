"""Feedback: the true labels of logged predictions, sent when they become known (often days later).

Each call stores one parquet file in the artifact store under

    feedback/<model>/date=YYYY-MM-DD/<received time>-<random>.parquet

(the date is the day the labels arrived) with the columns ``request_id``, ``row`` (the row of the
request, 0 for one-row requests), ``label`` (numbers as float64, or text) and ``received``. Labels
join predictions by (request_id, row); when one key is labelled more than once, the label received
last wins, so a correction replaces the first answer and nothing is counted twice.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipway.core.errors import InvalidInput, ShipwayError

if TYPE_CHECKING:
    import pyarrow as pa

    from shipway.store import Store

PREFIX = "feedback"
COLUMNS = ("request_id", "row", "label")
MAX_REQUEST_ID = 256
MAX_ROW = 2**31 - 1  # the prediction log keeps a request's row as an int32
MAX_HTTP_LABELS = 100_000  # labels in one POST to a serving endpoint; more from record_feedback
_SHOWN = 5


@dataclass(frozen=True)
class FeedbackReceipt:
    """What one call to :func:`record_feedback` stored."""

    model: str
    labels: int
    key: str
    received: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "labels": self.labels,
            "key": self.key,
            "received": self.received.isoformat(),
        }


def record_feedback(model: str, labels: Any, *, store: Store | None = None) -> FeedbackReceipt:
    """Store the true ``labels`` of ``model``'s logged predictions.

    ``labels`` is a pandas DataFrame, an Arrow table, a list of records, a dict of columns, or the path
    of a .parquet or .csv file, with the columns ``request_id`` (the Shipway-Request-Id the prediction
    was answered with, or the V2 ``id``), ``row`` (optional, default 0) and ``label``.
    """
    from shipway.core.names import check_name
    from shipway.registry import list_versions
    from shipway.store import get_store

    store = store or get_store()
    if isinstance(model, str) and any(ch in model for ch in "@/"):
        raise InvalidInput(
            f"Labels belong to a model, whichever version answered: name the model ('churn'), not {model!r}."
        )
    check_name(model, "model")
    list_versions(model, store=store)  # NotFound for an unknown model, naming the registered ones
    table = _checked(_as_table(labels))
    received = datetime.now(UTC)
    table = table.append_column("received", _timestamps(received, table.num_rows))
    key = (
        f"{PREFIX}/{model}/date={received:%Y-%m-%d}/{received:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    )
    import pyarrow.parquet as pq

    fd, tmp = tempfile.mkstemp(prefix="shipway-feedback-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        store.blobs.backend.put(key, Path(tmp))
    finally:
        os.unlink(tmp)
    return FeedbackReceipt(model, table.num_rows, key, received)


def _timestamps(when: datetime, n: int) -> pa.Array:
    import pyarrow as pa

    return pa.array([when] * n, pa.timestamp("us", tz="UTC"))


# ---------------------------------------------------------------------------------------------
# Reading what was sent
# ---------------------------------------------------------------------------------------------


def _as_table(labels: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(labels, pa.Table):
        return labels
    if isinstance(labels, pa.RecordBatch):
        return pa.Table.from_batches([labels])
    if isinstance(labels, str | os.PathLike):
        return _read_file(Path(labels))
    if hasattr(labels, "columns") and hasattr(labels, "dtypes"):  # a pandas DataFrame
        frame = labels.reset_index(drop=True)
        return pa.table({str(c): _column(frame[c].tolist(), str(c)) for c in frame.columns})
    if isinstance(labels, Mapping):
        columns = {str(k): v for k, v in labels.items()}
        lengths = {len(v) for v in columns.values() if isinstance(v, list | tuple)}
        if len(lengths) != 1 or not all(isinstance(v, list | tuple) for v in columns.values()):
            raise InvalidInput("A dict of labels needs a list per column, all of the same length.")
        return pa.table({k: _column(list(v), k) for k, v in columns.items()})
    if isinstance(labels, list | tuple):
        bad = [i for i, r in enumerate(labels) if not isinstance(r, Mapping)]
        if bad:
            raise InvalidInput(
                f"labels[{bad[0]}] is not an object: each label is "
                '{"request_id": ..., "row": 0, "label": ...}.',
                details=[{"field": f"labels[{bad[0]}]", "problem": "is not an object"}],
            )
        names = list(dict.fromkeys(str(k) for r in labels for k in r))
        return pa.table({n: _column([r.get(n) for r in labels], n) for n in names})
    raise InvalidInput(
        "labels must be a DataFrame, an Arrow table, a list of records, a dict of columns or the path "
        f"of a .parquet or .csv file, not {type(labels).__name__}."
    )


def _column(values: list[Any], name: str) -> pa.Array:
    """A column from Python values: labels may mix ints and floats (float64), not numbers and text."""
    import pyarrow as pa

    if name == "request_id":
        return _ids(values)
    kinds = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, bool | int | float) or type(v).__module__ == "numpy":
            kinds.add("number")
        elif isinstance(v, str):
            kinds.add("text")
        else:
            kinds.add(type(v).__name__)
    if kinds == {"text"} or not kinds:
        return pa.array([None if v is None or v != v else v for v in values], pa.string())
    if kinds == {"number"}:
        numbers: list[float | None] = []
        too_large = []
        for i, v in enumerate(values):
            try:
                numbers.append(None if v is None or v != v else float(v))
            except OverflowError:  # an integer of hundreds of digits
                numbers.append(None)
                too_large.append(i)
        if too_large:
            raise _problem(name, too_large, "is a number too large to store (over 1.8e308)")
        return pa.array(numbers, pa.float64())
    raise InvalidInput(
        f"Column {name!r} mixes {' and '.join(sorted(kinds))}; give one kind of value (all numbers or "
        "all text).",
        details=[{"field": name, "problem": f"mixes {', '.join(sorted(kinds))}"}],
    )


def _ids(values: list[Any]) -> pa.Array:
    """Request ids as text: a whole number (12345, or 12345.0 from a column pandas made float) is
    its decimal text, as the id it was answered with."""
    import numbers

    import pyarrow as pa

    ids: list[str | None] = []
    bad = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, numbers.Real) and v != v):
            ids.append(None)  # reported as empty by _checked
        elif isinstance(v, str):
            ids.append(v)
        elif not isinstance(v, bool) and (
            isinstance(v, numbers.Integral)
            or (isinstance(v, numbers.Real) and math.isfinite(v) and v == int(v))
        ):
            ids.append(str(int(v)))
        else:
            ids.append(None)
            bad.append(i)
    if bad:
        raise _problem("request_id", bad, "is not text or a whole number")
    return pa.array(ids, pa.string())


def _read_file(path: Path) -> pa.Table:
    import pyarrow as pa

    if not path.is_file():
        raise InvalidInput(f"No labels file {path}.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as csv

            return csv.read_csv(
                path,
                parse_options=csv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","),
                convert_options=csv.ConvertOptions(column_types={"request_id": pa.string()}),
            )
    except (pa.ArrowException, OSError) as err:
        raise InvalidInput(f"Cannot read {path} as {suffix[1:]}: {err}") from err
    raise InvalidInput(f"Cannot read labels from {path}: use a .parquet or .csv file (got '{suffix}').")


def _rows(mask: Any) -> list[int]:
    import numpy as np

    return np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)).tolist()


def _problem(field: str, rows: list[int], what: str) -> InvalidInput:
    shown = ", ".join(map(str, rows[:_SHOWN])) + (", ..." if len(rows) > _SHOWN else "")
    return InvalidInput(
        f"{field} {what} in {len(rows)} label(s), at rows {shown}.",
        details=[{"field": field, "rows": rows[:100], "problem": what}],
    )


def _checked(table: pa.Table) -> pa.Table:
    """request_id (text), row (int64, default 0) and label (float64 or text), each present in every row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        raise InvalidInput("There are no labels to record.")
    names = table.column_names
    missing = [c for c in ("request_id", "label") if c not in names]
    if missing:
        raise InvalidInput(
            f"The labels have no {' or '.join(missing)} column; they need request_id, label and "
            f"optionally row (got {', '.join(names) or 'no columns'}).",
            details=[{"field": c, "problem": "is missing"} for c in missing],
        )
    extra = [c for c in names if c not in COLUMNS]
    if extra:
        raise InvalidInput(
            f"The labels have unexpected column(s) {', '.join(map(repr, extra))}: keep only request_id, "
            "row and label.",
            details=[{"field": c, "problem": "is not a label column"} for c in extra],
        )
    ids = table.column("request_id")
    if pa.types.is_integer(ids.type):
        ids = pc.cast(ids, pa.string())
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        raise InvalidInput(
            f"request_id must be text (the id a prediction was answered with), not {ids.type}."
        )
    ids = pc.cast(ids, pa.string())
    bad = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True)
    if pc.any(bad).as_py():
        raise _problem("request_id", _rows(bad), "is empty")
    too_long = pc.greater(pc.utf8_length(ids), MAX_REQUEST_ID)
    if pc.any(too_long).as_py():
        raise _problem("request_id", _rows(too_long), f"is longer than {MAX_REQUEST_ID} characters")

    if "row" in names:
        rows = table.column("row")
        if not (
            pa.types.is_integer(rows.type) or pa.types.is_floating(rows.type) or pa.types.is_null(rows.type)
        ):
            raise InvalidInput(f"row must be a whole number (the row of the request), not {rows.type}.")
        rows = pc.fill_null(pc.cast(rows, pa.float64()), 0.0)
        # (NaN is not its floor; infinity is over the largest row, the log's int32.)
        bad = pc.or_(pc.or_(pc.less(rows, 0), pc.greater(rows, MAX_ROW)), pc.not_equal(pc.floor(rows), rows))
        if pc.any(bad).as_py():
            raise _problem("row", _rows(bad), f"is not a whole number from 0 to {MAX_ROW}")
        rows = pc.cast(rows, pa.int64())
    else:
        rows = pa.array([0] * table.num_rows, pa.int64())

    label = table.column("label")
    if pa.types.is_dictionary(label.type):
        label = label.cast(label.type.value_type)
    if pa.types.is_boolean(label.type) or pa.types.is_integer(label.type) or pa.types.is_floating(label.type):
        label = pc.cast(label, pa.float64())
        bad = pc.or_(pc.is_null(label), pc.invert(pc.is_finite(pc.fill_null(label, 0.0))))
    elif (
        pa.types.is_string(label.type) or pa.types.is_large_string(label.type) or pa.types.is_null(label.type)
    ):
        label = pc.cast(label, pa.string())
        bad = pc.is_null(label)
    else:
        raise InvalidInput(f"label must be a number, a boolean or text, not {label.type}.")
    if pc.any(bad).as_py():
        raise _problem("label", _rows(pc.fill_null(bad, True)), "is missing or not finite")
    return pa.table({"request_id": ids, "row": rows, "label": label})


# ---------------------------------------------------------------------------------------------
# HTTP: POST /v2/models/{name}/feedback
# ---------------------------------------------------------------------------------------------


def http_feedback(model: str, body: bytes, store: Store | None) -> tuple[int, bytes]:
    """The status and JSON body answering ``{"labels": [{"request_id", "row", "label"}, ...]}``
    (at most MAX_HTTP_LABELS of them). The serving app calls it only for a model it routes."""
    import json

    def answer(status: int, code: str, message: str, details: Any = None) -> tuple[int, bytes]:
        return status, json.dumps({"error": message, "code": code, "details": details or []}).encode()

    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        return answer(400, "malformed_json", f"The body is not JSON: {err}.")
    labels = parsed.get("labels") if isinstance(parsed, dict) else None
    if not isinstance(labels, list):
        return answer(
            400,
            "malformed_request",
            'The body must be {"labels": [{"request_id": ..., "row": 0, "label": ...}, ...]}.',
            [{"field": "labels", "problem": "must be a list of objects"}],
        )
    if len(labels) > MAX_HTTP_LABELS:
        return answer(
            413,
            "too_many_labels",
            f"{len(labels):,} labels in one request; send at most {MAX_HTTP_LABELS:,} per request, or "
            "record them from a file with `shipway feedback MODEL --file labels.parquet`.",
            [{"field": "labels", "problem": f"has more than {MAX_HTTP_LABELS} items"}],
        )
    try:
        receipt = record_feedback(model, labels, store=store)
    except InvalidInput as err:
        return answer(422, "invalid_labels", err.message, err.details)
    except ShipwayError as err:
        status = err.http_status if err.http_status != 500 else 503
        code = "model_not_found" if status == 404 else err.code
        return answer(status, code, err.message, err.details)
    return 200, json.dumps(receipt.to_dict()).encode()


# ---------------------------------------------------------------------------------------------
# Reading labels back
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """The labels of a model, one per (request_id, row): the last one received."""

    table: pa.Table  # request_id, row, label, received
    received: int  # labels read, duplicates included
    duplicates: int  # labels replaced by a later one for the same key


def read_labels(model: str, *, since: datetime | None = None, store: Store) -> Labels:
    """The labels of ``model`` received on or after ``since``'s day (all of them without it)."""
    return latest_labels(
        [read_label_file(key, store=store) for key in label_files(model, since=since, store=store)]
    )


def label_files(model: str, *, since: datetime | None = None, store: Store) -> list[str]:
    """The keys of ``model``'s label files received on or after ``since``'s day, oldest first.
    Each is written once and never changed."""
    first_day = since.date() if since is not None else None
    keys = []
    for key in store.blobs.backend.list(f"{PREFIX}/{model}/"):
        if not key.endswith(".parquet"):
            continue
        day = _day_of(key)
        if first_day is not None and day is not None and day < first_day:
            continue
        keys.append(key)
    return sorted(keys)  # by day, then by received time


def read_label_file(key: str, *, store: Store) -> pa.Table:
    """One label file's request_id, row, label and received columns."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="shipway-feedback-") as tmp:
        path = Path(tmp) / "labels.parquet"
        store.blobs.backend.get(key, path)
        return pq.read_table(path, columns=["request_id", "row", "label", "received"])


def latest_labels(tables: list[pa.Table]) -> Labels:
    """Label files (oldest first) as one label per (request_id, row): the last one received."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not tables:
        empty = pa.table(
            {
                "request_id": pa.array([], pa.string()),
                "row": pa.array([], pa.int64()),
                "label": pa.array([], pa.float64()),
                "received": pa.array([], pa.timestamp("us", tz="UTC")),
            }
        )
        return Labels(empty, 0, 0)
    if len({t.schema.field("label").type for t in tables}) > 1:  # numbers in some files, text in others
        tables = [t.set_column(2, "label", pc.cast(t.column("label"), pa.string())) for t in tables]
    table = pa.concat_tables(tables)
    # Last one wins: the highest position in (received, file, row-in-file) order per key.
    order = pc.sort_indices(table, [("received", "ascending")])
    table = table.take(order).append_column("_order", pa.array(range(table.num_rows), pa.int64()))
    last = table.group_by(["request_id", "row"]).aggregate([("_order", "max")])
    kept = table.take(last.column("_order_max")).drop_columns(["_order"])
    return Labels(kept, table.num_rows, table.num_rows - kept.num_rows)


def _day_of(key: str) -> Any:
    import re

    m = re.search(r"/date=(\d{4}-\d{2}-\d{2})/", key)
    if m is None:
        return None
    try:
        return datetime.strptime(m[1], "%Y-%m-%d").date()
    except ValueError:
        return None
