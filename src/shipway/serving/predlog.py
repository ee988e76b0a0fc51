"""The prediction log: what each served request asked and got, as parquet files monitoring reads.

A :class:`PredictionLog` is an app listener. On the event loop it only appends a reference to the
request's columns (minus the ones it must never write) to a bounded buffer; a background thread
turns the buffer into one parquet file per (model, version, hour) every ``flush_seconds`` or
``flush_rows``, writes it to a temporary file and puts it in the artifact store, which makes it
visible all at once. A worker killed mid-flush loses what it had not yet flushed, never a file.

Each input row of a request is one row of the file, under the key

    predictions/<model>/date=YYYY-MM-DD/hour=HH/<worker>-<flush time>-<seq>-v<version>.parquet

with the metadata columns first (``request_id``, ``row``, ``time``, ``model``, ``version``,
``arm``, ``status``, ``error``, ``latency_ms``, ``mirrored``, ``rollout_id``), then each input
column under its own name, then ``prediction`` (``prediction.<name>`` for several outputs).
Columns the version's signature marks ``pii`` are never written, nor anything the signature
does not take (a sticky key field, a misspelt column). A feature named like a metadata or
prediction column keeps its name; that column gets a leading underscore (``_time``, more if
taken), and the file's ``shipway.prediction_log`` schema metadata records the names used.

:func:`iter_prediction_batches` and :func:`read_predictions` read them back, pruning files by the
date and hour in their keys and rows by ``time``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shipway.core.errors import IntegrityError, InvalidInput
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
_PART = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+\.parquet$")
_MAX_PLANS = 256


def _now_us() -> int:
    """Microseconds since the epoch: a request's ``time`` (when it was answered)."""
    return time.time_ns() // 1000


def default_worker() -> str:
    """This process's name in file keys: ``hostname-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _segment(name: str) -> str:
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


class _Entry(NamedTuple):
    endpoint: str
    version: str
    arm: str
    request_id: str | None
    status: int
    error: str | None
    latency_ms: float
    mirrored: bool
    rollout_id: str | None
    time_us: int
    rows: int
    features: dict[str, np.ndarray]
    predictions: Any
    types: dict[str, pa.DataType]


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
        self._buffer: list[_Entry] = []
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
        signature = event.signature
        plan = self._plans.get(id(signature))
        if plan is None or plan.signature is not signature:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[id(signature)] = _plan(signature)
        columns = event.columns
        if columns:
            rows = len(next(iter(columns.values())))
        else:
            rows = len(event.predictions) if event.predictions is not None else 1
        if plan.features is None:
            features = dict(columns)
        else:  # only what the version takes, never its PII: nothing else is kept even in memory
            features = {name: columns[name] for name in plan.features if name in columns}
        rollout = event.rollout
        entry = _Entry(
            event.endpoint,
            event.version,
            event.arm,
            request_id,
            event.status,
            event.error,
            event.seconds * 1000.0,
            event.mirrored,
            rollout.id if rollout is not None else None,
            _now_us(),
            rows,
            features,
            event.predictions,
            plan.types,
        )
        with self._lock:
            if self._rows + rows > self.max_rows:
                self.dropped += rows
                self._unreported += rows
                return
            self._buffer.append(entry)
            self._rows += rows
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    # -- on the log's thread -------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything buffered now; how many files were written."""
        with self._flushing:
            with self._lock:
                entries, self._buffer = self._buffer, []
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
            groups: dict[tuple[str, str, int], list[_Entry]] = {}
            for entry in entries:
                groups.setdefault((entry.endpoint, entry.version, entry.time_us // _HOUR_US), []).append(
                    entry
                )
            work, self._pending = self._pending, []
            for key, group in groups.items():
                try:
                    work.append((key, build_table(group, worker=self.worker)))
                except Exception:  # a bug: lose this group, never the thread
                    log.exception("prediction log: could not build the rows of %s version %s", *key[:2])
                    with self._lock:
                        self.dropped += sum(e.rows for e in group)
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
        name = f"{self.worker}-{stamp}-{self._seq:06d}-v{_segment(version)}.parquet"
        blob_key = f"{PREFIX}/{_segment(endpoint)}/date={when:%Y-%m-%d}/hour={when:%H}/{name}"
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


# -- building a file ---------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _as_text(values: Iterable[Any]) -> pa.Array:
    return pa.array([None if _missing(v) else str(v) for v in values], pa.string())


def _arrow(values: Any, type_: pa.DataType | None) -> pa.Array:
    """``values`` as an Arrow array of ``type_`` (NaN read as missing); raises when it cannot be."""
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        array = _as_text(values)  # mixed or odd objects: their text
    if type_ is None or array.type == type_:
        return array
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), type_)
    try:
        return array.cast(type_)
    except (pa.ArrowException, TypeError, ValueError):
        if type_ == pa.string():
            return _as_text(values)
        raise


