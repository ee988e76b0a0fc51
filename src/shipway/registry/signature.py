"""Model signatures: the input columns and output a version expects, inferred from an example.

``validate`` checks a frame against the input schema, casts what can be cast safely, and
otherwise raises one :class:`InvalidInput` that lists every problem by column name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shipway.core.errors import InvalidInput

# A string column is treated as categorical when it has at most this many distinct values
# and they repeat (distinct / rows at most CATEGORY_RATIO) in the example.
MAX_CATEGORIES = 20
CATEGORY_RATIO = 0.5


@dataclass(frozen=True)
class ColumnSpec:
    """One expected input column."""

    name: str
    kind: str  # integer | float | boolean | string | datetime
    nullable: bool
    categories: tuple[str, ...] | None = None
    # Personal data: never written to the prediction log. Serialised only when set, so the
    # signatures (and digests) of versions registered without it are unchanged.
    pii: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.kind, "nullable": self.nullable}
        if self.categories is not None:
            data["categories"] = list(self.categories)
        if self.pii:
            data["pii"] = True
        return data


@dataclass(frozen=True)
class Signature:
    """Input columns and output description of a model version."""

    inputs: tuple[ColumnSpec, ...]
    output: dict[str, Any]
    # "ndarray" when the example was a NumPy array: the model was fitted without column names
    # and is handed an array again after validation.
    input_kind: str = "frame"

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [c.to_dict() for c in self.inputs],
            "output": self.output,
            "input_kind": self.input_kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(
                ColumnSpec(
                    c["name"],
                    c["type"],
                    bool(c["nullable"]),
                    tuple(c["categories"]) if c.get("categories") is not None else None,
                    bool(c.get("pii", False)),
                )
                for c in data["inputs"]
            ),
            output=dict(data.get("output") or {}),
            input_kind=str(data.get("input_kind", "frame")),
        )


def _kind(series: Any) -> str:
    from shipway.data.profile import kind_of

    kind = kind_of(series)
    return {"category": "string", "other": "string"}.get(kind, kind)


def as_frame(data: Any) -> Any:
    """A pandas DataFrame from a DataFrame, a list of records or a dict of columns."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, list | dict) or type(data).__module__ == "numpy":
        try:
            return pd.DataFrame(data)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"Cannot read the input as a table: {exc}") from exc
    raise InvalidInput(
        f"Model input must be a pandas DataFrame, a list of records, a dict of columns or a NumPy array, "
        f"not {type(data).__name__}."
    )


def describe_output(output: Any) -> dict[str, Any]:
    """Type and shape of a prediction (array) or its columns (frame)."""
    import numpy as np
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        return {
            "kind": "columns",
            "columns": [{"name": str(c), "type": _kind(output[c])} for c in output.columns],
        }
    arr = np.asarray(output)
    return {"kind": "tensor", "dtype": str(arr.dtype), "shape": [-1, *arr.shape[1:]]}


def infer_signature(
    example: Any, output: Any | None = None, *, pii: Iterable[str] | None = None
) -> Signature:
    """Infer the input schema from an example frame (and the output from its predictions).

    ``pii`` names the columns that hold personal data: they are never written to the prediction log.
    """
    input_kind = "ndarray" if type(example).__module__ == "numpy" else "frame"
    frame = as_frame(example)
    if len(frame) == 0:
        raise InvalidInput("The input example is empty; give at least one row.")
    personal = _pii_names(pii, [str(c) for c in frame.columns])
    columns = []
    for name in frame.columns:
        series = frame[name]
        kind = _kind(series)
        categories = None
        if kind == "string":
            distinct = series.dropna().astype(str).unique()
            if len(distinct) <= MAX_CATEGORIES and len(distinct) <= CATEGORY_RATIO * len(series):
                categories = tuple(sorted(distinct))
        columns.append(
            ColumnSpec(str(name), kind, bool(series.isna().any()), categories, str(name) in personal)
        )
    return Signature(tuple(columns), describe_output(output) if output is not None else {}, input_kind)


