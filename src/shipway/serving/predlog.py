"""The prediction log: what each served request asked and got, as parquet files monitoring reads.

A :class:`PredictionLog` is an app listener. On the event loop it only appends references to
the request's columns (minus the ones it must never write) to per-column lists of a bounded
buffer; a background thread turns them into one parquet file per (model, version, hour) every
``flush_seconds`` or ``flush_rows``, writes it to a temporary file and puts it in the artifact
store, which makes it visible all at once. A worker killed mid-flush loses what it had not yet
flushed, never a file.

Each input row of a request is one row of the file, under the key

    predictions/<model>/date=YYYY-MM-DD/hour=HH/<worker>-<flush time>-<seq>-v<version>.parquet

with the metadata columns first (``request_id``, ``row``, ``time``, ``model``, ``version``,
``arm``, ``status``, ``error``, ``latency_ms``, ``mirrored``, ``rollout_id``), then each input
column under its own name, then ``prediction`` (``prediction.<name>`` for several outputs).
Columns the version's signature marks ``pii`` are never written, nor anything the signature
does not take (a sticky key field, a misspelt column). A feature named like a metadata or
prediction column keeps its name; that column gets a leading underscore (``_time``, more if
taken), and the file's ``shipway.prediction_log`` schema metadata records the names used.

``predlog_read`` (:func:`~shipway.serving.read_predictions`) reads them back.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipway.core.errors import InvalidInput
from shipway.serving.app import PredictionEvent
from shipway.store import Store, get_store

if TYPE_CHECKING:
    from shipway.registry import Signature

log = logging.getLogger("shipway.serving")

PREFIX = "predictions"
FORMAT = 1
METADATA_KEY = b"shipway.prediction_log"
PREDICTION = "prediction"
TIMESTAMP = pa.timestamp("us", tz="UTC")
# The metadata columns, in file order, and their types.
METADATA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("time", TIMESTAMP),
        ("model", pa.string()),
        ("version", pa.string()),
        ("arm", pa.string()),
        ("status", pa.int16()),
        ("error", pa.string()),
        ("latency_ms", pa.float64()),
        ("mirrored", pa.bool_()),
        ("rollout_id", pa.string()),
    ]
)
# A signature column's kind -> its type in the log (datetimes are kept as the text sent).
KIND_TYPES: dict[str, pa.DataType] = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "datetime": pa.string(),
}
_HOUR_US = 3_600_000_000
_WORKER_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_PLANS = 256
_DTYPE = operator.attrgetter("dtype")


def _now_us() -> int:
    """Microseconds since the epoch: a request's ``time`` (when it was answered)."""
    return time.time_ns() // 1000


def default_worker() -> str:
    """This process's name in file keys: ``hostname-pid-suffix``, the name it has in the traffic
    and windows tables (:func:`shipway.serving.windows.default_worker`) with dashes."""
    from shipway.serving.windows import default_worker as table_name

    return table_name().replace(":", "-")


def segment(name: str) -> str:
    """A name as one key segment: percent-encoded, never ``.`` or ``..``."""
    quoted = quote(name, safe="")
    return quoted.replace(".", "%2E") if not quoted.strip(".") else quoted


class _Plan(NamedTuple):
    """What to keep of a version's requests: its signature's non-PII columns and their types."""

    signature: Signature | None  # held so the id() the plan is cached under stays this one's
    features: tuple[str, ...] | None  # None: no signature, every column sent is an input
    types: dict[str, pa.DataType]


def _plan(signature: Signature | None) -> _Plan:
    if signature is None:
        return _Plan(None, None, {})
    kept = [c for c in signature.inputs if not c.pii]
    return _Plan(signature, tuple(c.name for c in kept), {c.name: KIND_TYPES.get(c.kind) for c in kept})


def _own(column: np.ndarray) -> np.ndarray:
    """``column``, copied when it is a view of more than itself: a binary V2 tensor views the
    whole request body, a column of a [rows, columns] input the whole matrix, and keeping the
    view would keep the other columns (PII among them) in memory until the flush."""
    base = column.base
    while type(base) is np.ndarray and base.nbytes == column.nbytes:
        if base.base is None:
            return column  # a reshaped array that owns exactly these values
        base = base.base
    return column.copy()