def _column(parts: Sequence[Any], counts: Sequence[int], type_: pa.DataType | None) -> pa.Array:
    """One column of a file from each request's values (None where a request lacks it)."""
    if all(p is not None for p in parts):
        try:  # the common case: one concatenation, one conversion
            return _arrow(parts[0] if len(parts) == 1 else np.concatenate(parts), type_)
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


def build_table(entries: Sequence[_Entry], *, worker: str = "") -> pa.Table:
    """The rows of one file: requests of one (model, version), one row per input row."""
    counts = np.fromiter((e.rows for e in entries), dtype=np.int64, count=len(entries))
    total = int(counts.sum())

    def repeat(values: list[Any], type_: pa.DataType) -> pa.Array:
        if len(entries) == 1:
            return pa.array(values * total, type_)
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return pa.array(np.repeat(column, counts), type_)

    starts = np.repeat(np.cumsum(counts) - counts, counts)
    meta = {
        "request_id": repeat([e.request_id for e in entries], pa.string()),
        "row": pa.array((np.arange(total) - starts).astype(np.int32)),
        "time": pa.array(np.repeat(np.array([e.time_us for e in entries], np.int64), counts), TIMESTAMP),
        "model": repeat([e.endpoint for e in entries], pa.string()),
        "version": repeat([e.version for e in entries], pa.string()),
        "arm": repeat([e.arm for e in entries], pa.string()),
        "status": pa.array(np.repeat(np.array([e.status for e in entries], np.int16), counts)),
        "error": repeat([e.error for e in entries], pa.string()),
        "latency_ms": pa.array(np.repeat(np.array([e.latency_ms for e in entries]), counts)),
        "mirrored": pa.array(np.repeat(np.array([e.mirrored for e in entries], bool), counts)),
        "rollout_id": repeat([e.rollout_id for e in entries], pa.string()),
    }
    feature_names: dict[str, None] = {}
    for e in entries:
        feature_names.update(dict.fromkeys(e.features))
    types = entries[0].types
    features = {
        name: _column([e.features.get(name) for e in entries], counts, types.get(name))
        for name in feature_names
    }
    outputs = [_outputs(e.predictions, e.rows) if e.predictions is not None else {} for e in entries]
    output_names: dict[str | None, None] = {}
    for o in outputs:
        output_names.update(dict.fromkeys(o))
    if len(output_names) > 1:
        output_names.pop(None, None)  # an unnamed output among named ones: a version changed shape
    single = len(output_names) == 1
    predictions = {
        PREDICTION if single else f"{PREDICTION}.{name}": _column(
            [o.get(name) if not single else next(iter(o.values()), None) for o in outputs], counts, None
        )
        for name in output_names
    }
    if not predictions:
        predictions = {PREDICTION: pa.nulls(total)}
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
        "model": entries[0].endpoint,
        "version": entries[0].version,
        "worker": worker,
        "features": list(features),
        "predictions": [renamed.get(k, k) for k in predictions],
        "renamed": renamed,
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})


# -- reading -----------------------------------------------------------------------------------


