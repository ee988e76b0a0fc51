"""The monitoring report of a deployment as one self-contained HTML page: feature drift against the
reference, prediction drift, data quality and live quality, each with its table, and a chart per
feature and per metric. Inline CSS and SVG only: no scripts, fonts or other files are fetched."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

from shipway.monitoring.report_html import (
    CSS,
    CURRENT_OK,
    PAD,
    WIDTH,
    _fmt,
    _section,
    _summary_table,
    _svg,
)

if TYPE_CHECKING:
    from shipway.monitoring.dataquality import QualityCheck
    from shipway.monitoring.live import LiveDriftReport
    from shipway.monitoring.quality import QualityReport, QualityRow

LIVE_CSS = """
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0 1.5rem; }
.card { flex: 1 1 11rem; border: 1px solid #eaecf0; border-radius: .5rem; padding: .6rem .8rem; }
.card .big { font-size: 1.5rem; font-weight: 650; display: block; }
.card.alert { border-color: #fda29b; background: #fef3f2; } .card.good { border-color: #a6f4c5; }
h2.part { font-size: 1.3rem; margin: 2rem 0 .25rem; border-bottom: 1px solid #eaecf0;
          padding-bottom: .25rem; }
tr.flagged td:first-child { border-left: 4px solid #d92d20; }
tr.passed td:first-child { border-left: 4px solid #12b76a; }
.notes { color: #475467; font-size: .9rem; } .notes li { margin: .15rem 0; }
"""
CHART_HEIGHT = 170


def render_live(report: LiveDriftReport, quality: QualityReport | None, *, title: str) -> str:
    """The whole page for a live drift report, with the live quality report when there is one."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}{LIVE_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="lede">{escape(_lede(report))}</p>',
        _cards(report, quality),
        '<h2 class="part" id="feature-drift">Feature drift</h2>',
        f'<p class="lede">Against {escape(report.reference_source)}.</p>',
        _summary_table(report.columns) if report.columns else "<p>No feature was compared.</p>",
        _notes(report.notes),
        '<h2 class="part" id="prediction-drift">Prediction drift</h2>',
    ]
    if report.prediction is not None:
        parts += [
            f'<p class="lede">Against {escape(report.prediction_baseline)}.</p>',
            _summary_table(report.prediction.columns, "p-"),
        ]
    else:
        parts.append("<p>Not compared (see the notes above).</p>")
    if report.data_quality or report.statuses:
        parts += ['<h2 class="part" id="data-quality">Data quality</h2>', _quality_table(report)]
    if quality is not None:
        parts += _quality_parts(quality)
    parts.append('<h2 class="part" id="features">Per feature</h2>')
    for result in report.columns:
        parts.append(_section(result, report.reference[result.feature], report.current[result.feature]))
    if report.prediction is not None:
        p = report.prediction
        for result in p.columns:
            parts.append(_section(result, p.reference[result.feature], p.current[result.feature], "p-"))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_quality(report: QualityReport, *, title: str) -> str:
    """A page with the live quality report alone."""
    lede = (
        f"{report.model}, version {', '.join(report.versions) or '-'}: {report.window.describe()}; "
        f"{report.labelled:,} of {report.overall.predictions:,} predictions labelled."
    )
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title><style>{CSS}{LIVE_CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f'<p class="lede">{escape(lede)}</p>',
            *_quality_parts(report),
            "</body></html>",
        ]
    )


def _lede(report: LiveDriftReport) -> str:
    versions = ", ".join(report.versions) or "-"
    refused = sum(n for s, n in report.statuses.items() if s != "200")
    extra = f"; {refused:,} refused or failed" if refused else ""
    return (
        f"{report.model}, version {versions}: {report.window.describe()}. {report.rows:,} predictions "
        f"answered{extra}; reference: {report.reference.rows:,} rows."
    )


def _card(label: str, value: str, detail: str, alert: bool) -> str:
    return (
        f'<div class="card {"alert" if alert else "good"}"><span class="big">{escape(value)}</span>'
        f"{escape(label)}<br><small>{escape(detail)}</small></div>"
    )


def _cards(report: LiveDriftReport, quality: QualityReport | None) -> str:
    drifted = report.drifted_columns
    cards = [
        _card(
            "features drifted",
            f"{len(drifted)} of {len(report.columns)}",
            ", ".join(drifted) or "none",
            bool(drifted),
        )
    ]
    if report.prediction is not None:
        moved = report.prediction_drifted
        cards.append(
            _card("prediction drift", "drifted" if moved else "stable", ", ".join(moved) or "-", bool(moved))
        )
    issues = report.quality_issues
    cards.append(
        _card(
            "data quality issues",
            str(len(issues)),
            ", ".join(sorted({f"{c.feature} ({c.check})" for c in issues})) or "none",
            bool(issues),
        )
    )
    if quality is not None:
        o = quality.overall
        shown = ", ".join(f"{m} {_fmt(o.metrics.get(m))}" for m in quality.metrics)
        cards.append(_card("labelled predictions", f"{o.labelled:,}", shown or "-", False))
    return f'<div class="cards">{"".join(cards)}</div>'


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"


def _quality_table(report: LiveDriftReport) -> str:
    rows = []
    for c in report.data_quality:
        rows.append(_check_row(c))
    head = (
        "<table><thead><tr><th>feature</th><th>check</th><th class='num'>window</th>"
        "<th class='num'>reference</th><th class='num'>threshold</th><th>what was seen</th>"
        "<th>verdict</th></tr></thead><tbody>"
    )
    statuses = ", ".join(f"{n:,} with status {s}" for s, n in sorted(report.statuses.items()))
    return head + "".join(rows) + f"</tbody></table><p class='notes'>Rows logged: {escape(statuses)}.</p>"


def _check_row(c: QualityCheck) -> str:
    state = "flagged" if c.flagged else "passed"
    badge = "drifted" if c.flagged else "stable"
    reference = "-" if c.reference is None else f"{c.reference:.2%}"
    return (
        f'<tr class="{state}"><td>{escape(c.feature)}</td><td>{escape(c.check.replace("_", " "))}</td>'
        f"<td class='num'>{c.value:.2%}</td><td class='num'>{reference}</td>"
        f"<td class='num'>{c.threshold:.2%}</td><td>{escape(c.detail)}</td>"
        f'<td><span class="badge {badge}">{state}</span></td></tr>'
    )


# ---------------------------------------------------------------------------------------------
# Live quality
# ---------------------------------------------------------------------------------------------


def _quality_parts(report: QualityReport) -> list[str]:
    head = (
        "<table><thead><tr><th>group</th><th></th><th class='num'>predictions</th>"
        "<th class='num'>labelled</th>"
        + "".join(f"<th class='num'>{escape(m)}</th>" for m in report.metrics)
        + "</tr></thead><tbody>"
    )
    body = []
    for r in report.rows:
        if r.group == "time":
            continue
        cells = "".join(f"<td class='num'>{_fmt(r.metrics.get(m))}</td>" for m in report.metrics)
        body.append(
            f'<tr class="{r.group}"><td>{escape(r.group)}</td><td>{escape(r.key)}</td>'
            f"<td class='num'>{r.predictions:,}</td><td class='num'>{r.labelled:,}</td>{cells}</tr>"
        )
    parts = [
        '<h2 class="part" id="live-quality">Live quality</h2>',
        f'<p class="lede">{escape(report.task.capitalize())} metrics of the {report.labelled:,} labelled '
        f"predictions (of {report.overall.predictions:,}), by the labels received so far.</p>",
        head + "".join(body) + "</tbody></table>",
        _notes(report.notes),
    ]
    timeline = report.group("time")
    for metric in report.metrics:
        parts.append(
            f'<section class="feature" id="q-{escape(metric)}"><h2>{escape(metric)} over time</h2>'
            f'<p class="meta">Per time bucket; the bars are the labelled predictions.</p>'
            f"{_timeline_svg(metric, timeline)}</section>"
        )
    return parts


def _timeline_svg(metric: str, rows: list[QualityRow]) -> str:
    if not rows:
        return _svg(metric, 40, ['<text x="8" y="24">no predictions in the window</text>'])
    values = [r.metrics.get(metric) for r in rows]
    known = [v for v in values if v is not None and not math.isnan(v)]
    top = max(known) if known else 1.0
    bottom = min(0.0, min(known)) if known else 0.0
    span = (top - bottom) or 1.0
    most = max(r.labelled for r in rows) or 1
    x0, y0, w, h = PAD, PAD / 2, WIDTH - 2 * PAD, CHART_HEIGHT - 1.5 * PAD
    step = w / len(rows)
    body = []
    for i, r in enumerate(rows):
        bar = h * 0.35 * r.labelled / most
        body.append(
            f'<rect x="{x0 + i * step + step * 0.15:.1f}" y="{y0 + h - bar:.1f}" width="{step * 0.7:.1f}" '
            f'height="{bar:.1f}" fill="#d0d5dd">'
            f"<title>{escape(r.key)}: {r.labelled:,} labelled</title></rect>"
        )
    points = []
    for i, v in enumerate(values):
        if v is None or math.isnan(v):
            if len(points) > 1:
                body.append(_polyline(points))
            points = []
            continue
        x = x0 + (i + 0.5) * step
        y = y0 + h - h * (v - bottom) / span
        points.append(f"{x:.1f},{y:.1f}")
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{CURRENT_OK}">'
            f"<title>{escape(rows[i].key)}: {metric} {_fmt(v)}</title></circle>"
        )
    if len(points) > 1:
        body.append(_polyline(points))
    body.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#98a2b3"/>')
    body.append(f'<text x="{x0}" y="{CHART_HEIGHT - 4}">{escape(rows[0].key)}</text>')
    body.append(f'<text x="{x0 + w}" y="{CHART_HEIGHT - 4}" text-anchor="end">{escape(rows[-1].key)}</text>')
    body.append(f'<text x="{x0}" y="{y0 + 10}">max {escape(_fmt(top))}</text>')
    return _svg(metric, CHART_HEIGHT, body).replace(
        f"Distribution of {escape(metric)}: reference and current", f"{escape(metric)} over time"
    )


def _polyline(points: list[str]) -> str:
    return f'<polyline points="{" ".join(points)}" fill="none" stroke="{CURRENT_OK}" stroke-width="2"/>'
