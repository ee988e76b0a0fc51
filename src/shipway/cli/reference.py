"""Render the command-line reference (docs/cli.md) from the commands' own --help text.

Regenerate with ``python -m shipway.cli.reference > docs/cli.md``; a test fails when the
file is out of date or a command is missing from it.
"""

from __future__ import annotations

from typing import Any

import typer.main


def _walk(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    found = [(path, command)]
    # Typer ships its own copy of click, so test for the shape of a group, not the class.
    if hasattr(command, "commands"):
        for name in sorted(command.commands):
            found += _walk(command.commands[name], [*path, name])
    return found


def commands() -> list[tuple[list[str], Any]]:
    """Every command and group, as (words after `shipway`, click command)."""
    from shipway.cli import app

    return _walk(typer.main.get_command(app), [])


def render() -> str:
    """The Markdown reference."""
    lines = [
        "# Command-line reference",
        "",
        "Generated from `--help` by `python -m shipway.cli.reference`; do not edit by hand.",
        "",
    ]
    for path, command in commands():
        name = " ".join(["shipway", *path])
        ctx = command.context_class(command, info_name=name, terminal_width=100, max_content_width=100)
        lines += [f"## `{name}`", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