class _Group:
    """The requests of one (model, version, hour) waiting to be written, kept column by column so
    that writing them is one concatenation per column."""

    __slots__ = (
        "arms",
        "endpoint",
        "errors",
        "features",
        "gaps",
        "latencies",
        "mirrored",
        "plan",
        "predictions",
        "request_ids",
        "rollouts",
        "rows",
        "simple",
        "statuses",
        "times",
        "version",
    )

    def __init__(self, endpoint: str, version: str, plan: _Plan) -> None:
        self.endpoint = endpoint
        self.version = version
        self.plan = plan
        self.request_ids: list[str | None] = []
        self.arms: list[str] = []
        self.statuses: list[int] = []
        self.errors: list[str | None] = []
        self.latencies: list[float] = []
        self.mirrored: list[bool] = []
        self.rollouts: list[str | None] = []
        self.times: list[int] = []
        self.rows: list[int] = []
        self.features: dict[str, list[np.ndarray | None]] = {n: [] for n in plan.features or ()}
        self.gaps: set[str] = set()  # feature columns some request lacks
        self.predictions: list[Any] = []
        self.simple = True  # every request's predictions one 1-D array

    def add(self, event: PredictionEvent, rows: int, now_us: int) -> None:
        self.request_ids.append(event.request_id)
        self.arms.append(event.arm)
        self.statuses.append(event.status)
        self.errors.append(event.error)
        self.latencies.append(event.seconds * 1000.0)
        self.mirrored.append(event.mirrored)
        self.rollouts.append(event.rollout.id if event.rollout is not None else None)
        self.times.append(now_us)
        self.rows.append(rows)
        columns = event.columns
        # Only the columns the plan keeps (never PII): nothing else is held, even until the flush.
        for name, values in self.features.items():
            column = columns.get(name)
            if column is None:
                self.gaps.add(name)
            elif column.base is not None:
                column = _own(column)
            values.append(column)
        if self.plan.features is None:  # no signature: every column sent, as it first appears
            for name, column in columns.items():
                if name not in self.features:
                    if column.base is not None:
                        column = _own(column)
                    self.features[name] = [*([None] * (len(self.rows) - 1)), column]
                    if len(self.rows) > 1:
                        self.gaps.add(name)
        predictions = event.predictions
        self.predictions.append(predictions)
        if type(predictions) is not np.ndarray or predictions.ndim != 1:
            self.simple = False


