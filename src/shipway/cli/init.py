"""`shipway init`: a starter policy, or a starter project from a template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shipway.cli.output import console
from shipway.core.errors import InvalidInput


def init(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Where to write: a new or empty directory (default: the current one)."),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            help="A starter project: train, batch or service. Without it, only shipway.yaml is written.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The project's name, also its model's (default: the directory's name)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Write over an existing shipway.yaml, or into a directory that is not empty."),
    ] = False,
) -> None:
    """Write a commented starter policy (shipway.yaml), or with --template a starter project.

    `shipway init my-model --template train` creates my-model/ with a training script that tracks
    and registers its model, a policy its model passes, a test and a GitHub Actions workflow;
    `batch` a batch-scoring project and `service` a real-time service. Each one's tests pass as
    soon as it is written: cd into it, pip install -r requirements.txt, pytest.
    """
    if template is None:
        if name is not None:
            raise InvalidInput(
                "--name names a project made from a template; add --template train|batch|service."
            )
        _write_policy(directory or Path("."), force)
        return
    from shipway.templates import create_project

    project = create_project(directory or Path("."), template, name=name, force=force)
    where = project.directory
    console.print(f"Created the {template} project {project.name} in {where}/:")
    for path in sorted(p.relative_to(where).as_posix() for p in project.files):
        console.print(f"  {path}")
    enter = f"cd {where} && " if where != Path(".") else ""
    console.print(f"Next: {enter}pip install -r requirements.txt && pytest; README.md says what follows.")


def _write_policy(directory: Path, force: bool) -> None:
    from shipway.governance.policy import STARTER

    path = directory / "shipway.yaml"
    if path.exists() and not force:
        raise InvalidInput(f"{path} already exists; pass --force to overwrite it.")
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER)
    console.print(f"Wrote {path}. Edit it, then: shipway policy apply {path}")
