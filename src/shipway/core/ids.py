"""Identifiers: time-ordered, random, hex."""

from __future__ import annotations

import os
import re
import time

_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    """A 32-hex-digit id: 48 bits of milliseconds then 80 random bits, so ids sort by creation."""
    ms = time.time_ns() // 1_000_000
    return f"{ms:012x}{os.urandom(10).hex()}"


def looks_like_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id made by :func:`new_id`."""
    return bool(_ID_RE.match(value))