class PredictionLog:
    """Writes every (or a ``sample`` of) prediction request to parquet files in the background.

    ``sample`` is the share of requests logged, decided by a hash of the request id, so a
    request and its shadow copies are logged together or not at all. Beyond ``max_rows`` rows
    waiting to be written, requests are dropped (counted in ``dropped`` and warned about) rather
    than let the buffer grow without bound.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        sample: float = 1.0,
        flush_rows: int = 10_000,
        flush_seconds: float = 10.0,
        max_rows: int = 100_000,
        worker: str | None = None,
        compression: str = "zstd",
    ) -> None:
        if not 0 < sample <= 1:
            raise InvalidInput(
                f"The prediction log's sample must be over 0 and at most 1, not {sample}; "
                "to log nothing, turn the log off (--no-prediction-log)."
            )
        if flush_rows < 1 or not flush_seconds > 0 or max_rows < flush_rows:
            raise InvalidInput(
                f"The prediction log needs flush_rows >= 1 (not {flush_rows}), flush_seconds > 0 "
                f"(not {flush_seconds}) and max_rows >= flush_rows (not {max_rows})."
            )
        self.store = store or get_store(connect=False)
        self.backend = self.store.blobs.backend
        self.sample = sample
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self.worker = _WORKER_UNSAFE.sub("_", worker or default_worker())
        self.compression = compression
        self.dropped = 0  # rows dropped because the buffer was full, or a file could not be written
        self.written = 0  # rows written to files
        self._threshold = None if sample >= 1 else int(sample * 2**32)
        self._plans: dict[int, _Plan] = {}
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str, int, int], _Group] = {}
        self._rows = 0
        self._unreported = 0
        self._pending: list[tuple[tuple[str, str, int], pa.Table]] = []  # built, not yet stored
        self._flushing = threading.Lock()
        self._seq = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- on the event loop: a few microseconds -----------------------------------------------

    def __call__(self, event: PredictionEvent) -> None:
        request_id = event.request_id
        if self._threshold is not None and zlib.crc32((request_id or "").encode()) >= self._threshold:
            return
        columns = event.columns
        if columns:
            rows = len(next(iter(columns.values())))
        else:
            rows = len(event.predictions) if event.predictions is not None else 1
        now = _now_us()
        signature = event.signature
        key = (event.endpoint, event.version, now // _HOUR_US, id(signature))
        with self._lock:
            if self._rows + rows > self.max_rows:
                self.dropped += rows
                self._unreported += rows
                return
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(event.endpoint, event.version, self._plan(signature))
            group.add(event, rows, now)
            self._rows += rows
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    def _plan(self, signature: Signature | None) -> _Plan:
        plan = self._plans.get(id(signature))
        if plan is None or plan.signature is not signature:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[id(signature)] = _plan(signature)
        return plan

    # -- on the log's thread -------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything buffered now; how many files were written."""
        with self._flushing:
            with self._lock:
                groups, self._groups = self._groups, {}
                self._rows = 0
                unreported, self._unreported = self._unreported, 0
            if unreported:
                log.warning(
                    "prediction log: dropped %d row(s) since the last flush: more than %d rows were "
                    "waiting to be written (%d dropped in all)",
                    unreported,
                    self.max_rows,
                    self.dropped,
                )
            work, self._pending = self._pending, []
            for (endpoint, version, hour, _), group in groups.items():
                try:
                    work.append(((endpoint, version, hour), build_table(group, worker=self.worker)))
                except Exception:  # a bug: lose this group, never the thread
                    log.exception(
                        "prediction log: could not build the rows of %s version %s", endpoint, version
                    )
                    with self._lock:
                        self.dropped += sum(group.rows)
            written = 0
            for key, table in work:
                try:
                    self._store(key, table)
                except Exception as exc:
                    self._keep(key, table, exc)
                    continue
                written += 1
                self.written += table.num_rows
            return written

    def _store(self, key: tuple[str, str, int], table: pa.Table) -> None:
        endpoint, version, hour = key
        when = datetime.fromtimestamp(hour * 3600, UTC)
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{self.worker}-{stamp}-{self._seq:06d}-v{segment(version)}.parquet"
        blob_key = f"{PREFIX}/{segment(endpoint)}/date={when:%Y-%m-%d}/hour={when:%H}/{name}"
        fd, tmp = tempfile.mkstemp(prefix="shipway-predictions-", suffix=".parquet")
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression=self.compression)
            self.backend.put(blob_key, Path(tmp))
        finally:
            os.unlink(tmp)

    def _keep(self, key: tuple[str, str, int], table: pa.Table, exc: Exception) -> None:
        """Keep a file that could not be stored for the next flush, within the row limit."""
        waiting = sum(t.num_rows for _, t in self._pending)
        if waiting + table.num_rows > self.max_rows:
            with self._lock:
                self.dropped += table.num_rows
            log.error(
                "prediction log: dropped %d row(s) of %s version %s that could not be stored: %s",
                table.num_rows,
                key[0],
                key[1],
                exc,
            )
            return
        log.warning("prediction log: will retry %d row(s) of %s: %s", table.num_rows, key[0], exc)
        self._pending.append((key, table))

    def start(self) -> PredictionLog:
        """Flush every ``flush_seconds`` (sooner at ``flush_rows``) in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="shipway-predictions", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # never let the thread die: the next flush tries again
                log.exception("prediction log: flush failed")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and write what is left (the app calls this at shutdown)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self.flush()
        for wait in (0.5, 1.0, 2.0):  # the store refused the last writes: a few more tries, then say so
            if not self._pending:
                return
            time.sleep(wait)
            self.flush()
        if self._pending:
            lost = sum(t.num_rows for _, t in self._pending)
            self._pending = []
            with self._lock:
                self.dropped += lost
            log.error("prediction log: %d row(s) could not be stored before shutdown and are lost", lost)


# -- building a file ---------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def as_text(values: Iterable[Any]) -> pa.Array:
    return pa.array([None if _missing(v) else str(v) for v in values], pa.string())


def _arrow(values: Any, type_: pa.DataType | None) -> pa.Array:
    """``values`` as an Arrow array of ``type_`` (NaN read as missing); raises when it cannot be."""
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        array = as_text(values)  # mixed or odd objects: their text
    if type_ is None or array.type == type_:
        return array
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), type_)
    try:
        return array.cast(type_)
    except (pa.ArrowException, TypeError, ValueError):
        if type_ == pa.string():
            return as_text(values)
        raise


def _concatenate(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The requests' arrays end to end. Numbers of one dtype are joined as bytes, a few times
    faster than ``np.concatenate`` on thousands of one-row arrays (the usual flush)."""
    dtypes = list(map(_DTYPE, parts))
    dtype = dtypes[0]
    if dtype.kind in "biuf" and dtypes.count(dtype) == len(dtypes):
        try:
            return np.frombuffer(b"".join(parts), dtype)
        except (BufferError, TypeError, ValueError):  # a strided view (a column of a V2 matrix)
            pass
    return np.concatenate(parts)


