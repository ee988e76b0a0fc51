"""Starter projects for `shipway init --template`: small projects that already follow the paved road.

Each template is a folder of this package (shipped in the wheel as package data). Creating a
project copies its files with ``{{project}}`` replaced by the project's name (which is also the
name its model is registered under) and ``{{version}}`` by Shipway's version. A file or folder
named ``dot-X`` becomes ``.X``, so no ``.gitignore`` or ``.github`` of a template ever acts on
Shipway's own checkout.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from shipway.core.errors import InvalidInput

__all__ = ["TEMPLATES", "Project", "check_project_name", "create_project"]

TEMPLATES: dict[str, str] = {
    "train": "train, track and register a model; a starter policy, a test and a GitHub Actions workflow",
    "batch": "score files with the version an alias names (shipway score), with a sample input",
    "service": "serve a model's deployments over HTTP (shipway deploy, shipway serve) and a client",
}
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SKIP = {"__pycache__", ".pytest_cache", ".ruff_cache", ".DS_Store"}


@dataclass(frozen=True)
class Project:
    """A project written from a template: where, under what name, and the files written."""

    directory: Path
    name: str
    template: str
    files: list[Path]


def check_project_name(name: str) -> str:
    """Return ``name`` if it can name a project and its model, else raise InvalidInput."""
    if not _NAME_RE.match(name):
        raise InvalidInput(
            f"Project name {name!r} is not allowed: use 1-64 letters, digits, '-' or '_', starting with "
            "a letter (it names the directory and the model the project registers). Pass --name to "
            "choose another."
        )
    return name


def _template(template: str) -> Traversable:
    if template not in TEMPLATES:
        close = difflib.get_close_matches(template, TEMPLATES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidInput(
            f"Unknown template {template!r}; the templates are {', '.join(sorted(TEMPLATES))}.{hint}"
        )
    return resources.files(__name__).joinpath(template)


def _files(folder: Traversable, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name in _SKIP or entry.name.endswith(".pyc"):
            continue
        name = "." + entry.name.removeprefix("dot-") if entry.name.startswith("dot-") else entry.name
        if entry.is_dir():
            found += _files(entry, (*prefix, name))
        else:
            found.append(((*prefix, name), entry))
    return found


def create_project(
    directory: str | Path, template: str, *, name: str | None = None, force: bool = False
) -> Project:
    """Write the ``template`` starter project into ``directory`` (created if needed).

    ``name`` defaults to the directory's name. A directory that exists and is not empty is
    refused unless ``force``, which writes the template's files over it and leaves others alone.
    """
    import shipway

    source = _template(template)
    target = Path(directory)
    name = check_project_name(name if name is not None else target.resolve().name)
    if target.exists() and not target.is_dir():
        raise InvalidInput(f"{target} is a file; choose a directory for the project.")
    if target.is_dir() and not force:
        present = sorted(p.name for p in target.iterdir())
        if present:
            shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
            raise InvalidInput(
                f"{target} is not empty (it has {shown}); choose a new directory, or pass --force to "
                "write the template's files over what is there."
            )
    values = {"{{project}}": name, "{{version}}": shipway.__version__}
    written = []
    for parts, entry in _files(source):
        text = entry.read_text(encoding="utf-8")
        for token, value in values.items():
            text = text.replace(token, value)
        path = target.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if path.suffix == ".sh":  # a wheel need not keep the executable bit
            path.chmod(0o755)
        written.append(path)
    return Project(directory=target, name=name, template=template, files=written)
