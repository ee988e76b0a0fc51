"""The drift report as one self-contained HTML page: a summary table and, per feature, the reference
and current distributions overlaid as inline SVG. No scripts, fonts or other files are fetched."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from shipway.data.reference import CategoricalColumn, Column, NumericColumn
from shipway.monitoring.stats import _Cdf

if TYPE_CHECKING:
    from shipway.monitoring.drift import ColumnDrift, DriftReport

WIDTH, HEIGHT, PAD = 640, 190, 28
CELLS = 48  # histogram cells across the plotted range
TOP_CATEGORIES = 12
REFERENCE_FILL, CURRENT_OK, CURRENT_DRIFTED = "#98a2b3", "#1c64f2", "#d92d20"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2939; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .25rem; } h2 { font-size: 1.15rem; margin: 0 0 .25rem; }
.lede { color: #475467; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #eaecf0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.drifted td:first-child { border-left: 4px solid #d92d20; }
tr.stable td:first-child { border-left: 4px solid #12b76a; }
.badge { display: inline-block; padding: 0 .5rem; border-radius: 1rem; font-size: .8rem; font-weight: 600; }
.badge.drifted { background: #fee4e2; color: #b42318; } .badge.stable { background: #d1fadf; color: #027a48; }
section.feature { border: 1px solid #eaecf0; border-radius: .5rem; padding: 1rem; margin: 1rem 0; }
.meta { color: #475467; font-size: .9rem; margin: .2rem 0 .5rem; }
.legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 .8rem;
               vertical-align: -1px; }
svg text { font-size: 11px; fill: #475467; }
"""


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.3g}"
    return f"{x:.4g}"