def _column(
    parts: Sequence[Any], counts: Sequence[int], type_: pa.DataType | None, *, whole: bool = False
) -> pa.Array:
    """One column of a file from each request's values (None where a request lacks it; ``whole``
    when none does)."""
    if whole or all(p is not None for p in parts):
        try:  # the common case: one concatenation, one conversion
            return _arrow(parts[0] if len(parts) == 1 else _concatenate(parts), type_)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
    arrays: list[pa.Array | None] = []
    for part in parts:
        if part is None:
            arrays.append(None)
            continue
        try:
            arrays.append(_arrow(part, type_))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            arrays.append(None)  # a refused request's value the column's type cannot hold
    if type_ is None:
        found = [a.type for a in arrays if a is not None and not pa.types.is_null(a.type)]
        type_ = found[0] if found else pa.null()
    out = []
    for array, part, n in zip(arrays, parts, counts, strict=True):
        if array is not None and array.type != type_:
            try:
                array = _arrow(part, type_)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                array = None
        out.append(array if array is not None else pa.nulls(n, type_))
    return pa.concat_arrays(out)


def _outputs(predictions: Any, rows: int) -> dict[str | None, Any]:
    """A request's predictions as named 1-D columns (None: the single unnamed output)."""
    if hasattr(predictions, "columns") and hasattr(predictions, "iloc"):
        named = {str(c): predictions[c].to_numpy() for c in predictions.columns}
        return {None: next(iter(named.values()))} if len(named) == 1 else named
    array = np.asarray(predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 1:
        return {None: array}
    if array.ndim == 2:
        return {str(j): array[:, j] for j in range(array.shape[1])}
    values = np.empty(rows, dtype=object)  # several dimensions per row: a list per row
    values[:] = [row.reshape(-1).tolist() for row in array]
    return {None: values}


def _free(name: str, taken: set[str]) -> str:
    while name in taken:
        name = "_" + name
    return name


def build_table(group: _Group, *, worker: str = "") -> pa.Table:
    """The rows of one file: requests of one (model, version), one row per input row."""
    counts = np.asarray(group.rows, dtype=np.int64)
    total = int(counts.sum())
    single = len(counts) == 1

    def repeat(values: list[Any], type_: pa.DataType) -> pa.Array:
        if single:
            return pa.array(values * total, type_)
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return pa.array(np.repeat(column, counts), type_)

    def numbers(values: list[Any], dtype: Any) -> pa.Array:
        return pa.array(np.repeat(np.asarray(values, dtype=dtype), counts))

    starts = np.repeat(np.cumsum(counts) - counts, counts)
    meta = {
        "request_id": repeat(group.request_ids, pa.string()),
        "row": pa.array((np.arange(total) - starts).astype(np.int32)),
        "time": pa.array(np.repeat(np.asarray(group.times, dtype=np.int64), counts), TIMESTAMP),
        "model": pa.array([group.endpoint] * total, pa.string()),
        "version": pa.array([group.version] * total, pa.string()),
        "arm": repeat(group.arms, pa.string()),
        "status": numbers(group.statuses, np.int16),
        "error": repeat(group.errors, pa.string()),
        "latency_ms": numbers(group.latencies, np.float64),
        "mirrored": numbers(group.mirrored, bool),
        "rollout_id": repeat(group.rollouts, pa.string()),
    }
    types = group.plan.types
    features = {}
    for name, values in group.features.items():
        features[name] = _column(values, counts, types.get(name), whole=name not in group.gaps)
        time.sleep(0)  # let the event loop take the GIL between columns, not after 5 ms

    predictions = _predictions(group, counts, total)
    # Features keep their names; a metadata or prediction column named like one gives way.
    taken = set(features)
    renamed: dict[str, str] = {}
    for name in [*meta, *predictions]:
        free = _free(name, taken)
        taken.add(free)
        if free != name:
            renamed[name] = free
    columns = {renamed.get(k, k): v for k, v in meta.items()}
    columns.update(features)
    columns.update({renamed.get(k, k): v for k, v in predictions.items()})
    info = {
        "format": FORMAT,
        "model": group.endpoint,
        "version": group.version,
        "worker": worker,
        "features": list(features),
        "predictions": [renamed.get(k, k) for k in predictions],
        "renamed": renamed,
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})


def _predictions(group: _Group, counts: np.ndarray, total: int) -> dict[str, pa.Array]:
    """``prediction``, or ``prediction.<name>`` for each of several outputs (null where failed)."""
    if group.simple:  # the common case: each request's answer is one 1-D array
        return {PREDICTION: _column(group.predictions, counts, None, whole=True)}
    outputs = [
        _outputs(p, n) if p is not None else {} for p, n in zip(group.predictions, group.rows, strict=True)
    ]
    names: dict[str | None, None] = {}
    for o in outputs:
        names.update(dict.fromkeys(o))
    if len(names) > 1:
        names.pop(None, None)  # an unnamed output among named ones: the version changed shape
    if not names:
        return {PREDICTION: pa.nulls(total)}
    if len(names) == 1:
        return {PREDICTION: _column([next(iter(o.values()), None) for o in outputs], counts, None)}
    return {f"{PREDICTION}.{name}": _column([o.get(name) for o in outputs], counts, None) for name in names}
