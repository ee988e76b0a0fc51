"""Reference profiles: compact, mergeable per-column summaries that drift is computed from.

A numeric column is kept as counts over bins whose edges are the reference's quantiles (every
percentile by default, or every distinct value when there are no more than that), plus one bin for
values below the reference's minimum and one above its maximum, with the smallest and largest value
seen in each bin, the missing and infinite counts, the mean and the sum of squared deviations. A
categorical column is kept as counts per category. Windows profiled with the reference's layout
(``like=reference``) merge by adding counts, so a day's profile is the sum of its hours' profiles.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from shipway.core.errors import InvalidInput
from shipway.data.columns import (
    CATEGORICAL,
    NUMERIC,
    RawColumn,
    column_of,
    kind_of,
    read_column,
    table_columns,
)

FORMAT = "shipway.profile/1"
BINS = 100  # quantile bins per numeric column: the percentiles
MAX_CATEGORIES = 1000  # categories kept by name per column; the rarer ones are counted together
BATCH_ROWS = 1 << 18  # rows per batch when streaming a parquet file into a profile

# Tables of at least this many values (rows x columns) are worked on a few columns at a time.
PARALLEL_VALUES = 2_000_000
MAX_THREADS = 4

T = TypeVar("T")


def each_column(fn: Callable[[str], T], names: list[str], values: int) -> list[T]:
    """``fn`` over the columns, on a few threads when there are ``PARALLEL_VALUES`` values or more
    (NumPy's sorts and most of its loops release the GIL, so columns proceed side by side)."""
    workers = min(len(names), os.cpu_count() or 1, MAX_THREADS)
    if values < PARALLEL_VALUES or workers < 2:
        return [fn(n) for n in names]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shipway-profile") as pool:
        return list(pool.map(fn, names))


def _float_or_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _floats(values: Iterable[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def reference_edges(sorted_values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin edges from a sorted sample: its distinct values if there are at most ``bins`` of them, else
    its quantiles at k/bins (lower values, so every edge is a value of the sample); the last edge
    (the maximum) is repeated so that the maximum has a bin of its own."""
    s = sorted_values
    if len(s) == 0:
        return np.empty(0)
    distinct = np.concatenate([[True], s[1:] != s[:-1]])
    if int(distinct.sum()) <= bins:
        edges = s[distinct]
    else:
        at = np.floor(np.arange(bins + 1) * ((len(s) - 1) / bins)).astype(np.intp)
        edges = np.unique(s[at])
    return np.append(edges, edges[-1])


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each finite value: 0 below edges[0], j for [edges[j-1], edges[j]), the last edge's
    own bin for the maximum, and len(edges) above it."""
    idx = _bin_index_by_cells(values, edges) if len(values) > 4096 else None
    if idx is None:
        idx = np.searchsorted(edges, values, "right")
    if len(edges):
        idx[values == edges[-1]] = len(edges) - 1
    return idx


def _bin_index_by_cells(values: np.ndarray, edges: np.ndarray, max_passes: int = 6) -> np.ndarray | None:
    """``searchsorted(edges, values, "right")`` in a few linear passes: a grid of equal cells over the
    edges' range gives each value a starting bin at or below its own, and each pass moves values up
    past one edge. None when some cell holds more edges than ``max_passes`` can cross."""
    if len(edges) < 2 or not edges[-1] > edges[0]:
        return None
    cells = 64 * len(edges)
    lo, scale = edges[0], cells / (edges[-1] - edges[0])
    grid = lo + (np.arange(cells) - 0.01) / scale  # a little below each cell's left end
    first = np.searchsorted(edges, grid, "right")
    # A value starts at its cell's bin and may have to cross every edge up to the next cell's end
    # (values past the last edge: every edge left).
    ahead = np.append(first[2:], [len(edges), len(edges)]) - first
    passes = int(np.max(ahead))
    if passes > max_passes:
        return None
    cell = np.clip((values - lo) * scale, 0, cells - 1).astype(np.intp)
    idx = first[cell]
    padded = np.append(edges, np.inf)
    for _ in range(passes):
        idx += values >= padded[idx]
    return idx


@dataclass(frozen=True, eq=False)
class NumericColumn:
    """A numeric column: counts, smallest and largest value per bin, missing values and moments."""

    kind: ClassVar[str] = NUMERIC
    rows: int  # every row, missing ones included
    missing: int  # NaN and None
    infinite: int  # +inf and -inf (left out of every statistic, like missing values)
    edges: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)  # len(edges) + 1 bins: below, the quantile bins, above
    mins: np.ndarray = field(repr=False)  # NaN where a bin is empty
    maxs: np.ndarray = field(repr=False)
    sums: np.ndarray = field(repr=False)
    mean: float
    m2: float  # sum of squared deviations from the mean

    @property
    def n(self) -> int:
        """How many finite values were seen."""
        return int(self.counts.sum())

    @property
    def min(self) -> float | None:
        return _float_or_none(float(np.nanmin(self.mins))) if self.n else None

    @property
    def max(self) -> float | None:
        return _float_or_none(float(np.nanmax(self.maxs))) if self.n else None

    @property
    def bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Count, smallest value, largest value and sum of each bin."""
        return self.counts, self.mins, self.maxs, self.sums

    @property
    def std(self) -> float:
        """Standard deviation of the finite values (population form, ddof=0); NaN if there are none."""
        return math.sqrt(self.m2 / self.n) if self.n else math.nan

    @property
    def missing_rate(self) -> float:
        return (self.missing + self.infinite) / self.rows if self.rows else 0.0

    @classmethod
    def from_values(
        cls, values: np.ndarray, edges: np.ndarray | None = None, *, bins: int = BINS
    ) -> NumericColumn:
        """Profile float64 ``values`` (NaN for missing) on ``edges``, or on the sample's own quantiles."""
        finite_mask = np.isfinite(values)
        finite = values if finite_mask.all() else values[finite_mask]
        missing = int(np.isnan(values).sum()) if len(finite) < len(values) else 0
        if edges is None:
            return cls.from_sorted(np.sort(finite), len(values), missing, bins=bins)
        return cls._build(len(values), missing, finite, edges, *_bins_of_values(finite, edges))

    @classmethod
    def from_sorted(
        cls, finite: np.ndarray, rows: int, missing: int, edges: np.ndarray | None = None, *, bins: int = BINS
    ) -> NumericColumn:
        """Profile the sorted finite values of a column of ``rows`` rows, ``missing`` of them NaN (the
        rest of the difference infinite), on ``edges`` or on the sample's own quantiles."""
        edges = reference_edges(finite, bins) if edges is None else edges
        return cls._build(rows, missing, finite, edges, *_bins_of_sorted(finite, edges))

    @classmethod
    def _build(
        cls,
        rows: int,
        missing: int,
        finite: np.ndarray,
        edges: np.ndarray,
        counts: np.ndarray,
        mins: np.ndarray,
        maxs: np.ndarray,
        sums: np.ndarray,
    ) -> NumericColumn:
        mean = float(finite.mean()) if len(finite) else 0.0
        m2 = float(np.square(finite - mean).sum()) if len(finite) else 0.0
        return cls(rows, missing, rows - len(finite) - missing, edges, counts, mins, maxs, sums, mean, m2)

    def same_layout(self, other: NumericColumn) -> bool:
        return self.edges.shape == other.edges.shape and bool(np.array_equal(self.edges, other.edges))

    def merge(self, other: NumericColumn) -> NumericColumn:
        n_a, n_b = self.n, other.n
        n = n_a + n_b
        delta = other.mean - self.mean
        mean = self.mean + delta * n_b / n if n else 0.0
        m2 = self.m2 + other.m2 + (delta * delta * n_a * n_b / n if n else 0.0)
        return NumericColumn(
            self.rows + other.rows,
            self.missing + other.missing,
            self.infinite + other.infinite,
            self.edges,
            self.counts + other.counts,
            np.fmin(self.mins, other.mins),
            np.fmax(self.maxs, other.maxs),
            self.sums + other.sums,
            mean,
            m2,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": NUMERIC,
            "rows": self.rows,
            "missing": self.missing,
            "infinite": self.infinite,
            "mean": self.mean,
            "m2": self.m2,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "mins": [_float_or_none(v) for v in self.mins.tolist()],
            "maxs": [_float_or_none(v) for v in self.maxs.tolist()],
            "sums": self.sums.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericColumn:
        edges = np.asarray(d["edges"], dtype=np.float64)
        arrays = (
            np.asarray(d["counts"], dtype=np.int64),
            _floats(d["mins"]),
            _floats(d["maxs"]),
            np.asarray(d["sums"], dtype=np.float64),
        )
        if any(len(a) != len(edges) + 1 for a in arrays) or np.any(np.diff(edges) < 0):
            raise InvalidInput(
                "A numeric column profile needs sorted edges and one more count, min, max and sum."
            )
        return cls(int(d["rows"]), int(d["missing"]), int(d["infinite"]), edges, *arrays, d["mean"], d["m2"])


def _bins_of_sorted(s: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, ...]:
    if len(edges) == 0:
        starts = np.array([0])
    else:
        inner = np.searchsorted(s, edges[:-1], "left")
        starts = np.concatenate([[0], inner, [np.searchsorted(s, edges[-1], "right")]])
    ends = np.append(starts[1:], len(s))
    counts = (ends - starts).astype(np.int64)
    full = counts > 0
    mins, maxs, sums = np.full(len(counts), np.nan), np.full(len(counts), np.nan), np.zeros(len(counts))
    mins[full] = s[starts[full]]
    maxs[full] = s[ends[full] - 1]
    if full.any():
        sums[full] = np.add.reduceat(s, starts[full])
    return counts, mins, maxs, sums


def _bins_of_values(x: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, ...]:
    size = len(edges) + 1
    idx = bin_index(x, edges)
    counts = np.bincount(idx, minlength=size).astype(np.int64)
    sums = np.bincount(idx, weights=x, minlength=size)
    mins = np.full(size, np.inf)
    maxs = np.full(size, -np.inf)
    np.minimum.at(mins, idx, x)
    np.maximum.at(maxs, idx, x)
    empty = counts == 0
    mins[empty] = np.nan
    maxs[empty] = np.nan
    return counts, mins, maxs, sums


# ---------------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CategoricalColumn:
    """A categorical column: counts per category (by their text), missing values, and the count of
    values whose category was not kept because there were more than ``MAX_CATEGORIES``."""

    kind: ClassVar[str] = CATEGORICAL
    rows: int
    missing: int
    categories: dict[str, int] = field(repr=False)
    other: int = 0

    @property
    def n(self) -> int:
        return sum(self.categories.values()) + self.other

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @classmethod
    def from_counts(
        cls, rows: int, missing: int, counts: Mapping[str, int], max_categories: int = MAX_CATEGORIES
    ) -> CategoricalColumn:
        """The column of ``rows`` rows, ``missing`` of them missing, with these counts per category."""
        return cls._truncated(rows, missing, dict(counts), 0, max_categories)

    @classmethod
    def _truncated(
        cls, rows: int, missing: int, counts: dict[str, int], other: int, max_categories: int = MAX_CATEGORIES
    ) -> CategoricalColumn:
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = dict(ordered[:max_categories])
        other += sum(c for _, c in ordered[max_categories:])
        return cls(rows, missing, kept, other)

    def merge(self, other: CategoricalColumn) -> CategoricalColumn:
        counts = dict(self.categories)
        for key, count in other.categories.items():
            counts[key] = counts.get(key, 0) + count
        return CategoricalColumn._truncated(
            self.rows + other.rows, self.missing + other.missing, counts, self.other + other.other
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": CATEGORICAL,
            "rows": self.rows,
            "missing": self.missing,
            "categories": dict(self.categories),
            "other": self.other,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalColumn:
        categories = {str(k): int(v) for k, v in d["categories"].items()}
        return cls(int(d["rows"]), int(d["missing"]), categories, int(d.get("other", 0)))


Column = NumericColumn | CategoricalColumn


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def column_profile(raw: RawColumn, edges: np.ndarray | None = None, *, bins: int = BINS) -> Column:
    """Profile one column read by :func:`read_column`, on ``edges`` if it is numeric and they are given."""
    if raw.kind == NUMERIC:
        assert raw.values is not None
        return NumericColumn.from_values(raw.values, edges, bins=bins)
    assert raw.counts is not None
    return CategoricalColumn.from_counts(raw.rows, raw.missing, raw.counts)


class Profile:
    """Per-column summaries of a table, compact enough to store and mergeable across windows."""

    def __init__(self, columns: Mapping[str, Column], rows: int) -> None:
        self.columns: dict[str, Column] = dict(columns)
        self.rows = rows

    def __repr__(self) -> str:
        return f"Profile(rows={self.rows}, columns={list(self.columns)})"

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        *,
        like: Profile | None = None,
        columns: Iterable[str] | None = None,
        bins: int = BINS,
    ) -> Profile:
        """Profile a pandas DataFrame: on the bins and columns of ``like`` (a reference profile), so the
        result merges with and compares to it, or on bins taken from its own quantiles."""
        names = _profiled_columns(frame, like, columns)

        def profile(name: str) -> Column:
            ref = like[name] if like is not None else None
            raw = read_column(column_of(frame, name), name, ref.kind if ref is not None else None)
            return column_profile(raw, ref.edges if isinstance(ref, NumericColumn) else None, bins=bins)

        done = each_column(profile, names, len(frame) * len(names))
        return cls(dict(zip(names, done, strict=True)), len(frame))

    @classmethod
    def from_parquet(
        cls,
        path: str | os.PathLike[str],
        *,
        like: Profile | None = None,
        columns: Iterable[str] | None = None,
        bins: int = BINS,
        batch_rows: int = BATCH_ROWS,
    ) -> Profile:
        """Profile a parquet file. With ``like``, batch by batch in bounded memory (the batches' profiles
        merge exactly); without it the columns are read whole, since bins need the whole sample."""
        import pyarrow.parquet as pq

        wanted = list(columns) if columns is not None else (list(like.columns) if like is not None else None)
        try:
            file = pq.ParquetFile(path)
        except (OSError, ValueError) as err:
            raise InvalidInput(f"Cannot read {path} as a parquet file: {err}") from err
        if like is None:
            return cls.from_frame(file.read(columns=wanted), columns=wanted, bins=bins)
        profile: Profile | None = None
        for batch in file.iter_batches(batch_size=batch_rows, columns=wanted):
            part = cls.from_frame(batch, like=like, columns=wanted)
            profile = part if profile is None else profile.merge(part)
        if profile is None:  # a file with no rows
            profile = cls.from_frame(file.schema_arrow.empty_table(), like=like, columns=wanted)
        return profile

    def merge(self, other: Profile) -> Profile:
        """The profile of both tables together, as if profiled at once (see docs/monitoring.md)."""
        if set(self.columns) != set(other.columns):
            only = sorted(set(self.columns) ^ set(other.columns))
            raise InvalidInput(f"Cannot merge profiles with different columns ({', '.join(only)}).")
        out: dict[str, Column] = {}
        for name, a in self.columns.items():
            b = other.columns[name]
            if isinstance(a, NumericColumn) and isinstance(b, NumericColumn):
                if not a.same_layout(b):
                    raise InvalidInput(
                        f"Column {name!r} was binned differently in the two profiles: profile each window "
                        "with Profile.from_frame(window, like=reference) so they share the reference's bins."
                    )
                out[name] = a.merge(b)
            elif isinstance(a, CategoricalColumn) and isinstance(b, CategoricalColumn):
                out[name] = a.merge(b)
            else:
                raise InvalidInput(f"Column {name!r} is {a.kind} in one profile and {b.kind} in the other.")
        return Profile(out, self.rows + other.rows)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (``Profile.from_dict`` reads it back)."""
        return {
            "format": FORMAT,
            "rows": self.rows,
            "columns": {k: c.to_dict() for k, c in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        if d.get("format") != FORMAT:
            raise InvalidInput(
                f"Not a Shipway profile (expected format {FORMAT!r}, got {d.get('format')!r})."
            )
        columns: dict[str, Column] = {}
        for name, c in d["columns"].items():
            if c.get("kind") == NUMERIC:
                columns[name] = NumericColumn.from_dict(c)
            elif c.get("kind") == CATEGORICAL:
                columns[name] = CategoricalColumn.from_dict(c)
            else:
                raise InvalidInput(f"Column {name!r} of the profile has an unknown kind {c.get('kind')!r}.")
        return cls(columns, int(d["rows"]))

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile to a JSON file."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), separators=(",", ":")), encoding="utf-8")
        return out

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile written by ``to_json``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise InvalidInput(f"Cannot read a profile from {path}: {err}") from err


def _profiled_columns(frame: Any, like: Profile | None, columns: Iterable[str] | None) -> list[str]:
    present = table_columns(frame)
    if columns is not None:
        names = list(columns)
    elif like is not None:
        names = list(like.columns)
    else:
        names = [c for c in present if kind_of(column_of(frame, c)) is not None]
    missing = [c for c in names if c not in present]
    if missing:
        raise InvalidInput(
            f"No column {', '.join(map(repr, missing))} in the data (it has {', '.join(present)})."
        )
    if like is not None:
        unknown = [c for c in names if c not in like.columns]
        if unknown:
            raise InvalidInput(f"The reference profile has no column {', '.join(map(repr, unknown))}.")
    return names
