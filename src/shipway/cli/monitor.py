"""`shipway monitor drift / quality / arms` and `shipway feedback`: a thin shell over
shipway.monitoring's live_drift, live_quality, arm_drift and record_feedback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from shipway.cli.output import console, err_console, print_json

if TYPE_CHECKING:
    from shipway.monitoring import ColumnDrift, LiveDriftReport, QualityReport

monitor_app = typer.Typer(
    help="Watch deployed models from their prediction log: drift, data quality, live quality.",
    no_args_is_help=True,
)

Model = Annotated[
    str,
    typer.Argument(
        help="NAME@ALIAS (churn@prod) or NAME/VERSION (churn/3) for one version's predictions, NAME for "
        "every version's.",
        metavar="MODEL",
        show_default=False,
    ),
]
Until = Annotated[
    str | None,
    typer.Option("--until", help="End of the window, ISO 8601 in UTC (default: now).", show_default=False),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Report = Annotated[
    Path | None,
    typer.Option(
        "--report", help="Also write a self-contained HTML report with charts here.", show_default=False
    ),
]


def _clean(value: Any) -> Any:
    """JSON-ready data without NaN (not valid JSON): NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4g}"


def _drift_table(title: str, columns: list[ColumnDrift]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for name, justify in (
        ("feature", "left"),
        ("method", "left"),
        ("statistic", "right"),
        ("threshold", "right"),
        ("drifted", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in columns:
        statistic = _num(c.statistic) + (f" ± {_num(c.error_bound)}" if c.error_bound else "")
        if c.p_value is not None:
            statistic += f" (p={_num(c.p_value)})"
        verdict = Text("yes", style="red") if c.drifted else Text("no", style="green")
        if c.note:
            verdict = Text(c.note, style="yellow")
        table.add_row(c.feature, c.method, statistic, _num(c.threshold), verdict)
    return table


def _print_drift(report: LiveDriftReport) -> None:
    refused = sum(n for status, n in report.statuses.items() if status != "200")
    versions = ", ".join(report.versions) or "-"
    console.print(
        f"{report.model} (version {versions}), {report.window.describe()}: {report.rows:,} predictions"
        + (f", {refused:,} refused or failed" if refused else "")
    )
    console.print(f"Reference: {report.reference_source} ({report.reference.rows:,} rows)")
    console.print(_drift_table("Feature drift", report.columns))
    if report.prediction is not None:
        console.print(
            _drift_table(
                f"Prediction drift (against {report.prediction_baseline})", report.prediction.columns
            )
        )
    issues = report.quality_issues
    if issues:
        table = Table(title="Data quality issues", title_justify="left", title_style="bold")
        for name in ("feature", "check", "share", "what was seen"):
            table.add_column(name)
        for c in issues:
            table.add_row(c.feature, c.check, f"{c.value:.2%}", c.detail)
        console.print(table)
    elif report.data_quality:
        console.print(Text("Data quality: no issues.", style="green"))
    for note in report.notes:
        console.print(Text(note, style="yellow"))


@monitor_app.command("drift")
def drift(
    model: Model,
    window: Annotated[str, typer.Option("--window", "-w", help="How far back: 15m, 1h, 24h, 7d.")] = "1h",
    until: Until = None,
    report: Report = None,
    as_json: JsonFlag = False,
) -> None:
    """Drift of MODEL's logged inputs against its training reference, of its predictions against the
    window before, and data quality (missing values, out-of-range values, unseen categories, schema).

    The reference is the profile of the training dataset the version's run logged, built once and
    stored. Exits 3 when the window holds no predictions or the version has no reference.
    """
    from shipway.monitoring import live_drift, live_quality

    result = live_drift(model, window=window, until=until)
    if report is not None:
        quality = live_quality(model, window=window, until=until)
        result.to_html(report, quality=quality if quality.labelled else None)
    if as_json:
        print_json(_clean(result.to_dict()))
        return
    _print_drift(result)
    if report is not None:
        err_console.print(f"Wrote {report}")


def _print_quality(report: QualityReport, timeline: bool) -> None:
    versions = ", ".join(report.versions) or "-"
    console.print(
        f"{report.model} (version {versions}), {report.window.describe()}: {report.task}, "
        f"{report.labelled:,} of {report.overall.predictions:,} predictions labelled"
    )
    table = Table(show_header=True)
    for name in ("group", "", "predictions", "labelled", *report.metrics):
        table.add_column(name, justify="left" if name in ("group", "") else "right")
    for r in report.rows:
        if r.group == "time" and not timeline:
            continue
        table.add_row(
            r.group,
            r.key,
            f"{r.predictions:,}",
            f"{r.labelled:,}",
            *(_num(r.metrics.get(m)) for m in report.metrics),
        )
    console.print(table)
    for note in report.notes:
        console.print(Text(note, style="yellow"))


@monitor_app.command("quality")
def quality(
    model: Model,
    window: Annotated[str, typer.Option("--window", "-w", help="How far back: 15m, 1h, 24h, 7d.")] = "7d",
    until: Until = None,
    timeline: Annotated[
        bool, typer.Option("--timeline", help="Also show the metrics per time bucket.")
    ] = False,
    task: Annotated[
        str | None,
        typer.Option(
            help="classification or regression (default: from the signature and the labels).",
            show_default=False,
        ),
    ] = None,
    report: Report = None,
    as_json: JsonFlag = False,
) -> None:
    """Accuracy, F1 and AUC (classification) or RMSE and MAE (regression) of MODEL's predictions in the
    window, from the labels recorded for them so far, overall, per arm, per version and over time."""
    from shipway.monitoring import live_quality

    result = live_quality(model, window=window, until=until, task=task)
    if report is not None:
        result.to_html(report)
    if as_json:
        print_json(_clean(result.to_dict()))
        return
    _print_quality(result, timeline)
    if report is not None:
        err_console.print(f"Wrote {report}")


@monitor_app.command("arms")
def arms(
    model: Annotated[str, typer.Argument(help="Model name (its deployment's arms).", show_default=False)],
    window: Annotated[str, typer.Option("--window", "-w", help="How far back: 15m, 1h, 24h, 7d.")] = "1h",
    until: Until = None,
    report: Report = None,
    as_json: JsonFlag = False,
) -> None:
    """Drift of the candidate arm against the stable arm of MODEL's rollout, per feature and prediction."""
    from shipway.monitoring import arm_drift

    result = arm_drift(model, window, until=until)
    if report is not None:
        result.to_html(report, title=f"Arms of {model}: candidate against stable")
    if as_json:
        print_json(_clean(result.to_dict()))
        return
    console.print(
        f"{result.model}, {result.window.describe()}: {result.current_source} against "
        f"{result.reference_source}"
    )
    console.print(_drift_table("Feature drift", result.columns))
    if result.prediction is not None:
        console.print(_drift_table("Prediction drift", result.prediction.columns))
    if report is not None:
        err_console.print(f"Wrote {report}")


def feedback(
    model: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="A .parquet or .csv file with request_id, label and optionally row (default 0).",
            show_default=False,
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Record the true labels of MODEL's logged predictions; they join predictions by request id.

    request_id is the Shipway-Request-Id header of the answer (or the V2 request's id). Send a label
    again to correct it: the last one received counts.
    """
    from shipway.monitoring import record_feedback

    receipt = record_feedback(model, file)
    if as_json:
        print_json(receipt.to_dict())
        return
    console.print(f"Recorded {receipt.labels:,} label(s) for {receipt.model} ({receipt.key}).")


@monitor_app.command("prune")
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Delete the days that ended longer ago than this: 30d, 12w.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only this model's logs.", show_default=False)
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete old prediction logs and labels (whole days), and record it in the audit log. Admin only.

    Serving keeps every logged prediction and every label until they are pruned: run this from cron,
    or start `shipway up --keep-logs 30d`. Drift and quality windows, and the rollouts' label joins,
    cannot look further back than what is kept.
    """
    from shipway.monitoring import prune_logs

    report = prune_logs(older_than, model=model, dry_run=dry_run)
    if as_json:
        print_json(report.to_dict())
        return
    verb = "Would delete" if dry_run else "Deleted"
    if not report.total:
        console.print(f"Nothing to prune: no log of {model or 'any model'} is from before {report.cutoff}.")
        return
    what = ", ".join(f"{n:,} {kind} file(s)" for kind, n in report.files.items())
    console.print(f"{verb} {what} from before {report.cutoff}:")
    for name, days in report.days.items():
        span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
        console.print(f"  {name}: {len(days)} day(s), {span}")


@monitor_app.command("export-rules")
def export_rules(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of printing.", show_default=False),
    ] = None,
) -> None:
    """Prometheus recording and alerting rules for every SLO (the same burn-rate alerts) and every
    traffic alert rule, over the inference servers' /metrics: check them with `promtool check rules`."""
    from shipway.monitoring import export_rules as _export

    text = _export()
    if output is None:
        print(text, end="")
        return
    output.write_text(text)
    err_console.print(f"Wrote {output}")
