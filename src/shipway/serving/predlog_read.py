"""Reading the prediction log back: the files of a model between two instants, for monitoring.

Files are found by key (``predictions/<model>/date=YYYY-MM-DD/hour=HH/...``), so a time range
fetches only the hours it overlaps; rows are then filtered by ``time``. A file's schema holds
one version's columns; :func:`read_predictions` combines files under the union of their columns.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shipway.core.errors import IntegrityError, InvalidInput
from shipway.serving.predlog import METADATA, METADATA_KEY, PREFIX, TIMESTAMP, as_text, segment
from shipway.store import Store, get_store

_PART = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+\.parquet$")


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
    base = f"{PREFIX}/{segment(model)}/"
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
    one). In ``columns`` a name the log writes (``status``, ``arm``, ``time``, ``prediction`` ...)
    means the log's column, also in a file that renamed it because a feature has that name; read
    such a feature with ``columns=None``. Shadow copies (``mirrored``) are left out unless
    ``include_mirrored``.
    """
    start, end = _instant(since, "since"), _instant(until, "until")
    if start is not None and end is not None and start >= end:
        raise InvalidInput(f"since ({start.isoformat()}) must be before until ({end.isoformat()}).")
    wanted = str(version) if version is not None else None
    backend = (store or get_store(connect=False)).blobs.backend
    for key in _keys(backend, model, start, end, wanted):
        yield from _file_batches(backend, key, start, end, wanted, columns, include_mirrored, batch_size)


def prediction_files(
    model: str, *, since: datetime | None = None, until: datetime | None = None, store: Store
) -> list[str]:
    """The keys of ``model``'s log files that may hold rows between ``since`` and ``until``, in
    key order (with both, at most 31 days apart, only those days are listed).

    Each file is written once, whole, and never changed, so a reader that remembers the keys it
    has read only needs the new ones next time (see :func:`read_prediction_file`)."""
    return _keys(store.blobs.backend, model, _instant(since, "since"), _instant(until, "until"), None)


def read_prediction_file(key: str, columns: Sequence[str], *, store: Store) -> pa.Table:
    """The rows of one log file (shadow copies left out) as ``columns``, as in
    :func:`iter_prediction_batches`."""
    batches = list(_file_batches(store.blobs.backend, key, None, None, None, columns, False, 65_536))
    if not batches:
        return pa.table({n: pa.array([], _known_type(n)) for n in columns})
    return pa.Table.from_batches(batches)


def _file_batches(
    backend: Any,
    key: str,
    start: datetime | None,
    end: datetime | None,
    wanted: str | None,
    columns: Sequence[str] | None,
    include_mirrored: bool,
    batch_size: int,
) -> Iterator[pa.RecordBatch]:
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
                return
            renamed = info.get("renamed") or {}
            time_column = renamed.get("time", "time")
            mirrored_column = renamed.get("mirrored", "mirrored")
            names = schema.names
            filters = [time_column] if start is not None or end is not None else []
            if not include_mirrored:
                filters.append(mirrored_column)
            read = None
            # A name the log writes (metadata, predictions) means the log's column, wherever this
            # file put it.
            real = {c: renamed.get(c, c) for c in columns or ()}
            if columns is not None:
                read = [c for c in dict.fromkeys([*real.values(), *filters]) if c in names]
            for batch in parquet.iter_batches(batch_size=batch_size, columns=read):
                batch = _filter(batch, start, end, time_column, mirrored_column, include_mirrored)
                if columns is not None:
                    batch = _select(batch, columns, real)
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


def _select(batch: pa.RecordBatch, columns: Sequence[str], real: dict[str, str]) -> pa.RecordBatch:
    names = batch.schema.names
    arrays = [
        batch.column(real[c]) if real[c] in names else pa.nulls(batch.num_rows, _known_type(c))
        for c in columns
    ]
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
                    column = as_text(column.to_pylist())
            arrays.append(column)
        tables.append(pa.Table.from_arrays(arrays, schema=schema))
    return pa.concat_tables(tables)
