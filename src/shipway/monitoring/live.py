"""Drift of a deployment, read from its prediction log: a window against the version's training
reference (features), against the window before it (predictions), and one arm against another.

The log is streamed batch by batch and each batch is profiled on the reference's bins, so memory is
bounded by a batch and a profile whatever the window's size; no raw training data is read (the
reference is a stored profile, see :mod:`shipway.data.dataset_profiles`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipway.core.errors import InvalidInput
from shipway.data.columns import CATEGORICAL, NUMERIC, kind_of, read_column
from shipway.data.reference import (
    CategoricalColumn,
    Column,
    NumericColumn,
    Profile,
    column_profile,
    each_column,
)
from shipway.monitoring.dataquality import QualityCheck, SchemaTally, check_window
from shipway.monitoring.drift import ColumnDrift, DriftReport, drift
from shipway.monitoring.sources import (
    LogBatch,
    Reference,
    Target,
    Window,
    answered,
    given_reference,
    input_columns,
    log_batches,
    newest_version,
    no_predictions,
    not_answered,
    reference_of,
    resolve_target,
)

if TYPE_CHECKING:
    from shipway.monitoring.quality import QualityReport
    from shipway.store import Store


class LiveDriftReport(DriftReport):
    """Drift of a logged window: per feature against a reference (``columns``, as in
    :class:`DriftReport`), the predictions against a baseline (``prediction``), and data quality."""

    def __init__(
        self,
        columns: list[ColumnDrift],
        reference: Profile,
        current: Profile,
        *,
        model: str,
        versions: list[str],
        window: Window,
        reference_source: str,
        current_source: str,
        prediction: DriftReport | None,
        prediction_baseline: str,
        data_quality: list[QualityCheck],
        statuses: dict[str, int],
        notes: list[str],
    ) -> None:
        super().__init__(columns, reference, current)
        self.model = model
        self.versions = versions
        self.window = window
        self.reference_source = reference_source
        self.current_source = current_source
        self.prediction = prediction
        self.prediction_baseline = prediction_baseline
        self.data_quality = data_quality
        self.statuses = statuses
        self.notes = notes

    def __repr__(self) -> str:
        flagged = len(self.quality_issues)
        return (
            f"LiveDriftReport({self.model!r}, {self.window.label}: {len(self.drifted_columns)} of "
            f"{len(self.columns)} features drifted, {flagged} data quality issue(s))"
        )

    @property
    def rows(self) -> int:
        """The answered predictions the window's features were profiled from."""
        return self.current.rows

    @property
    def prediction_drifted(self) -> list[str]:
        """The prediction columns judged drifted against the baseline."""
        return self.prediction.drifted_columns if self.prediction is not None else []

    @property
    def quality_issues(self) -> list[QualityCheck]:
        """The data-quality checks that flagged something."""
        return [c for c in self.data_quality if c.flagged]

    def quality_frame(self) -> Any:
        """One row per data-quality check: feature, check, value, reference, threshold, flagged, ..."""
        import pandas as pd

        from shipway.monitoring.dataquality import checks_to_dicts

        fields = list(QualityCheck.__dataclass_fields__)
        return pd.DataFrame(checks_to_dicts(self.data_quality), columns=fields)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        from shipway.monitoring.dataquality import checks_to_dicts

        out.update(
            model=self.model,
            versions=self.versions,
            window=self.window.to_dict(),
            reference_source=self.reference_source,
            current_source=self.current_source,
            prediction=None if self.prediction is None else self.prediction.to_dict(),
            prediction_baseline=self.prediction_baseline,
            prediction_drifted=self.prediction_drifted,
            data_quality=checks_to_dicts(self.data_quality),
            quality_issues=len(self.quality_issues),
            statuses=self.statuses,
            notes=self.notes,
        )
        return out

    def to_html(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        title: str | None = None,
        quality: QualityReport | None = None,
    ) -> str:
        """One self-contained page: drift, prediction drift, data quality and (given ``quality``) live
        quality, with a chart per feature; written to ``path`` if one is given."""
        from shipway.monitoring.live_html import render_live

        html = render_live(self, quality, title=title or f"Monitoring: {self.model}")
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html


