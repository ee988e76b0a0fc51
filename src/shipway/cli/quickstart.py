"""`shipway quickstart`: the paved road end to end on a bundled example."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from shipway.cli.output import console


def quickstart(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the quickstart keeps its own store.")
    ] = Path("shipway-quickstart"),
    force: Annotated[
        bool, typer.Option("--force", help="Delete an earlier quickstart's --dir and start again.")
    ] = False,
) -> None:
    """Run the whole loop on a bundled example, narrating each step: track a training run, register
    and promote it through gates and a second person's approval, serve it, roll out a worse
    candidate that the controller rolls back, watch drift, and check the audit chain.

    Runs offline in a few minutes in a store of its own (--dir); afterwards `shipway up` on that
    store shows all of it through the API.
    """
    from shipway.quickstart import run

    console.print(
        f"Shipway quickstart: a store of its own in {directory}/ (scikit-learn's breast cancer data)"
    )

    def show(line: str, heading: bool) -> None:
        console.print(Text(line, style="bold" if heading else ""))

    result = run(directory, force=force, print_=show)
    home = result.home
    console.print()
    console.print(Text("Where to look", style="bold"))
    console.print(f"   the store:        SHIPWAY_HOME={home}")
    console.print(f"   the platform:     SHIPWAY_HOME={home} shipway up   (API http://127.0.0.1:5050/docs)")
    console.print(f"   the audit chain:  SHIPWAY_HOME={home} shipway audit verify")
    console.print(f"   the rollouts:     SHIPWAY_HOME={home} shipway rollout history tumor-classifier")
    console.print(f"   delivery KPIs:    SHIPWAY_HOME={home} shipway kpis")
    if result.report is not None:
        console.print(f"   the drift report: {result.report}")
