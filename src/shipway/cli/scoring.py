"""`shipway score`: batch scoring of a Parquet or CSV file with a registered version."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from shipway.cli.output import console, err_console


def score(
    model: Annotated[
        str,
        typer.Argument(
            help="The version to score with: NAME@ALIAS (churn@prod), NAME/VERSION (churn/3), NAME (newest) "
            "or a models:/ URI.",
            metavar="MODEL",
            show_default=False,
        ),
    ],
    input: Annotated[
        Path,
        typer.Option("--input", "-i", help="The rows to score: a .parquet or .csv file.", show_default=False),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Where the predictions go: a .parquet file, or a directory (ending in /) of part files.",
            show_default=False,
        ),
    ],
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            help="Comma-separated input columns to copy next to the predictions (default: all; '' for none).",
            show_default=False,
        ),
    ] = None,
    proba: Annotated[
        bool, typer.Option("--proba", help="Add a proba_<class> column per class (classifiers).")
    ] = False,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", help="Rows scored and written together; the unit of resuming.")
    ] = 100_000,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            help="Processes scoring chunks (default: one per CPU), started only if the job outlasts their "
            "start-up; 1 scores in this process.",
        ),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Discard the chunks an interrupted run left and start over."),
    ] = False,
    backend: Annotated[
        str, typer.Option("--backend", help="local (processes on this machine) or ray (needs shipway[ray]).")
    ] = "local",
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show a progress bar on stderr (default: when stderr is a terminal).",
            show_default=False,
        ),
    ] = None,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust", help="Allow python-function models, whose files hold code that runs when loaded."
        ),
    ] = False,
) -> None:
    """Score a Parquet or CSV file with a registered model version and write the predictions as Parquet.

    The input is read in chunks and scored in worker processes; each finished chunk is kept, so
    after an interruption the same command resumes where it stopped. The output has the input's
    columns (or --columns), then `prediction` (and proba_<class> with --proba).
    """
    from shipway.serving.batch import ScoringInterrupted
    from shipway.serving.batch import score as run

    keep = None if columns is None else [c.strip() for c in columns.split(",") if c.strip()]
    try:
        report = run(
            model,
            input,
            output,
            chunk_rows=chunk_rows,
            workers=workers,
            columns=keep,
            proba=proba,
            resume=not restart,
            backend=backend,
            progress=sys.stderr.isatty() if progress is None else progress,
            trust=trust,
        )
    except ScoringInterrupted as exc:
        err_console.print(exc.message)
        raise typer.Exit(130) from None
    if report.restarted:
        err_console.print(f"Not resumed: {report.restarted}, so every chunk was scored again.")
    console.print(report.summary())