# ---------------------------------------------------------------------------------------------
# Profiling the log
# ---------------------------------------------------------------------------------------------


class WindowProfile:
    """Column profiles of logged rows, merged batch by batch, on the bins of ``layout``.

    ``layout`` maps a column to a profile whose bins (numbers) or kind (categories) to follow; it may
    be shared and grow: a column missing from it takes the bins of the first batch that has it.
    """

    def __init__(self, layout: dict[str, Column], *, grow: bool = False) -> None:
        self.layout = layout
        self.grow = grow
        self.columns: dict[str, Column] = {}
        self.rows = 0
        self.schema = SchemaTally()
        self.unlaid: dict[str, None] = {}  # columns seen that the layout has no bins for

    def add(self, batch: Any, names: Iterable[str], rows: int) -> None:
        """Profile ``names`` of an Arrow batch of ``rows`` rows (the rows it had before selecting)."""
        names = list(names)
        self.rows += rows
        self.schema.rows += rows
        present = set(batch.schema.names) if rows else set()
        wanted: list[str] = []
        for name in names:
            if name not in present:
                self.schema.lacks(name, rows)
                continue
            column = batch.column(name)
            kind = _kind(column)
            ref = self.layout.get(name)
            if ref is None and self.grow and kind not in (None, "null"):
                ref = self.layout[name] = _first_layout(column, name, kind)
            if ref is None:
                self.unlaid[name] = None
                continue
            if kind != "null" and kind != ref.kind:
                self.schema.mistyped(name, rows, str(column.type))
                continue
            wanted.append(name)

        def profile(name: str) -> tuple[str, Column]:
            ref = self.layout[name]
            column = _as_kind(batch.column(name), ref.kind)
            raw = read_column(column, name, ref.kind)
            return name, column_profile(raw, ref.edges if isinstance(ref, NumericColumn) else None)

        for name, col in each_column(profile, wanted, rows * len(wanted)):
            before = self.columns.get(name)
            self.columns[name] = col if before is None else before.merge(col)  # type: ignore[arg-type]

    def merged(self, other: WindowProfile) -> WindowProfile:
        """The profile of both windows' rows (on the same layout)."""
        out = WindowProfile(self.layout, grow=self.grow)
        out.rows = self.rows + other.rows
        out.columns = dict(self.columns)
        for name, col in other.columns.items():
            before = out.columns.get(name)
            out.columns[name] = col if before is None else before.merge(col)  # type: ignore[arg-type]
        out.schema.rows = self.schema.rows + other.schema.rows
        for tally in (self.schema, other.schema):
            for name, rows in tally.missing.items():
                out.schema.lacks(name, rows)
            for name, (rows, found) in tally.wrong_type.items():
                out.schema.mistyped(name, rows, found)
        out.unlaid = {**self.unlaid, **other.unlaid}
        return out

    def profile(self, names: Iterable[str] | None = None) -> Profile:
        picked = self.columns if names is None else {n: self.columns[n] for n in names if n in self.columns}
        return Profile(picked, self.rows)


def _kind(column: Any) -> str | None:
    import pyarrow as pa

    if pa.types.is_null(column.type):
        return "null"
    return kind_of(column)


def _as_kind(column: Any, kind: str) -> Any:
    """An all-null column (a file where every value was missing) typed for ``kind``."""
    import pyarrow as pa

    if pa.types.is_null(column.type):
        return column.cast(pa.float64() if kind == NUMERIC else pa.string())
    return column


def _first_layout(column: Any, name: str, kind: str) -> Column:
    return column_profile(read_column(column, name, kind))


def _kinds_match(a: Column, b: Column) -> bool:
    return a.kind == b.kind


