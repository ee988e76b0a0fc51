"""Rules for names users choose (experiments, runs, datasets, models)."""

from __future__ import annotations

import re

from shipway.core.errors import InvalidInput

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/ ]{0,255}$")


def check_name(name: object, what: str = "experiment") -> str:
    """Validate a user-chosen name and return it."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInput(
            f"{what.capitalize()} name {name!r} is not allowed: use 1-256 letters, digits, "
            "spaces or . _ - /, starting with a letter or digit."
        )
    return name