def _instant(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime (naive ones are read as UTC), not {value!r}.")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _hour_of(key: str) -> datetime | None:
    match = _PART.search(key)
    if match is None:
        return None
    try:
        return datetime.strptime(f"{match[1]} {match[2]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:
        return None


def _version_of(key: str) -> str | None:
    stem = key.rsplit("/", 1)[-1].removesuffix(".parquet")
    return unquote(stem.rsplit("-v", 1)[1]) if "-v" in stem else None


def _keys(
    backend: Any, model: str, since: datetime | None, until: datetime | None, version: str | None
) -> list[str]:
    """The files that may hold rows of ``model`` between ``since`` and ``until``, in key order."""
    base = f"{PREFIX}/{_segment(model)}/"
    if since is not None and until is not None and until - since <= timedelta(days=31):
        day, prefixes = since.date(), []
        while day <= until.date():
            prefixes.append(f"{base}date={day:%Y-%m-%d}/")
            day += timedelta(days=1)
    else:
        prefixes = [base]
    keys = []
    for prefix in prefixes:
        for key in backend.list(prefix):
            if not key.endswith(".parquet"):
                continue
            hour = _hour_of(key)
            if hour is not None:
                if since is not None and hour + timedelta(hours=1) <= since:
                    continue
                if until is not None and hour >= until:
                    continue
            if version is not None and _version_of(key) not in (None, version):
                continue
            keys.append(key)
    return sorted(keys)


def _file_info(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        info = {}
    return info if isinstance(info, dict) else {}


def iter_prediction_batches(
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | int | None = None,
    columns: Sequence[str] | None = None,
    include_mirrored: bool = False,
    store: Store | None = None,
    batch_size: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """Logged rows of ``model`` with ``since <= time < until``, a file's batches at a time.

    Only files whose date and hour (in their key) overlap the range are fetched, one at a time,
    so memory stays bounded by ``batch_size``. Each batch has the columns of its file (features
    differ between versions), or exactly ``columns`` in that order (null where a file lacks
    one). Shadow copies (``mirrored``) are left out unless ``include_mirrored``.
    """
    start, end = _instant(since, "since"), _instant(until, "until")
    if start is not None and end is not None and start >= end:
        raise InvalidInput(f"since ({start.isoformat()}) must be before until ({end.isoformat()}).")
    wanted = str(version) if version is not None else None
    backend = (store or get_store(connect=False)).blobs.backend
    for key in _keys(backend, model, start, end, wanted):
        with tempfile.TemporaryDirectory(prefix="shipway-predictions-") as tmp:
            path = Path(tmp) / "part.parquet"
            backend.get(key, path)
            try:
                parquet = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as exc:
                raise IntegrityError(
                    f"{key} in the artifact store {backend.uri} is not a readable parquet file ({exc}); "
                    "the log never writes one partly, so it was altered: restore or delete it."
                ) from None
            with parquet:
                schema = parquet.schema_arrow
                info = _file_info(schema)
                if wanted is not None and str(info.get("version")) != wanted:
                    continue
                renamed = info.get("renamed") or {}
                time_column = renamed.get("time", "time")
                mirrored_column = renamed.get("mirrored", "mirrored")
                names = schema.names
                filters = [time_column] if start is not None or end is not None else []
                if not include_mirrored:
                    filters.append(mirrored_column)
                read = None
                if columns is not None:
                    read = [c for c in dict.fromkeys([*columns, *filters]) if c in names]
                for batch in parquet.iter_batches(batch_size=batch_size, columns=read):
                    batch = _filter(batch, start, end, time_column, mirrored_column, include_mirrored)
                    if columns is not None:
                        batch = _select(batch, columns)
                    if batch.num_rows:
                        yield batch


def _filter(
    batch: pa.RecordBatch,
    start: datetime | None,
    end: datetime | None,
    time_column: str,
    mirrored_column: str,
    include_mirrored: bool,
) -> pa.RecordBatch:
    masks = []
    if start is not None:
        masks.append(pc.greater_equal(batch[time_column], pa.scalar(start, TIMESTAMP)))
    if end is not None:
        masks.append(pc.less(batch[time_column], pa.scalar(end, TIMESTAMP)))
    if not include_mirrored:
        masks.append(pc.invert(batch[mirrored_column]))
    if not masks:
        return batch
    mask = masks[0]
    for more in masks[1:]:
        mask = pc.and_(mask, more)
    return batch.filter(mask)


def _select(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.RecordBatch:
    names = batch.schema.names
    arrays = [batch.column(c) if c in names else pa.nulls(batch.num_rows, _known_type(c)) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def _known_type(name: str) -> pa.DataType:
    index = METADATA.get_field_index(name)
    return METADATA.field(index).type if index >= 0 else pa.null()


def read_predictions(
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | int | None = None,
    columns: Sequence[str] | None = None,
    include_mirrored: bool = False,
    store: Store | None = None,
) -> pa.Table:
    """Logged rows of ``model`` as one table (see :func:`iter_prediction_batches`).

    Files with different columns are combined under the union of their columns (null where a
    file lacks one); a column whose type differs between files takes the wider numeric type, or
    text.
    """
    batches = list(
        iter_prediction_batches(
            model,
            since=since,
            until=until,
            version=version,
            columns=columns,
            include_mirrored=include_mirrored,
            store=store,
        )
    )
    if not batches:
        names = list(columns) if columns is not None else METADATA.names
        return pa.table({n: pa.array([], _known_type(n)) for n in names})
    return _combine(batches)


def _wider(types: list[pa.DataType]) -> pa.DataType:
    kinds = [t for t in dict.fromkeys(types) if not pa.types.is_null(t)]
    if not kinds:
        return pa.null()
    if len(kinds) == 1:
        return kinds[0]
    if all(pa.types.is_integer(t) for t in kinds):
        return pa.int64()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in kinds):
        return pa.float64()
    return pa.string()


def _combine(batches: list[pa.RecordBatch]) -> pa.Table:
    order: dict[str, list[pa.DataType]] = {}
    for batch in batches:
        for f in batch.schema:
            order.setdefault(f.name, []).append(f.type)
    schema = pa.schema([(name, _wider(types)) for name, types in order.items()])
    tables = []
    for batch in batches:
        names = batch.schema.names
        arrays = []
        for f in schema:
            if f.name not in names:
                arrays.append(pa.nulls(batch.num_rows, f.type))
                continue
            column = batch.column(f.name)
            if column.type != f.type:
                try:
                    column = column.cast(f.type)
                except (pa.ArrowException, TypeError, ValueError):
                    column = _as_text(column.to_pylist())
            arrays.append(column)
        tables.append(pa.Table.from_arrays(arrays, schema=schema))
    return pa.concat_tables(tables)