class _PredictionValues:
    """The prediction columns of a window, kept whole: numbers as float64 (8 bytes a row), categories
    as counts. Their profile takes its bins from the values themselves (the baseline's own quantiles)."""

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, CategoricalColumn] = {}
        self.rows = 0

    def add(self, batch: LogBatch) -> None:
        self.rows += len(batch)
        for real in batch.predictions:
            name = batch.prediction_name(real)
            column = batch.batch.column(real)
            kind = _kind(column)
            if kind == NUMERIC and name not in self.counts:
                raw = read_column(column, name, NUMERIC)
                assert raw.values is not None
                self.values.setdefault(name, []).append(raw.values)
            elif kind == CATEGORICAL and name not in self.values:
                raw = read_column(column, name, CATEGORICAL)
                col = column_profile(raw)
                assert isinstance(col, CategoricalColumn)
                before = self.counts.get(name)
                self.counts[name] = col if before is None else before.merge(col)

    def profile(self) -> Profile:
        columns: dict[str, Column] = {
            name: NumericColumn.from_values(np.concatenate(parts)) for name, parts in self.values.items()
        }
        columns.update(self.counts)
        return Profile(columns, self.rows)


def _add_predictions(target: WindowProfile, batch: LogBatch) -> None:
    """Profile a batch's prediction columns under their usual names."""
    if not batch.predictions:
        return
    import pyarrow as pa

    arrays = [batch.batch.column(p) for p in batch.predictions]
    names = [batch.prediction_name(p) for p in batch.predictions]
    renamed = pa.RecordBatch.from_arrays(arrays, names=names)
    target.add(renamed, names, len(batch))


# ---------------------------------------------------------------------------------------------
# live_drift
# ---------------------------------------------------------------------------------------------


def live_drift(
    model_ref: str,
    *,
    window: str | timedelta = "1h",
    until: datetime | str | None = None,
    version: int | str | None = None,
    reference: Any = None,
    methods: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    store: Store | None = None,
) -> LiveDriftReport:
    """Drift and data quality of the predictions ``model_ref`` logged over the ``window`` ending at
    ``until`` (default now).

    ``model_ref`` is ``churn@prod`` or ``churn/3`` (that version's predictions) or ``churn`` (every
    version's, compared with the newest registered version's reference). Features are compared with
    the version's reference profile (its training dataset's, built and stored on first use) unless
    ``reference`` (a Profile, DataFrame, Arrow table or parquet path) is given; predictions with the
    same model's predictions over the window just before.
    ``methods`` and ``thresholds`` are as in :func:`drift`.
    """
    from shipway.store import get_store

    store = store or get_store()
    target = resolve_target(model_ref, version, store)
    span = Window.ending(window, until)
    baseline = _baseline(target, span.before(), store)

    ref: Reference | None = given_reference(reference) if reference is not None else None
    # Drift is of the answered rows; data quality also counts the requests the server refused
    # (a category the signature does not allow, a missing column), whose inputs are logged too.
    current: WindowProfile | None = None
    rejected: WindowProfile | None = None
    predictions = WindowProfile(dict(baseline.profile().columns))
    features: list[str] = []
    versions: dict[str, None] = {}
    statuses: dict[str, int] = {}
    chosen = target.version
    for batch in log_batches(target.name, span, version=target.version_label, store=store):
        _count_statuses(batch, statuses)
        ok, refused = answered(batch), not_answered(batch)
        if current is None or rejected is None:
            if chosen is None:  # every version's predictions: the newest version's reference
                chosen = newest_version(target.name, set(), store)
            if ref is None:
                ref = reference_of(chosen, store)
            features = _features(ref, chosen)
            current = WindowProfile(dict(ref.profile.columns))
            rejected = WindowProfile(current.layout)
        _versions_in(ok, versions)
        current.add(ok.batch, features, len(ok))
        rejected.add(refused.batch, features, len(refused))
        _add_predictions(predictions, ok)
    if current is None or rejected is None or ref is None or chosen is None or current.rows == 0:
        raise no_predictions(target, span)

    observed = [f for f in features if f in current.columns]
    notes = _feature_notes(ref, chosen)
    report = (
        drift(
            ref.profile,
            current.profile(observed),
            columns=observed,
            methods=_pick(methods, observed),
            thresholds=thresholds,
        )
        if observed
        else None
    )
    both = current.merged(rejected)
    quality = check_window(ref.profile, both.profile(), features, both.schema)
    which = f"version {target.version.version}" if target.version is not None else "every version"
    return LiveDriftReport(
        report.columns if report is not None else [],
        report.reference if report is not None else Profile({}, ref.profile.rows),
        report.current if report is not None else current.profile([]),
        model=target.name,
        versions=sorted(versions, key=_version_order),
        window=span,
        reference_source=ref.source,
        current_source=f"predictions of {target.name!r} ({which}), {span.describe()}",
        prediction=_prediction_drift(baseline, predictions, notes),
        prediction_baseline=f"the predictions of the window before ({span.before().describe()})",
        data_quality=quality,
        statuses=statuses,
        notes=notes,
    )


