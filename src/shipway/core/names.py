"""Rules for names users choose (experiments, runs, datasets, models)."""

from __future__ import annotations

import re

from shipway.core.errors import InvalidInput

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._\-/ ]{0,254}[A-Za-z0-9._\-/])?$")
# Model names appear in URIs (models:/NAME/3, models:/NAME@alias) and URL paths: no '/' or spaces.
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


def check_name(name: object, what: str = "experiment") -> str:
    """Validate a user-chosen name and return it."""
    if what == "model":
        if not isinstance(name, str) or not _MODEL_RE.match(name):
            raise InvalidInput(
                f"Model name {name!r} is not allowed: use 1-128 letters, digits or . _ -, starting with "
                "a letter or digit (it becomes part of models:/NAME URIs)."
            )
        return name
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInput(
            f"{what.capitalize()} name {name!r} is not allowed: use 1-256 letters, digits, "
            "spaces or . _ - /, starting with a letter or digit and not ending with a space."
        )
    return name
