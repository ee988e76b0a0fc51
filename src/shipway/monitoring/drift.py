"""Data drift between a reference and a current sample: the methods, the defaults, the report.

Raw data on both sides gives exact statistics; when either side is a stored :class:`Profile`, the
other side is profiled on the same bins and the statistics come from the bins (exact for PSI,
Jensen-Shannon and chi-squared, approximate with a reported error bound for Wasserstein and KS).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
from shipway.data.reference import (
    CategoricalColumn,
    Column,
    NumericColumn,
    Profile,
    each_column,
)
from shipway.monitoring import stats

# Past this many values on each side, numeric columns are judged by an effect size and categorical
# ones may be (Evidently's switch, applied to both sides rather than to the reference alone).
LARGE_SAMPLE = 1000
# Bins at the reference's deciles for PSI, Jensen-Shannon and chi-squared on numeric columns.
NUMERIC_BINS = 10
# An effect size is the default only where its no-drift level is under this share of its threshold.
NOISE_SHARE = 1 / 3
# The reference's standard deviation is floored here before dividing the Wasserstein distance by it.
MIN_NORM = 1e-3


@dataclass(frozen=True)
class Method:
    """A drift method: what it measures, on which kinds of column, and its default threshold."""

    name: str
    title: str
    kinds: tuple[str, ...]
    threshold: float
    uses_p_value: bool  # drifted when p < threshold; otherwise when statistic >= threshold


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("wasserstein", "Wasserstein distance / reference std", (NUMERIC,), 0.1, False),
        Method("jensenshannon", "Jensen-Shannon distance", (NUMERIC, CATEGORICAL), 0.1, False),
        Method("psi", "population stability index", (NUMERIC, CATEGORICAL), 0.1, False),
        Method("ks", "Kolmogorov-Smirnov, two-sample", (NUMERIC,), 0.05, True),
        Method("chisquare", "chi-squared, two-sample contingency", (NUMERIC, CATEGORICAL), 0.05, True),
    )
}


def wasserstein_noise(reference: NumericColumn, n_reference: int, n_current: int) -> float:
    """The normed Wasserstein distance expected between two samples of the reference's distribution of
    these sizes: sqrt(2/pi) * sqrt(1/n + 1/m) * integral of sqrt(F(1-F)), over the reference's std."""
    spread = stats.cdf_spread(reference.bins)
    scale = math.sqrt(2 / math.pi) * math.sqrt(1 / max(n_reference, 1) + 1 / max(n_current, 1))
    return scale * spread / max(reference.std, MIN_NORM)


def js_noise(categories: int, n_reference: int, n_current: int) -> float:
    """The Jensen-Shannon distance expected between two samples of one distribution over this many
    categories: the divergence is about chi2(k - 1) * (1/n + 1/m) / 8, whose mean is k - 1."""
    k = max(categories - 1, 1)
    return math.sqrt(k * (1 / max(n_reference, 1) + 1 / max(n_current, 1)) / 8)