def _pick(methods: str | Mapping[str, str] | None, names: list[str]) -> str | Mapping[str, str] | None:
    if methods is None or isinstance(methods, str):
        return methods
    unknown = [c for c in methods if c not in names]
    if unknown:
        raise InvalidInput(
            f"methods names {', '.join(map(repr, unknown))}, which is not a logged feature of the reference."
        )
    return methods


def _baseline(target: Target, before: Window, store: Store) -> _PredictionValues:
    values = _PredictionValues()
    for batch in log_batches(target.name, before, version=target.version_label, store=store):
        ok = answered(batch)
        if len(ok):
            values.add(ok)
    return values


def _prediction_drift(
    baseline: _PredictionValues, window: WindowProfile, notes: list[str]
) -> DriftReport | None:
    if not baseline.rows:
        notes.append(
            "Prediction drift: no predictions were logged in the window before, so there is no baseline."
        )
        return None
    base = baseline.profile()
    names = [n for n in window.columns if n in base.columns and _kinds_match(base[n], window.columns[n])]
    left = sorted(set(window.unlaid) | (set(window.columns) - set(names)))
    if left:
        notes.append(f"Prediction drift: {', '.join(left)} not in the window before; not compared.")
    if not names:
        return None
    return drift(base, window.profile(names), columns=names)


def _count_statuses(batch: LogBatch, statuses: dict[str, int]) -> None:
    import pyarrow.compute as pc

    status = batch.meta("status")
    if status is None:
        statuses["200"] = statuses.get("200", 0) + len(batch)
        return
    counts = pc.value_counts(status)
    for value, count in zip(
        counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
    ):
        key = str(value)
        statuses[key] = statuses.get(key, 0) + int(count)


def _versions_in(batch: LogBatch, seen: dict[str, None]) -> None:
    import pyarrow.compute as pc

    column = batch.meta("version")
    if column is not None:
        seen.update(dict.fromkeys(str(v) for v in pc.unique(column).to_pylist() if v is not None))


def _version_order(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (1 << 62, label)


def _features(ref: Reference, version: Any) -> list[str]:
    """The features to compare: the version's logged inputs that the reference profiled (without a
    signature, the reference's columns other than its target)."""
    inputs = input_columns(version)
    if inputs is None:
        inputs = [c for c in ref.profile.columns if c != ref.target]
    return [c for c in inputs if c in ref.profile.columns]


def _feature_notes(ref: Reference, version: Any) -> list[str]:
    from shipway.monitoring.sources import pii_columns

    notes = []
    inputs = input_columns(version) or []
    unprofiled = [c for c in inputs if c not in ref.profile.columns]
    if unprofiled:
        notes.append(
            f"Not compared: {', '.join(unprofiled)} (not in {ref.source}, or neither numbers nor categories)."
        )
    pii = pii_columns(version)
    if pii:
        notes.append(f"Not compared: {', '.join(pii)} (personal data, never written to the prediction log).")
    return notes
