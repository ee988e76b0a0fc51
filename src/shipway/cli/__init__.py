"""The `shipway` command: a thin shell over the library."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.text import Text

from shipway.cli import governance as gov
from shipway.cli import platform, quickstart, scoring
from shipway.cli.admin import db_app, doctor, server
from shipway.cli.alerts import alerts_app, slo_app
from shipway.cli.backup import backup, restore
from shipway.cli.init import init
from shipway.cli.monitor import feedback, monitor_app
from shipway.cli.output import err_console
from shipway.cli.registry import models_app
from shipway.cli.rollout import deploy, kpis, rollout_app
from shipway.cli.serving import serve
from shipway.cli.tracking import experiments_app, runs_app
from shipway.core.errors import ShipwayError

app = typer.Typer(
    name="shipway",
    help="Shipway: track experiments, register models, promote, serve and monitor them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        import shipway

        print(f"shipway {shipway.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Shipway: track experiments, register models, promote, serve and monitor them."""


app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.command("doctor")(doctor)
app.command("up")(platform.up)
app.command("server")(server)
app.command("quickstart")(quickstart.quickstart)
app.command("promote")(gov.promote)
app.command("approve")(gov.approve)
app.command("reject")(gov.reject)
app.add_typer(gov.requests_app, name="requests")
app.add_typer(gov.policy_app, name="policy")
app.add_typer(gov.audit_app, name="audit")
app.add_typer(gov.token_app, name="token")
app.add_typer(gov.users_app, name="users")
app.command("whoami")(gov.whoami)
app.command("init")(init)
app.command("serve")(serve)
app.command("deploy")(deploy)
app.add_typer(rollout_app, name="rollout")
app.command("kpis")(kpis)
app.command("score")(scoring.score)
app.add_typer(monitor_app, name="monitor")
app.command("feedback")(feedback)
app.add_typer(alerts_app, name="alerts")
app.add_typer(slo_app, name="slo")
app.command("backup")(backup)
app.command("restore")(restore)


def _release_arrow() -> None:
    """Free what still holds Arrow readers (a parquet file, a batch iterator) while Arrow is alive.

    Left to interpreter teardown, a parquet reader's native threads can outlive Arrow's memory
    pools and abort the process after its work is done ("terminate called without an active
    exception", exit -6; apache/arrow#34314), which a shell script sees as a failure.
    """
    if "pyarrow" in sys.modules:
        import gc

        gc.collect()


def main() -> None:
    """Entry point: runs the app and turns errors into a message and an exit code, no traceback."""
    try:
        _run()
    finally:
        _release_arrow()


def _run() -> None:
    try:
        app()
    except ShipwayError as exc:
        err_console.print(Text.assemble(("Error: ", "red"), exc.message))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly; the traceback is one variable away
        if os.environ.get("SHIPWAY_DEBUG"):
            raise
        err_console.print(
            Text.assemble(
                ("Unexpected error: ", "red"),
                f"{type(exc).__name__}: {exc}\n"
                "This is a bug in Shipway. Rerun with SHIPWAY_DEBUG=1 for the traceback and report it.",
            )
        )
        sys.exit(1)