def default_method(kind: str, n_reference: int, n_current: int, noise: float) -> str:
    """The method drift uses for a column when none is given (docs/monitoring.md says why).

    ``noise`` is the effect size expected with no drift at all (``wasserstein_noise`` or ``js_noise``).
    With more than 1,000 values on each side and that noise under a third of the threshold, the effect
    size (normed Wasserstein for numbers, Jensen-Shannon for categories) decides, since any p-value is
    tiny there for a trivial change; otherwise a test whose p-value means something: two-sample KS for
    numbers, the chi-squared contingency test for categories.
    """
    effect, test = ("wasserstein", "ks") if kind == NUMERIC else ("jensenshannon", "chisquare")
    large = min(n_reference, n_current) > LARGE_SAMPLE
    return effect if large and noise <= NOISE_SHARE * METHODS[effect].threshold else test


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one feature."""

    feature: str
    kind: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    p_value: float | None  # KS and chi-squared only
    n_reference: int  # values compared (missing ones left out)
    n_current: int
    error_bound: float  # 0 when exact; else the exact statistic lies within statistic +/- error_bound
    note: str = ""


FRAME_COLUMNS = [f for f in ColumnDrift.__dataclass_fields__]


class DriftReport:
    """Per-feature drift verdicts, with the two profiles they were computed from."""

    def __init__(self, columns: list[ColumnDrift], reference: Profile, current: Profile) -> None:
        self.columns = columns
        self.reference = reference
        self.current = current

    def __repr__(self) -> str:
        return f"DriftReport({len(self.drifted_columns)} of {len(self.columns)} features drifted)"

    def __getitem__(self, feature: str) -> ColumnDrift:
        for c in self.columns:
            if c.feature == feature:
                return c
        raise KeyError(feature)

    @property
    def drifted_columns(self) -> list[str]:
        """The features judged drifted, in column order."""
        return [c.feature for c in self.columns if c.drifted]

    @property
    def share_drifted(self) -> float:
        """The fraction of compared features that drifted."""
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    def to_frame(self) -> Any:
        """One row per feature: feature, kind, method, statistic, threshold, drifted, p_value, ..."""
        import pandas as pd

        rows = [asdict(c) for c in self.columns]
        frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
        frame["p_value"] = frame["p_value"].astype("float64")
        return frame

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the profiles are available as ``reference`` and ``current``)."""
        return {
            "rows": {"reference": self.reference.rows, "current": self.current.rows},
            "drifted_columns": self.drifted_columns,
            "share_drifted": self.share_drifted,
            "columns": [asdict(c) for c in self.columns],
        }

    def to_html(self, path: str | os.PathLike[str] | None = None, *, title: str = "Data drift") -> str:
        """A self-contained HTML page (inline SVG, no scripts); written to ``path`` if one is given."""
        from shipway.monitoring.report_html import render

        html = render(self, title=title)
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html


# ---------------------------------------------------------------------------------------------
# drift()
# ---------------------------------------------------------------------------------------------

Source = Any  # a pandas DataFrame, an Arrow table, a parquet path or a Profile


