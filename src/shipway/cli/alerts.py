"""`shipway alerts`: rules and the alerts they raise; `shipway slo`: objectives and burn rates."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from shipway.cli.output import console, err_console, print_json, when

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Model = Annotated[str, typer.Argument(help="Model name.")]

alerts_app = typer.Typer(
    help="Alert rules on monitored metrics, and the alerts they raise: add, list, ack, silence.",
    no_args_is_help=True,
)
slo_app = typer.Typer(
    help="Service level objectives per model, error budgets and burn-rate alerts.", no_args_is_help=True
)

_STATE_STYLE = {"firing": "red", "pending": "yellow", "resolved": "green"}


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@alerts_app.command("add")
def add(
    model: Model,
    metric: Annotated[
        str,
        typer.Option(
            help="What to watch: error_rate, requests, latency_p50_ms, latency_p95_ms, latency_p99_ms, "
            "drift_share, drifted_columns."
        ),
    ],
    above: Annotated[float | None, typer.Option(help="Alert when the metric is higher than this.")] = None,
    below: Annotated[float | None, typer.Option(help="Alert when the metric is lower than this.")] = None,
    window: Annotated[str, typer.Option(help="Measure over the last: 5m, 1h, 1d.")] = "5m",
    for_: Annotated[
        str, typer.Option("--for", help="Fire once the condition held this long (0s: at once).")
    ] = "0s",
    name: Annotated[
        str | None, typer.Option(help="Rule name (default: MODEL-METRIC-above|below-THRESHOLD).")
    ] = None,
    severity: Annotated[str, typer.Option(help="page, ticket, warning or info.")] = "warning",
    env: Annotated[
        str, typer.Option("--env", help="Environment watched (traffic, predictions) and rolled back.")
    ] = "prod",
    webhook: Annotated[
        list[str] | None, typer.Option(help="URL told when it fires and resolves (repeatable; Slack works).")
    ] = None,
    action: Annotated[
        list[str] | None, typer.Option(help="What to do when it fires: rollback (repeatable).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Watch MODEL's METRIC: alert when it is --above (or --below) a threshold over --window, for --for."""
    from shipway.monitoring.alerts import add_rule

    rule = add_rule(
        model,
        metric,
        above=above,
        below=below,
        window=window,
        for_=for_,
        name=name,
        severity=severity,
        environment=env,
        webhooks=tuple(webhook or ()),
        actions=tuple(action or ()),
    )
    if as_json:
        print_json(rule.to_dict())
        return
    extra = f"; then {', '.join(rule.actions)}" if rule.actions else ""
    console.print(f"Rule {rule.name}: alert when {model}'s {rule.describe()}{extra}.")


