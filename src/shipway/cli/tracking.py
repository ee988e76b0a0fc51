"""`shipway experiments …` and `shipway runs …`."""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from shipway.cli.output import console, duration, number, print_json, status_text, when
from shipway.core.clock import iso
from shipway.store import get_store
from shipway.tracking import get_run, list_experiments, search_runs
from shipway.tracking.records import RunRecord, resolve_run_id


def _run_id(ref: str) -> str:
    """A full run id from what the user typed (a unique prefix works against a local store)."""
    from shipway.client.mode import remote_client

    if remote_client() is not None:
        ref = ref.strip().lower()
        if len(ref) != 32:
            from shipway.core.errors import InvalidInput

            raise InvalidInput(f"With SHIPWAY_URI set, give the full 32-character run id, not {ref!r}.")
        return ref
    return resolve_run_id(get_store(), ref)


experiments_app = typer.Typer(help="List experiments.", no_args_is_help=True)
runs_app = typer.Typer(help="List, show and compare runs.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@experiments_app.command("list")
def experiments_list(as_json: JsonFlag = False) -> None:
    """List experiments with their number of runs."""
    items = list_experiments()
    if as_json:
        print_json(
            [{"id": e.id, "name": e.name, "runs": e.runs, "created_at": iso(e.created_at)} for e in items]
        )
        return
    if not items:
        console.print('No experiments yet. Start one with shipway.start_run(experiment="name").')
        return
    table = Table("name", "runs", "created (UTC)", "id")
    for e in items:
        table.add_row(e.name, str(e.runs), when(e.created_at), e.id)
    console.print(table)


@runs_app.command("list")
def runs_list(
    experiment: Annotated[str, typer.Argument(help="Experiment name.")],
    filter: Annotated[str | None, typer.Option("--filter", "-f", help='e.g. "metrics.auc > 0.8"')] = None,
    order_by: Annotated[str | None, typer.Option("--order-by", "-o", help='e.g. "metrics.auc desc"')] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many runs.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List the runs of an experiment, newest first (RUNNING runs whose process died show STALE)."""
    page = search_runs(experiment, filter=filter, order_by=order_by, limit=limit)
    if as_json:
        print_json({"runs": [r.to_dict() for r in page], "next_page_token": page.next_page_token})
        return
    if not page:
        console.print(f"No runs in {experiment!r}" + (" match the filter." if filter else " yet."))
        return
    metric_keys = sorted({k for r in page for k in r.metrics})[:4]
    table = Table("id", "name", "status", "started (UTC)", "duration", *metric_keys)
    for r in page:
        table.add_row(
            r.id[:12],
            r.name,
            status_text(r.display_status),
            when(r.start_time),
            duration(r.duration_ms),
            *(number(r.metrics[k]) if k in r.metrics else "" for k in metric_keys),
        )
    console.print(table)
    if page.next_page_token:
        console.print(f"Showing the first {len(page)}; raise --limit to see more.", style="dim")
    console.print("Ids are shortened; `shipway runs show ID` takes any unique prefix.", style="dim")


def _kv_table(title: str, data: dict[str, object]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in data.items():
        table.add_row(k, "-" if v is None else str(v))
    return table


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id, or a unique prefix of it.")],
    as_json: JsonFlag = False,
) -> None:
    """Show a run: status, params, metrics, tags, lineage, datasets and artifacts."""
    r = get_run(_run_id(run_id))
    if as_json:
        print_json(r.to_dict())
        return
    status = r.display_status + (" (its process is gone)" if r.stale else "")
    console.print(
        _kv_table(
            f"Run {r.id}",
            {
                "experiment": r.experiment,
                "name": r.name,
                "status": status,
                "started (UTC)": when(r.start_time),
                "ended (UTC)": when(r.end_time),
                "duration": duration(r.duration_ms),
                "user": r.user,
                "host": r.host,
            },
        )
    )
    if r.error:
        console.print(Text.assemble(("error: ", "red"), r.error))
    if r.params:
        console.print(_kv_table("params", dict(sorted(r.params.items()))))
    if r.metrics:
        console.print(_kv_table("metrics (latest)", {k: number(v) for k, v in sorted(r.metrics.items())}))
    if r.tags:
        console.print(_kv_table("tags", dict(sorted(r.tags.items()))))
    lin = r.lineage
    git = lin.get("git") or {}
    console.print(
        _kv_table(
            "lineage",
            {
                "git commit": git.get("commit") or "not in a git repository",
                "git branch": git.get("branch"),
                "worktree": ("dirty" if git.get("dirty") else "clean") if git else None,
                "git remote": git.get("remote"),
                "python": (lin.get("python") or {}).get("version"),
                "environment": f"{(lin.get('environment') or {}).get('hash', '')[:16]}… "
                f"({(lin.get('environment') or {}).get('packages')} packages)",
                "platform": (lin.get("platform") or {}).get("platform"),
                "command": " ".join(lin.get("command") or []),
                "seeds": ", ".join(f"{k}={v}" for k, v in (lin.get("seeds") or {}).items()) or None,
            },
        )
    )
    if r.datasets:
        table = Table(
            "dataset",
            "version",
            "role",
            "target",
            "rows",
            "content hash",
            title="datasets",
            title_justify="left",
        )
        for d in r.datasets:
            table.add_row(
                d.name, str(d.version), d.role, d.target or "-", str(d.num_rows), d.content_hash[:16] + "…"
            )
        console.print(table)
    if r.artifacts:
        table = Table("path", "size", "sha256", title="artifacts", title_justify="left")
        for a in r.artifacts:
            table.add_row(a.path, str(a.size), a.digest[:16] + "…")
        console.print(table)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return number(value)
    return str(value)


def _same(values: list[object]) -> bool:
    norm = ["nan" if isinstance(v, float) and math.isnan(v) else v for v in values]
    return all(v == norm[0] for v in norm)


@runs_app.command("compare")
def runs_compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes).")],
    only_diff: Annotated[bool, typer.Option("--only-diff", help="Hide rows that are equal.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Compare runs side by side: params and latest metrics, differences marked with ≠."""
    if len(run_ids) < 2:
        from shipway.core.errors import InvalidInput

        raise InvalidInput("Give at least two run ids to compare.")
    records: list[RunRecord] = [get_run(_run_id(ref)) for ref in run_ids]
    rows = []
    for section, getter in (("params", lambda r: r.params), ("metrics", lambda r: r.metrics)):
        keys = sorted({k for r in records for k in getter(r)})
        for key in keys:
            values = [getter(r).get(key) for r in records]
            rows.append((f"{section}.{key}", values, not _same(values)))
    if as_json:
        print_json(
            {
                "runs": [r.id for r in records],
                "rows": [
                    {
                        "field": f,
                        "values": [None if isinstance(v, float) and math.isnan(v) else v for v in vals],
                        "differs": d,
                    }
                    for f, vals, d in rows
                ],
            }
        )
        return
    table = Table("", "field", *(f"{r.name}\n{r.id[:12]}…" for r in records))
    for field, values, differs in rows:
        if only_diff and not differs:
            continue
        style = "bold yellow" if differs else None
        table.add_row("≠" if differs else "", field, *(_cell(v) for v in values), style=style)
    console.print(table)
    n = sum(1 for _, _, d in rows if d)
    console.print(f"{n} of {len(rows)} fields differ.")