def drift(
    reference: Source,
    current: Source,
    *,
    columns: Iterable[str] | None = None,
    methods: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` feature by feature.

    Each side is a pandas DataFrame, an Arrow table, a parquet file's path or a :class:`Profile`.
    ``columns`` picks the features (default: every numeric and categorical column of the reference).
    ``methods`` names one method for every feature or a method per feature (``wasserstein``,
    ``jensenshannon``, ``psi``, ``ks``, ``chisquare``); the others get the default for their kind and
    sample size. ``thresholds`` overrides the threshold of features whose method is given.
    """
    ref_frame, ref_profile = _source(reference, "reference")
    cur_frame, cur_profile = _source(current, "current")
    names = _columns(columns, ref_frame, ref_profile, cur_frame, cur_profile)
    chosen = _methods(methods, names)
    limits = _thresholds(thresholds, chosen)

    if ref_profile is None and cur_profile is None:
        ref_frame = _read(ref_frame, names)
        cur_frame = _read(cur_frame, names)

        def compare(name: str) -> tuple[ColumnDrift, Column, Column]:
            ref = read_column(column_of(ref_frame, name), name)
            cur = read_column(column_of(cur_frame, name), name, ref.kind)
            return _exact(name, ref, cur, chosen.get(name), limits.get(name))

        done = each_column(compare, names, (len(ref_frame) + len(cur_frame)) * len(names))
        return DriftReport(
            [d[0] for d in done],
            Profile({n: d[1] for n, d in zip(names, done, strict=True)}, len(ref_frame)),
            Profile({n: d[2] for n, d in zip(names, done, strict=True)}, len(cur_frame)),
        )

    if ref_profile is None:
        ref_profile = _profile_like(ref_frame, cur_profile, names)
    elif cur_profile is None:
        cur_profile = _profile_like(cur_frame, ref_profile, names)
    assert ref_profile is not None and cur_profile is not None
    ref_profile = Profile({n: ref_profile[n] for n in names}, ref_profile.rows)
    cur_profile = Profile({n: cur_profile[n] for n in names}, cur_profile.rows)
    results = [
        _binned(name, ref_profile[name], cur_profile[name], chosen.get(name), limits.get(name))
        for name in names
    ]
    return DriftReport(results, ref_profile, cur_profile)


def _source(source: Source, side: str) -> tuple[Any, Profile | None]:
    if isinstance(source, Profile):
        return None, source
    if isinstance(source, str | os.PathLike):
        if not Path(source).exists():
            raise InvalidInput(f"The {side} file {source} does not exist.")
        return source, None
    if hasattr(source, "columns") and hasattr(source, "dtypes"):  # a pandas DataFrame
        return source, None
    if hasattr(source, "column_names") and hasattr(source, "schema"):  # an Arrow table
        return source, None
    raise InvalidInput(
        f"The {side} must be a pandas DataFrame, an Arrow table, the path of a parquet file or a Profile, "
        f"not {type(source).__name__}."
    )


def _available(frame: Any, profile: Profile | None) -> tuple[list[str], Any]:
    """The columns a side has, and (for a parquet path) its arrow schema."""
    if profile is not None:
        return list(profile.columns), None
    if isinstance(frame, str | os.PathLike):
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(frame)
        except (OSError, ValueError) as err:
            raise InvalidInput(f"Cannot read {frame} as a parquet file: {err}") from err
        return list(schema.names), schema
    return table_columns(frame), None


def _columns(
    columns: Iterable[str] | None,
    ref_frame: Any,
    ref_profile: Profile | None,
    cur_frame: Any,
    cur_profile: Profile | None,
) -> list[str]:
    ref_names, ref_schema = _available(ref_frame, ref_profile)
    cur_names, _ = _available(cur_frame, cur_profile)
    if columns is not None:
        names = list(columns)
        absent = [c for c in names if c not in ref_names]
        if absent:
            raise InvalidInput(f"The reference has no column {', '.join(map(repr, absent))}.")
    elif ref_profile is not None:
        names = ref_names
    elif ref_schema is not None:
        names = [c for c in ref_names if _arrow_comparable(ref_schema.field(c).type)]
    else:
        names = [c for c in ref_names if kind_of(column_of(ref_frame, c)) is not None]
    absent = [c for c in names if c not in cur_names]
    if absent:
        raise InvalidInput(
            f"The current data has no column {', '.join(map(repr, absent))}: "
            "pass columns=[...] to compare the others."
        )
    if not names:
        raise InvalidInput("There is no numeric or categorical column to compare.")
    return names


def _arrow_comparable(arrow_type: Any) -> bool:
    import pyarrow as pa

    t = pa.types
    return bool(
        t.is_integer(arrow_type)
        or t.is_floating(arrow_type)
        or t.is_boolean(arrow_type)
        or t.is_string(arrow_type)
        or t.is_large_string(arrow_type)
        or t.is_dictionary(arrow_type)
        or getattr(t, "is_string_view", lambda _: False)(arrow_type)
    )


def _method(name: str) -> Method:
    if name in METHODS:
        return METHODS[name]
    near = difflib.get_close_matches(name, list(METHODS), n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise InvalidInput(f"Unknown drift method {name!r}; the methods are {', '.join(METHODS)}.{hint}")


def _methods(methods: str | Mapping[str, str] | None, names: list[str]) -> dict[str, str]:
    if methods is None:
        return {}
    if isinstance(methods, str):
        _method(methods)
        return dict.fromkeys(names, methods)
    unknown = [c for c in methods if c not in names]
    if unknown:
        raise InvalidInput(f"methods names {', '.join(map(repr, unknown))}, which drift does not compare.")
    for m in methods.values():
        _method(m)
    return dict(methods)


def _thresholds(thresholds: Mapping[str, float] | None, chosen: dict[str, str]) -> dict[str, float]:
    if not thresholds:
        return {}
    loose = [c for c in thresholds if c not in chosen]
    if loose:
        raise InvalidInput(
            f"A threshold for {', '.join(map(repr, loose))} needs a method for it too "
            "(methods={...}): the default method, and so the threshold's meaning, depends on the sample size."
        )
    return {c: float(t) for c, t in thresholds.items()}


def _read(frame: Any, names: list[str]) -> Any:
    """A DataFrame as it is; a parquet file's columns as an Arrow table (no conversion to pandas)."""
    if isinstance(frame, str | os.PathLike):
        import pyarrow.parquet as pq

        return pq.read_table(frame, columns=names)
    return frame


def _profile_like(frame: Any, like: Profile | None, names: list[str]) -> Profile:
    assert like is not None
    if isinstance(frame, str | os.PathLike):
        return Profile.from_parquet(frame, like=like, columns=names)
    return Profile.from_frame(frame, like=like, columns=names)


# ---------------------------------------------------------------------------------------------
# One column
# ---------------------------------------------------------------------------------------------


def _verdict(
    name: str,
    kind: str,
    method: str,
    threshold: float | None,
    statistic: float,
    p_value: float | None,
    n_ref: int,
    n_cur: int,
    error_bound: float = 0.0,
) -> ColumnDrift:
    spec = METHODS[method]
    limit = spec.threshold if threshold is None else threshold
    drifted = (p_value < limit) if (spec.uses_p_value and p_value is not None) else statistic >= limit
    return ColumnDrift(
        name, kind, method, statistic, limit, bool(drifted), p_value, n_ref, n_cur, error_bound
    )


def _empty(
    name: str, kind: str, method: str | None, threshold: float | None, n_ref: int, n_cur: int
) -> ColumnDrift:
    method = method or default_method(kind, n_ref, n_cur, math.inf)
    side = "reference" if n_ref == 0 else "current data"
    limit = METHODS[method].threshold if threshold is None else threshold
    p_value = math.nan if METHODS[method].uses_p_value else None
    note = f"no values in the {side}"
    return ColumnDrift(name, kind, method, math.nan, limit, False, p_value, n_ref, n_cur, 0.0, note)


def _check_method(name: str, kind: str, method: str) -> None:
    spec = METHODS[method]
    if kind not in spec.kinds:
        fits = [m for m, s in METHODS.items() if kind in s.kinds]
        raise InvalidInput(f"{method} compares numbers; {name!r} is {kind}: use one of {', '.join(fits)}.")


def _exact(
    name: str, ref: RawColumn, cur: RawColumn, method: str | None, threshold: float | None
) -> tuple[ColumnDrift, Column, Column]:
    """Compare two raw columns; the statistic is exact."""
    kind = ref.kind
    if method is not None:
        _check_method(name, kind, method)
    if kind == CATEGORICAL:
        assert ref.counts is not None and cur.counts is not None
        ref_col = CategoricalColumn.from_counts(ref.rows, ref.missing, ref.counts)
        cur_col = CategoricalColumn.from_counts(cur.rows, cur.missing, cur.counts)
        keys = list(dict.fromkeys([*ref.counts, *cur.counts]))  # every category, none folded
        a = np.array([ref.counts.get(k, 0) for k in keys], dtype=np.int64)
        b = np.array([cur.counts.get(k, 0) for k in keys], dtype=np.int64)
        return _on_counts(name, kind, method, threshold, a, b), ref_col, cur_col

    assert ref.values is not None and cur.values is not None
    r, c = _sorted_finite(ref.values), _sorted_finite(cur.values)
    ref_col = NumericColumn.from_sorted(r, ref.rows, int(np.isnan(ref.values).sum()))
    cur_col = NumericColumn.from_sorted(c, cur.rows, int(np.isnan(cur.values).sum()), ref_col.edges)
    n, m = len(r), len(c)
    if n == 0 or m == 0:
        return _empty(name, kind, method, threshold, n, m), ref_col, cur_col
    method = method or default_method(NUMERIC, n, m, wasserstein_noise(ref_col, n, m))
    if method == "wasserstein":
        norm = max(ref_col.std, MIN_NORM)
        result = _verdict(name, kind, method, threshold, stats.wasserstein(r, c) / norm, None, n, m)
    elif method == "ks":
        d = stats.ks_statistic(r, c)
        result = _verdict(name, kind, method, threshold, d, stats.ks_pvalue(d, n, m, r, c), n, m)
    else:
        a, b = _decile_counts(ref_col, cur_col)
        result = _on_counts(name, kind, method, threshold, a, b)
    return result, ref_col, cur_col


def _binned(name: str, ref: Column, cur: Column, method: str | None, threshold: float | None) -> ColumnDrift:
    """Compare two profiled columns; Wasserstein and KS are estimates with an error bound."""
    if ref.kind != cur.kind:
        raise InvalidInput(
            f"Column {name!r} is {ref.kind} in the reference and {cur.kind} in the current data."
        )
    if method is not None:
        _check_method(name, ref.kind, method)
    if isinstance(ref, CategoricalColumn) and isinstance(cur, CategoricalColumn):
        a, b = _aligned_categories(ref, cur)
        return _on_counts(name, CATEGORICAL, method, threshold, a, b)
    assert isinstance(ref, NumericColumn) and isinstance(cur, NumericColumn)
    if not ref.same_layout(cur):
        raise InvalidInput(
            f"Column {name!r} was binned differently in the two profiles: profile the current data "
            "with Profile.from_frame(current, like=reference)."
        )
    n, m = ref.n, cur.n
    if n == 0 or m == 0:
        return _empty(name, NUMERIC, method, threshold, n, m)
    method = method or default_method(NUMERIC, n, m, wasserstein_noise(ref, n, m))
    if method in ("wasserstein", "ks"):
        w, d = stats.binned_distances(ref.bins, cur.bins)
        if method == "wasserstein":
            norm = max(ref.std, MIN_NORM)
            return _verdict(
                name, NUMERIC, method, threshold, w.value / norm, None, n, m, w.error_bound / norm
            )
        p = stats.ks_pvalue(d.value, n, m)
        return _verdict(name, NUMERIC, method, threshold, d.value, p, n, m, d.error_bound)
    a, b = _decile_counts(ref, cur)
    return _on_counts(name, NUMERIC, method, threshold, a, b)


def _on_counts(
    name: str, kind: str, method: str | None, threshold: float | None, a: np.ndarray, b: np.ndarray
) -> ColumnDrift:
    """A verdict from counts over the same bins or categories (exact whatever the source)."""
    n, m = int(a.sum()), int(b.sum())
    if n == 0 or m == 0:
        return _empty(name, kind, method, threshold, n, m)
    method = method or default_method(kind, n, m, js_noise(int(np.count_nonzero(a + b)), n, m))
    if method == "psi":
        return _verdict(name, kind, method, threshold, stats.psi(a, b), None, n, m)
    if method == "jensenshannon":
        return _verdict(name, kind, method, threshold, stats.jensenshannon(a, b), None, n, m)
    statistic, p, _ = stats.chi2_contingency(a, b)
    return _verdict(name, kind, method, threshold, statistic, p, n, m)


def _sorted_finite(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    out = values.copy() if finite.all() else values[finite]  # never sort the caller's array in place
    out.sort()
    return out


def _aligned_categories(ref: CategoricalColumn, cur: CategoricalColumn) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both sides over the same categories. When the reference kept only its most frequent
    categories, current categories it did not keep join its "other" count."""
    if ref.other:
        keys = list(ref.categories)
        folded = sum(c for k, c in cur.categories.items() if k not in ref.categories)
        a = [*ref.categories.values(), ref.other]
        b = [*(cur.categories.get(k, 0) for k in keys), cur.other + folded]
    else:
        keys = list(dict.fromkeys([*ref.categories, *cur.categories]))
        a = [ref.categories.get(k, 0) for k in keys] + [0]
        b = [cur.categories.get(k, 0) for k in keys] + [cur.other]
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


def decile_groups(reference: NumericColumn, groups: int = NUMERIC_BINS) -> np.ndarray:
    """For each bin of the reference's layout, its group among ``groups`` of about equal reference mass
    (values below the reference join the first group, values above it the last)."""
    before = np.concatenate([[0], np.cumsum(reference.counts)[:-1]]) / max(reference.n, 1)
    return np.minimum(np.floor(before * groups + 1e-9), groups - 1).astype(np.intp)


def _decile_counts(ref: NumericColumn, cur: NumericColumn) -> tuple[np.ndarray, np.ndarray]:
    g = decile_groups(ref)
    return (
        np.bincount(g, weights=ref.counts, minlength=NUMERIC_BINS).astype(np.int64),
        np.bincount(g, weights=cur.counts, minlength=NUMERIC_BINS).astype(np.int64),
    )