def _pii_names(pii: Iterable[str] | None, columns: list[str]) -> frozenset[str]:
    """The PII column names, refusing any that the example does not have."""
    if pii is None:
        return frozenset()
    if isinstance(pii, str):
        pii = [pii]  # one name, not its letters
    names = [str(n) for n in pii]
    unknown = sorted(set(names) - set(columns))
    if unknown:
        raise InvalidInput(
            f"pii names column(s) {unknown} that the input example does not have; its columns are {columns}."
        )
    return frozenset(names)


def _cast(series: Any, spec: ColumnSpec) -> tuple[Any, str | None]:
    """The column cast to the expected kind, or a problem saying why it cannot be."""
    import numpy as np
    import pandas as pd

    actual = _kind(series)
    present = series.notna()
    if not spec.nullable and not present.all():
        return series, f"has {int((~present).sum())} missing value(s) but the model expects none"
    if actual == spec.kind:
        out = series
    elif spec.kind in ("integer", "float"):
        if actual == "boolean":
            return series, f"is boolean; the model expects {spec.kind}"
        numeric = pd.to_numeric(series, errors="coerce")
        bad = present & numeric.isna()
        if bad.any():
            sample = series[bad].astype(str).head(3).tolist()
            return series, f"has non-numeric values {sample}; the model expects {spec.kind}"
        if spec.kind == "integer":
            finite = numeric[present]
            if not np.all(np.equal(np.mod(finite, 1), 0)):
                return series, "has fractional values; the model expects integers"
            if len(finite) and (finite.max() > 2**63 - 1024 or finite.min() < -(2**63)):
                return series, "has values too large for a 64-bit integer"
            out = numeric if not present.all() else numeric.astype("int64")
        else:
            out = numeric.astype("float64")
    elif spec.kind == "string":
        out = series.astype(object).where(present, None).map(lambda v: v if v is None else str(v))
    elif spec.kind == "boolean":
        if actual == "integer" and series.dropna().isin([0, 1]).all():
            out = series.astype(bool)
        else:
            return series, f"is {actual}; the model expects boolean"
    elif spec.kind == "datetime":
        converted = pd.to_datetime(series, errors="coerce")
        if (present & converted.isna()).any():
            return series, "has values that are not dates"
        out = converted
    else:
        return series, f"is {actual}; the model expects {spec.kind}"
    if spec.categories is not None:
        unknown = sorted(set(out.dropna().astype(str)) - set(spec.categories))
        if unknown:
            return series, f"has unknown categories {unknown[:5]}; allowed: {list(spec.categories)}"
    return out, None


def validate(frame: Any, signature: Signature) -> Any:
    """Check and cast ``frame`` for the model; raise InvalidInput listing every problem by column."""
    frame = as_frame(frame)
    problems: list[dict[str, str]] = []
    expected = [c.name for c in signature.inputs]
    given = [str(c) for c in frame.columns]
    if len(set(given)) != len(given):
        dupes = sorted({c for c in given if given.count(c) > 1})
        raise InvalidInput(f"The input has duplicate columns {dupes}; each column may appear once.")
    # Signatures name columns as text; a frame built from a NumPy array has integer labels.
    labels = {str(c): c for c in frame.columns}
    for name in expected:
        if name not in given:
            problems.append({"column": name, "problem": "is missing"})
    for name in given:
        if name not in expected:
            problems.append({"column": name, "problem": "is not an input of this model"})
    if len(frame) == 0:
        problems.append({"column": "*", "problem": "the batch has no rows"})
    columns = {}
    for spec in signature.inputs:
        if spec.name not in given:
            continue
        cast, problem = _cast(frame[labels[spec.name]], spec)
        if problem:
            problems.append({"column": spec.name, "problem": problem})
        columns[spec.name] = cast
    if problems:
        listed = "; ".join(f"'{p['column']}' {p['problem']}" for p in problems)
        raise InvalidInput(f"The input does not match the model's signature: {listed}.", details=problems)
    import pandas as pd

    return pd.DataFrame({name: columns[name] for name in expected}, index=frame.index)
