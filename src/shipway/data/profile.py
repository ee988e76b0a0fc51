"""Compact per-column profiles of a table: the seed of the drift reference."""

from __future__ import annotations

import math
from typing import Any

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
TOP_CATEGORIES = 20


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def kind_of(series: Any) -> str:
    """The logical kind of a pandas column: integer, float, boolean, datetime, string or category."""
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_string_dtype(dtype):
        return "string"
    return "other"


def profile_column(series: Any) -> dict[str, Any]:
    """Missing rate plus min/max/mean/std/quantiles (numbers) or top categories (the rest)."""
    n = len(series)
    missing = int(series.isna().sum())
    kind = kind_of(series)
    out: dict[str, Any] = {
        "kind": kind,
        "dtype": str(series.dtype),
        "count": n,
        "missing": missing,
        "missing_rate": (missing / n) if n else 0.0,
    }
    present = series.dropna()
    if kind in ("integer", "float") and len(present):
        values = present.astype("float64")
        finite = values[values.map(math.isfinite)] if kind == "float" else values
        out.update(
            min=_num(values.min()),
            max=_num(values.max()),
            mean=_num(finite.mean()) if len(finite) else None,
            std=_num(finite.std(ddof=1)) if len(finite) > 1 else None,
            quantiles={
                str(q): _num(v) for q, v in zip(QUANTILES, finite.quantile(list(QUANTILES)), strict=True)
            }
            if len(finite)
            else {},
        )
    elif kind == "datetime" and len(present):
        out.update(min=present.min().isoformat(), max=present.max().isoformat())
    elif len(present):
        counts = present.astype(str).value_counts()
        out.update(
            unique=len(counts),
            top={str(k): int(v) for k, v in counts.head(TOP_CATEGORIES).items()},
        )
    return out


def profile_frame(frame: Any) -> dict[str, Any]:
    """Profile every column of a pandas DataFrame."""
    return {
        "num_rows": len(frame),
        "columns": {str(col): profile_column(frame[col]) for col in frame.columns},
    }