@alerts_app.command("rules")
def rules(
    model: Annotated[str | None, typer.Argument(help="Only this model's rules.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Alert rules, with each SLO's burn-rate rules."""
    from shipway.monitoring.alerts import list_rules
    from shipway.monitoring.slo import PAGE, TICKET, list_slos

    found = [r.to_dict() for r in list_rules(model)]
    for slo in list_slos():
        if model is not None and slo.model != model:
            continue
        for objective in slo.objectives():
            for severity, conditions in (("page", PAGE), ("ticket", TICKET)):
                burns = " or ".join(f"{long}&{short} > {f:g}" for long, short, f in conditions)
                found.append(
                    {
                        "name": f"slo:{objective}:{severity}",
                        "model": slo.model,
                        "environment": slo.environment,
                        "description": f"{objective} burn rate {burns} ({slo.describe(objective)})",
                        "severity": severity,
                        "webhooks": list(slo.webhooks),
                        "actions": [],
                    }
                )
    if as_json:
        print_json(found)
        return
    if not found:
        console.print(
            "No alert rules. Add one with `shipway alerts add MODEL --metric error_rate --above 0.05`."
        )
        return
    table = Table("rule", "model", "condition", "severity", "notifies", "actions")
    for r in found:
        table.add_row(
            r["name"],
            r["model"],
            r["description"],
            r["severity"],
            str(len(r["webhooks"])) + " webhook(s)" if r["webhooks"] else "-",
            ", ".join(r["actions"]) or "-",
        )
    console.print(table)


@alerts_app.command("list")
def list_(
    model: Annotated[str | None, typer.Argument(help="Only this model's alerts.")] = None,
    state: Annotated[str | None, typer.Option(help="pending, firing or resolved.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Alerts, newest first: state and since when, value, acknowledged or silenced."""
    from shipway.monitoring.alerts import list_alerts, list_silences

    found = list_alerts(model=model, state=state, limit=limit)
    if as_json:
        print_json([a.to_dict() for a in found])
        return
    if not found:
        console.print("No alerts" + (f" for {model}." if model else "."))
    else:
        table = Table("id", "state", "since", "model", "rule", "value", "notes", "summary")
        for a in found:
            notes = []
            if a.acked_by:
                notes.append(f"acked by {a.acked_by}")
            if a.silenced:
                notes.append("silenced")
            table.add_row(
                a.id[:8],
                Text(a.state, style=_STATE_STYLE.get(a.state, "")),
                when(a.since),
                a.model,
                a.rule,
                _value(a.value),
                ", ".join(notes) or "-",
                a.summary,
            )
        console.print(table)
    for s in list_silences():
        if model is None or s.model == model:
            console.print(
                f"Silenced: {s.model} {s.rule or '(all rules)'} until {when(s.until)} by {s.created_by}"
            )


@alerts_app.command("ack")
def ack(alert_id: Annotated[str, typer.Argument(help="Alert id (or its first 8 characters).")]) -> None:
    """Acknowledge an alert: it keeps following its metric, without reminders."""
    from shipway.monitoring.alerts import ack_alert

    a = ack_alert(alert_id)
    console.print(f"Acknowledged {a.id[:8]} ({a.rule} on {a.model}, {a.state}) as {a.acked_by}.")


@alerts_app.command("silence")
def silence(
    model: Model,
    for_: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")],
    rule: Annotated[str | None, typer.Option(help="Only this rule (default: all of the model's).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why; kept in the audit log.")] = None,
) -> None:
    """Hold back notifications and actions of MODEL's alerts for a while (they still change state)."""
    from shipway.monitoring.alerts import silence as _silence

    s = _silence(model, for_, rule=rule, reason=reason)
    console.print(f"Silenced {model} {rule or '(all rules)'} until {when(s.until)}.")


@alerts_app.command("delete")
def delete(rule: Annotated[str, typer.Argument(help="Rule name.")]) -> None:
    """Delete an alert rule; its open alert resolves."""
    from shipway.monitoring.alerts import delete_rule

    delete_rule(rule)
    console.print(f"Deleted rule {rule}.")


@alerts_app.command("evaluate")
def evaluate(as_json: JsonFlag = False) -> None:
    """Evaluate every rule and SLO once now, as the monitor in `shipway up` does every interval."""
    from dataclasses import asdict

    from shipway.governance.webhooks import drain
    from shipway.monitoring.loop import Monitor

    monitor = Monitor()
    moved = monitor.evaluate_once()
    monitor.drain(30.0)
    drain(30.0)
    if as_json:
        print_json({"transitions": [asdict(t) for t in moved], "errors": monitor.errors})
        return
    for t in moved:
        console.print(f"{t.model} {t.rule}: {t.before or 'inactive'} -> {t.after or 'cleared'} ({t.summary})")
    for rule, message in monitor.errors.items():
        what = f"The SLO of {rule[4:]}" if rule.startswith("slo/") else f"Rule {rule}"
        err_console.print(f"{what} could not be evaluated: {message}")
    if not moved:
        console.print("No alert changed state.")


# -- SLOs -----------------------------------------------------------------------------------------


@slo_app.command("set")
def slo_set(
    model: Model,
    availability: Annotated[
        float | None, typer.Option(help="Percent of requests without a server error, like 99.9.")
    ] = None,
    latency_p95_ms: Annotated[
        float | None, typer.Option(help="95% of requests within this many ms (a histogram bound).")
    ] = None,
    latency_p99_ms: Annotated[
        float | None, typer.Option(help="99% of requests within this many ms (a histogram bound).")
    ] = None,
    webhook: Annotated[
        list[str] | None, typer.Option(help="URL told of burn-rate alerts (repeatable; Slack works).")
    ] = None,
    env: Annotated[str, typer.Option("--env", help="The environment whose traffic counts.")] = "prod",
    as_json: JsonFlag = False,
) -> None:
    """Set MODEL's SLO over 30 days of its --env traffic; its burn-rate alerts follow."""
    from shipway.core.errors import InvalidInput
    from shipway.monitoring.slo import set_slo
    from shipway.monitoring.traffic import BOUNDS_MS

    if latency_p95_ms is not None and latency_p99_ms is not None:
        raise InvalidInput("Give one latency objective: --latency-p95-ms or --latency-p99-ms.")
    asked, percentile = (latency_p99_ms, 99.0) if latency_p99_ms is not None else (latency_p95_ms, 95.0)
    slo = set_slo(
        model,
        availability=availability,
        latency_ms=asked,
        latency_percentile=percentile,
        webhooks=tuple(webhook or ()),
        environment=env,
    )
    if as_json:
        print_json(slo.to_dict())
        return
    if asked is not None and slo.latency_ms != asked:
        bounds = ", ".join(f"{b:g}" for b in BOUNDS_MS)
        err_console.print(
            f"Note: {asked:g} ms is not a bound of the latency histogram ({bounds} ms); "
            f"the SLO uses {slo.latency_ms:g} ms, the nearest."
        )
    objectives = " and ".join(slo.describe(o) for o in slo.objectives())
    console.print(f"SLO for {model} in {slo.environment}: {objectives}, over 30 days.")


@slo_app.command("show")
def slo_show(model: Model, as_json: JsonFlag = False) -> None:
    """MODEL's objectives, the error budget left over 30 days, and the burn rate of each window."""
    from shipway.monitoring.slo import BURN_WINDOWS, slo_status

    data = slo_status(model)
    if as_json:
        print_json(data)
        return
    table = Table("objective", "requests (30d)", "budget left", *[f"burn {w}" for w in BURN_WINDOWS], "alert")
    for o in data["objectives"]:
        left = o["budget_left"]
        budget = "no data" if left is None else f"{100 * left:.1f}%" if left >= 0 else "none (overspent)"
        rates = [_value(o["burn_rates"][w]) for w in BURN_WINDOWS]
        alert = "PAGE" if o["page"] else "ticket" if o["ticket"] else "-"
        style = "red" if o["page"] else "yellow" if o["ticket"] else ""
        table.add_row(o["description"], str(o["requests_30d"]), budget, *rates, Text(alert, style=style))
    console.print(
        f"SLO for {model} in {data['environment']} "
        f"(set by {data['updated_by']} at {when(data['updated_at'])}):"
    )
    console.print(table)
    console.print(
        "Burn rate: the bad share of a window divided by the error budget (1 spends it in exactly "
        "30 days). Page: 1h and 5m above 14.4, or 6h and 30m above 6; ticket: 3d and 6h above 1. "
        "Windows end now, counted by the minute."
    )


@slo_app.command("delete")
def slo_delete(model: Model) -> None:
    """Remove MODEL's SLO and its burn-rate alerts."""
    from shipway.monitoring.slo import delete_slo

    delete_slo(model)
    console.print(f"Deleted the SLO of {model}.")
