"""`shipway deploy` and `shipway rollout status / promote / pause / resume / abort / history`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from shipway.cli.output import console, duration, print_json, when

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Name = Annotated[str, typer.Argument(help="Model name.")]
Env = Annotated[str, typer.Option("--env", help="Environment (the alias governance moves).")]

rollout_app = typer.Typer(
    help="Watch and steer rollouts: status, promote, pause, resume, abort, history.", no_args_is_help=True
)


def _steps(text: str) -> tuple[int, ...]:
    from shipway.core.errors import InvalidInput

    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInput(
            f"--steps takes percentages separated by commas, like 5,25,50,100; not {text!r}."
        ) from None


def deploy(
    name: Name,
    env: Env = "prod",
    strategy: Annotated[str, typer.Option(help="canary, ab, shadow or blue-green.")] = "canary",
    steps: Annotated[str, typer.Option(help="Canary: candidate traffic per step, percent.")] = "5,25,50,100",
    step_duration: Annotated[str, typer.Option(help="Least time per step: 90s, 10m, 1h.")] = "10m",
    min_requests: Annotated[int, typer.Option(help="Requests per arm before a step can be judged.")] = 500,
    split: Annotated[int, typer.Option(help="A/B: percent of traffic to the candidate.")] = 50,
    sticky_key: Annotated[
        str | None, typer.Option(help="A/B: request field or header that pins a caller to one arm.")
    ] = None,
    mirror: Annotated[int, typer.Option(help="Shadow: percent of requests copied to the candidate.")] = 100,
    failure_limit: Annotated[int, typer.Option(help="Failed analyses tolerated before rolling back.")] = 0,
    webhook: Annotated[
        list[str] | None, typer.Option(help="URL told of rollbacks and aborts (repeatable).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Roll ENV out to the version its alias names (set by `shipway promote`), progressively."""
    from shipway.governance.identity import parse_duration_ms
    from shipway.rollout.deployments import RolloutConfig
    from shipway.rollout.deployments import deploy as _deploy

    config = RolloutConfig(
        strategy=strategy,
        steps=_steps(steps),
        step_duration_ms=parse_duration_ms(step_duration),
        min_requests=min_requests,
        split=split,
        sticky_key=sticky_key,
        mirror=mirror,
        failure_limit=failure_limit,
        webhooks=tuple(webhook or ()),
    )
    d = _deploy(name, env, config=config)
    if as_json:
        print_json(d.to_dict())
        return
    if d.candidate_version is None:
        console.print(f"{name} in {env} now serves v{d.stable_version} (its first deployment).")
    else:
        console.print(
            f"Rolling {name} in {env} out from v{d.stable_version} to v{d.candidate_version} ({strategy}). "
            f"Watch it with `shipway rollout status {name} --env {env}`."
        )
    _print_arms(d.to_dict()["arms"])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _print_arms(arms: list[dict[str, Any]]) -> None:
    table = Table("arm", "version", "weight", "shadow", "requests", "errors", "p50 ms", "p95 ms", "p99 ms")
    for a in arms:
        table.add_row(
            a["role"],
            f"v{a['version']}",
            f"{a['weight']:g}%",
            f"{a['shadow']:g}%" if a.get("shadow") else "-",
            str(a.get("requests", "-")),
            _pct(a.get("error_rate")),
            _ms(a.get("p50_ms")),
            _ms(a.get("p95_ms")),
            _ms(a.get("p99_ms")),
        )
    console.print(table)


@rollout_app.command("status")
def status(name: Name, env: Env = "prod", as_json: JsonFlag = False) -> None:
    """Live weights, per-arm requests, error rate and latency, drift between arms, the verdict so far."""
    from shipway.rollout.deployments import rollout_status

    data = rollout_status(name, env)
    if as_json:
        print_json(data)
        return
    config = data.get("config") or {}
    if data["status"] == "idle":
        console.print(f"{name} in {env} serves v{data['stable_version']}; no rollout in progress.")
    else:
        steps = config.get("steps") or []
        where = f"step {data['step'] + 1} of {len(steps)}" if config.get("strategy") == "canary" else ""
        console.print(
            f"{name} in {env}: v{data['stable_version']} -> v{data['candidate_version']} "
            f"({config.get('strategy')}, {data['status']}{', ' + where if where else ''}, "
            f"step started {when(data['step_started_at'])}, failed analyses {data['failures']})"
        )
    _print_arms(data["arms"])
    verdict = data.get("verdict")
    if verdict:
        style = {"promote": "green", "rollback": "red"}.get(verdict["action"], "yellow")
        console.print(
            Text.assemble("Latest analysis: ", (verdict["action"], style), f" at {when(verdict['at'])}")
        )
        for check in verdict["checks"]:
            mark = {
                "pass": ("pass", "green"),
                "fail": ("FAIL", "red"),
                "inconclusive": ("wait", "yellow"),
            }.get(check["status"], ("no data", "yellow"))
            console.print(Text.assemble("  ", mark, f"  {check['metric']}: {check['summary']}"))


