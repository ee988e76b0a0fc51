"""Columns of a pandas DataFrame or an Arrow table, read once into what drift works on: float64
values for numbers, counts per category for the rest. Arrow columns (from parquet files) are read
without converting the table to pandas first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shipway.core.errors import InvalidInput

NUMERIC = "numeric"
CATEGORICAL = "categorical"


def _is_arrow(column: Any) -> bool:
    return type(column).__module__.startswith("pyarrow")


def kind_of(column: Any) -> str | None:
    """``numeric`` for numbers (not booleans), ``categorical`` for strings, categories and booleans,
    None for what drift does not compare (dates and times, durations, nested or binary values)."""
    if _is_arrow(column):
        import pyarrow as pa

        t = column.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return NUMERIC
        if pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
            return CATEGORICAL
        return CATEGORICAL if getattr(pa.types, "is_string_view", lambda _: False)(t) else None
    import pandas as pd

    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return NUMERIC
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        return CATEGORICAL
    return None


@dataclass(frozen=True, eq=False)
class RawColumn:
    """One column's data: float64 ``values`` with NaN for missing (numbers), or ``counts`` per category
    text and the ``missing`` count (categories)."""

    kind: str
    rows: int
    values: np.ndarray | None = None
    counts: dict[str, int] | None = None
    missing: int = 0


def read_column(column: Any, name: str, kind: str | None = None) -> RawColumn:
    """Read a pandas Series or an Arrow array as ``kind`` (default: its own kind)."""
    own = kind_of(column)
    kind = kind or own
    if own is None:
        raise InvalidInput(
            f"Column {name!r} ({_type_name(column)}) is neither numbers nor categories: convert it, "
            "or leave it out with columns=[...]."
        )
    if kind == NUMERIC and own != NUMERIC:
        raise InvalidInput(
            f"Column {name!r} is numeric in the reference but {_type_name(column)} here: "
            "convert it to numbers."
        )
    rows = len(column)
    if kind == NUMERIC:
        return RawColumn(NUMERIC, rows, values=_numbers(column))
    counts, missing = _category_counts(column)
    return RawColumn(CATEGORICAL, rows, counts=counts, missing=missing)


def _type_name(column: Any) -> str:
    return str(column.type if _is_arrow(column) else column.dtype)


def _numbers(column: Any) -> np.ndarray:
    if _is_arrow(column):
        if hasattr(column, "combine_chunks"):
            column = column.combine_chunks()
        if hasattr(column, "dictionary_decode") and hasattr(column, "indices"):
            column = column.dictionary_decode()
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _category_counts(column: Any) -> tuple[dict[str, int], int]:
    """Counts per category, keyed by the category's text (``str(value)``), and the missing count."""
    if _is_arrow(column):
        import pyarrow.compute as pc

        pairs = pc.value_counts(column)
        keys = pairs.field("values").to_pylist()
        counts = pairs.field("counts").to_numpy().tolist()
    else:
        found = column.value_counts(dropna=True, sort=False)
        keys, counts = list(found.index), found.to_numpy().tolist()
    out: dict[str, int] = {}
    for key, count in zip(keys, counts, strict=True):
        if key is None or count == 0:
            continue
        k = key if isinstance(key, str) else str(key)
        out[k] = out.get(k, 0) + int(count)
    return out, len(column) - sum(out.values())


def table_columns(table: Any) -> list[str]:
    """Column names of a DataFrame or an Arrow table."""
    names = table.column_names if _is_arrow(table) else table.columns
    return [str(c) for c in names]


def column_of(table: Any, name: str) -> Any:
    return table.column(name) if _is_arrow(table) else table[name]
