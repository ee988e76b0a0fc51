"""Data quality of a window against its reference: missing-rate jumps, values out of the reference's
range, categories the reference never saw, and schema violations (a feature missing from the log,
or logged with another type). Computed from the window's profile, so it costs nothing extra."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from shipway.data.reference import CategoricalColumn, Column, NumericColumn, Profile

# A missing rate is flagged when it rises by at least this much (absolute) over the reference's and
# by more than NOISE_SD standard deviations of its sampling noise.
MISSING_JUMP = 0.05
NOISE_SD = 3.0
# Values outside the reference's [min, max] are flagged past this share of the window's values, or past
# OUT_OF_RANGE_FACTOR times the share a fresh sample of the reference itself would have there (2/(n+1)).
OUT_OF_RANGE = 0.01
OUT_OF_RANGE_FACTOR = 3.0
SHOWN_CATEGORIES = 5

CHECKS = ("missing_column", "type_mismatch", "missing_rate", "out_of_range", "unseen_categories")


@dataclass(frozen=True)
class QualityCheck:
    """One data-quality check of one feature over the window."""

    feature: str
    check: str  # one of CHECKS
    value: float  # the window's rate or share
    reference: float | None  # the reference's rate, where there is one
    threshold: float
    flagged: bool
    rows: int  # the rows (or values) the check counted
    detail: str


@dataclass
class SchemaTally:
    """Per feature, the window's rows that lacked it or carried it with the wrong type."""

    rows: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    wrong_type: dict[str, tuple[int, str]] = field(default_factory=dict)

    def lacks(self, feature: str, rows: int) -> None:
        self.missing[feature] = self.missing.get(feature, 0) + rows

    def mistyped(self, feature: str, rows: int, found: str) -> None:
        count, _ = self.wrong_type.get(feature, (0, found))
        self.wrong_type[feature] = (count + rows, found)


def check_window(
    reference: Profile, current: Profile, features: list[str], schema: SchemaTally
) -> list[QualityCheck]:
    """Every check of every feature, flagged or not, in feature order."""
    out: list[QualityCheck] = []
    total = max(schema.rows, 1)
    for name in features:
        ref = reference[name]
        missing = schema.missing.get(name, 0)
        if missing:
            out.append(
                QualityCheck(
                    name,
                    "missing_column",
                    missing / total,
                    None,
                    0.0,
                    True,
                    missing,
                    f"absent from {missing:,} of {schema.rows:,} logged rows",
                )
            )
        wrong = schema.wrong_type.get(name)
        if wrong is not None:
            count, found = wrong
            out.append(
                QualityCheck(
                    name,
                    "type_mismatch",
                    count / total,
                    None,
                    0.0,
                    True,
                    count,
                    f"logged as {found} in {count:,} rows; the reference is {ref.kind}",
                )
            )
        cur = current.columns.get(name)
        if cur is None or cur.rows == 0:
            continue
        out.append(_missing_rate(name, ref, cur))
        if isinstance(ref, NumericColumn) and isinstance(cur, NumericColumn):
            out.append(_out_of_range(name, ref, cur))
        elif isinstance(ref, CategoricalColumn) and isinstance(cur, CategoricalColumn) and not ref.other:
            out.append(_unseen(name, ref, cur))
    return out


def _missing_rate(name: str, ref: Column, cur: Column) -> QualityCheck:
    p, q, n = ref.missing_rate, cur.missing_rate, cur.rows
    noise = NOISE_SD * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))
    flagged = q - p >= MISSING_JUMP and q - p > noise
    missing = cur.missing + (cur.infinite if isinstance(cur, NumericColumn) else 0)
    return QualityCheck(
        name,
        "missing_rate",
        q,
        p,
        MISSING_JUMP,
        flagged,
        missing,
        f"{q:.1%} missing ({missing:,} of {n:,}) against {p:.1%} in the reference",
    )


def _out_of_range(name: str, ref: NumericColumn, cur: NumericColumn) -> QualityCheck:
    below, above = int(cur.counts[0]), int(cur.counts[-1])
    n = max(cur.n, 1)
    share = (below + above) / n
    threshold = max(OUT_OF_RANGE, OUT_OF_RANGE_FACTOR * 2 / (ref.n + 1))
    lo, hi = ref.min, ref.max
    parts = []
    if below:
        parts.append(f"{below:,} below the reference's minimum {_num(lo)}")
    if above:
        parts.append(f"{above:,} above its maximum {_num(hi)}")
    detail = "; ".join(parts) if parts else f"all within the reference's range [{_num(lo)}, {_num(hi)}]"
    return QualityCheck(
        name, "out_of_range", share, None, threshold, share > threshold, below + above, detail
    )


def _unseen(name: str, ref: CategoricalColumn, cur: CategoricalColumn) -> QualityCheck:
    new = {k: c for k, c in cur.categories.items() if k not in ref.categories and c}
    rows = sum(new.values()) + cur.other
    share = rows / max(cur.n, 1)
    if new:
        top = sorted(new.items(), key=lambda kv: -kv[1])[:SHOWN_CATEGORIES]
        listed = ", ".join(f"{k!r} ({c:,})" for k, c in top)
        more = f" and {len(new) - len(top)} more" if len(new) > len(top) else ""
        detail = (
            f"{len(new)} categor{'y' if len(new) == 1 else 'ies'} the reference never saw: {listed}{more}"
        )
    else:
        detail = "every category was seen in the reference"
    return QualityCheck(name, "unseen_categories", share, None, 0.0, rows > 0, rows, detail)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def checks_to_dicts(checks: list[QualityCheck]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