@rollout_app.command("promote")
def promote(name: Name, env: Env = "prod") -> None:
    """End the rollout now, with the candidate taking all traffic."""
    from shipway.rollout.deployments import promote_rollout

    d = promote_rollout(name, env)
    console.print(f"{name} in {env} now serves v{d.stable_version}.")


@rollout_app.command("abort")
def abort(
    name: Name,
    env: Env = "prod",
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")] = "aborted by hand",
) -> None:
    """End the rollout now and return all traffic to the stable version."""
    from shipway.rollout.deployments import abort_rollout

    d = abort_rollout(name, env, reason=reason)
    console.print(f"Aborted: {name} in {env} serves v{d.stable_version} again.")


@rollout_app.command("pause")
def pause(name: Name, env: Env = "prod") -> None:
    """Hold the traffic split where it is; the analysis keeps reporting."""
    from shipway.rollout.deployments import pause_rollout

    d = pause_rollout(name, env)
    console.print(
        f"Paused at {d.arms[-1].weight:g}% to v{d.candidate_version}; `shipway rollout resume {name}`."
    )


@rollout_app.command("resume")
def resume(name: Name, env: Env = "prod") -> None:
    """Carry on a paused rollout (the current step starts over)."""
    from shipway.rollout.deployments import pause_rollout

    pause_rollout(name, env, resume=True)
    console.print(f"Resumed the rollout of {name} in {env}.")


@rollout_app.command("history")
def history(name: Name, env: Env = "prod", as_json: JsonFlag = False) -> None:
    """The latest rollouts of a deployment and how each ended."""
    from shipway.rollout.deployments import history as _history

    rows = _history(name, env)
    if as_json:
        print_json(rows)
        return
    table = Table("started", "from", "to", "strategy", "by", "outcome", "took", "reasons")
    for r in rows:
        took = duration(r["ended_at"] - r["started_at"]) if r["ended_at"] else "-"
        table.add_row(
            when(r["started_at"]),
            f"v{r['from_version']}" if r["from_version"] else "-",
            f"v{r['to_version']}",
            r["strategy"],
            r["started_by"],
            r["outcome"] or "in progress",
            took,
            "; ".join(r["reasons"] or [])[:120],
        )
    console.print(table)


def kpis(
    env: Env = "prod",
    model: Annotated[str | None, typer.Option("--model", help="One model (default: all).")] = None,
    since: Annotated[str, typer.Option("--since", help="The window, ending now: 7d, 30d, 12h, 2w.")] = "30d",
    as_json: JsonFlag = False,
) -> None:
    """Delivery KPIs of an environment: deployments, lead time, change failure rate, time to restore.

    Read from the rollout record (docs/serving.md#delivery-kpis has the definitions): lead time runs
    from the start of the training run to the version taking all traffic; a change fails when its
    rollout is rolled back or aborted; time to restore is how long the failed version had traffic.
    """
    from shipway.rollout.kpis import delivery_kpis

    k = delivery_kpis(env, model=model, since=since)
    if as_json:
        print_json(k.to_dict())
        return

    def seconds(value: float | None) -> str:
        return "-" if value is None else duration(round(value * 1000))

    scope = f"{model} in {env}" if model else env
    table = Table("KPI", "value", title=f"Delivery KPIs of {scope}, last {since}")
    table.add_row("deployments", f"{k.deployments} ({k.deployments_per_day:.2f} a day)")
    table.add_row("lead time, median", seconds(k.lead_time_median_s))
    table.add_row("lead time, p90", seconds(k.lead_time_p90_s))
    rate = "-" if k.change_failure_rate is None else f"{k.change_failure_rate:.0%}"
    table.add_row("change failure rate", f"{rate} ({k.failed_changes} of {k.changes} changes)")
    table.add_row("time to restore, median", seconds(k.time_to_restore_median_s))
    table.add_row("rollouts in progress", str(k.in_progress))
    console.print(table)