def render(report: DriftReport, *, title: str = "Data drift") -> str:
    """The whole page for ``report``."""
    drifted = len(report.drifted_columns)
    total = len(report.columns)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="lede">{drifted} of {total} features drifted ({report.share_drifted:.0%}). '
        f"Reference: {report.reference.rows:,} rows; current: {report.current.rows:,} rows.</p>",
        _summary_table(report.columns),
    ]
    for result in report.columns:
        parts.append(_section(result, report.reference[result.feature], report.current[result.feature]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _anchor(feature: str, prefix: str = "f-") -> str:
    return prefix + "".join(ch if ch.isalnum() else "-" for ch in feature)


def _criterion(r: ColumnDrift) -> str:
    if r.p_value is not None:
        return f"p {'<' if r.drifted else '≥'} {_fmt(r.threshold)}"
    return f"{'≥' if r.drifted else '<'} {_fmt(r.threshold)}"


def _summary_table(results: list[ColumnDrift], prefix: str = "f-") -> str:
    head = (
        "<table><thead><tr><th>feature</th><th>kind</th><th>method</th><th class='num'>statistic</th>"
        "<th class='num'>threshold</th><th class='num'>p-value</th><th>verdict</th></tr></thead><tbody>"
    )
    rows = []
    for r in results:
        state = "drifted" if r.drifted else "stable"
        approx = f" ± {_fmt(r.error_bound)}" if r.error_bound else ""
        rows.append(
            f'<tr class="{state}"><td><a href="#{_anchor(r.feature, prefix)}">{escape(r.feature)}</a></td>'
            f"<td>{r.kind}</td><td>{r.method}</td><td class='num'>{_fmt(r.statistic)}{approx}</td>"
            f"<td class='num'>{_fmt(r.threshold)}</td><td class='num'>{_fmt(r.p_value)}</td>"
            f'<td><span class="badge {state}">{state}</span></td></tr>'
        )
    return head + "".join(rows) + "</tbody></table>"


def _section(r: ColumnDrift, ref: Column, cur: Column, prefix: str = "f-") -> str:
    state = "drifted" if r.drifted else "stable"
    color = CURRENT_DRIFTED if r.drifted else CURRENT_OK
    if isinstance(ref, NumericColumn) and isinstance(cur, NumericColumn):
        chart = _numeric_svg(r.feature, ref, cur, color)
    elif isinstance(ref, CategoricalColumn) and isinstance(cur, CategoricalColumn):
        chart = _categorical_svg(r.feature, ref, cur, color)
    else:  # pragma: no cover - drift() refuses mixed kinds
        chart = ""
    note = f" {escape(r.note)}." if r.note else ""
    return (
        f'<section class="feature" id="{_anchor(r.feature, prefix)}"><h2>{escape(r.feature)} '
        f'<span class="badge {state}">{state}</span></h2>'
        f'<p class="meta">{r.method} = {_fmt(r.statistic)} ({_criterion(r)}); values compared: '
        f"{r.n_reference:,} reference, {r.n_current:,} current; missing: {ref.missing_rate:.1%} reference, "
        f"{cur.missing_rate:.1%} current.{note}</p>"
        f'<div class="legend"><span style="background:{REFERENCE_FILL}"></span>reference'
        f'<span style="background:{color}"></span>current</div>{chart}</section>'
    )


def _svg(feature: str, height: int, body: list[str]) -> str:
    label = escape(f"Distribution of {feature}: reference and current")
    return (
        f'<svg role="img" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">'
        f"<title>{label}</title>{''.join(body)}</svg>"
    )


def _numeric_svg(feature: str, ref: NumericColumn, cur: NumericColumn, color: str) -> str:
    sides = [c for c in (ref, cur) if c.n]
    if not sides:
        return _svg(feature, 40, ['<text x="8" y="24">no values to plot</text>'])
    cdfs = [_Cdf(*c.bins) for c in sides]
    # Plot where the middle 99% of each sample lies, so one far outlier does not flatten the rest.
    lo = min(_quantile(c, 0.005) for c in cdfs)
    hi = max(_quantile(c, 0.995) for c in cdfs)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    grid = np.linspace(lo, hi, CELLS + 1)
    masses = [np.diff(cdf.at(grid, left=False)[0]) for cdf in cdfs]
    top = max(float(m.max()) for m in masses) or 1.0
    x0, y0, w, h = PAD, PAD / 2, WIDTH - 2 * PAD, HEIGHT - 1.5 * PAD
    body = []
    fills = [(REFERENCE_FILL, 0.55, "none")] + ([("none", 0, color)] if len(sides) == 2 else [])
    for mass, (fill, opacity, stroke) in zip(masses, fills, strict=False):
        points = [f"{x0:.1f},{y0 + h:.1f}"]
        for k, m in enumerate(mass):
            y = y0 + h - h * m / top
            points += [f"{x0 + w * k / CELLS:.1f},{y:.1f}", f"{x0 + w * (k + 1) / CELLS:.1f},{y:.1f}"]
        points.append(f"{x0 + w:.1f},{y0 + h:.1f}")
        body.append(
            f'<polyline points="{" ".join(points)}" fill="{fill}" fill-opacity="{opacity}" '
            f'stroke="{stroke}" stroke-width="2"/>'
        )
    body.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#98a2b3"/>')
    body.append(f'<text x="{x0}" y="{HEIGHT - 4}">{escape(_fmt(float(lo)))}</text>')
    body.append(
        f'<text x="{x0 + w / 2}" y="{HEIGHT - 4}" text-anchor="middle">middle 99% of each sample</text>'
    )
    body.append(f'<text x="{x0 + w}" y="{HEIGHT - 4}" text-anchor="end">{escape(_fmt(float(hi)))}</text>')
    return _svg(feature, HEIGHT, body)


def _quantile(cdf: _Cdf, q: float) -> float:
    knots = np.unique(np.concatenate(cdf.knots()))
    f = cdf.at(knots, left=False)[0]
    return float(knots[min(int(np.searchsorted(f, q, "left")), len(knots) - 1)])


def _categorical_svg(feature: str, ref: CategoricalColumn, cur: CategoricalColumn, color: str) -> str:
    n_ref, n_cur = max(ref.n, 1), max(cur.n, 1)
    keys = list(dict.fromkeys([*ref.categories, *cur.categories]))
    share = {k: (ref.categories.get(k, 0) / n_ref, cur.categories.get(k, 0) / n_cur) for k in keys}
    shown = sorted(keys, key=lambda k: -max(share[k]))[:TOP_CATEGORIES]
    rest = [k for k in keys if k not in shown]
    rows = [(k, *share[k]) for k in shown]
    if rest or ref.other or cur.other:
        rows.append(
            (
                f"{len(rest)} others" if rest else "others",
                sum(share[k][0] for k in rest) + ref.other / n_ref,
                sum(share[k][1] for k in rest) + cur.other / n_cur,
            )
        )
    if not rows:
        return _svg(feature, 40, ['<text x="8" y="24">no values to plot</text>'])
    label_w, row_h = 150, 26
    height = int(row_h * len(rows) + PAD)
    top = max(max(a, b) for _, a, b in rows) or 1.0
    w = WIDTH - label_w - 110  # room for "50.6% → 52.0%" after the bars
    body = []
    for i, (name, a, b) in enumerate(rows):
        y = PAD / 2 + i * row_h
        text = name if len(name) <= 22 else name[:21] + "…"
        body.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(text)}</text>')
        body.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{w * a / top:.1f}" height="10" fill="{REFERENCE_FILL}"/>'
        )
        body.append(
            f'<rect x="{label_w}" y="{y + 12}" width="{w * b / top:.1f}" height="10" fill="{color}"/>'
        )
        body.append(f'<text x="{label_w + w + 6}" y="{y + 15}">{a:.1%} → {b:.1%}</text>')
    return _svg(feature, height, body)
