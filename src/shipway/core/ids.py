"""Identifiers: 128 random bits as 32 hex digits, so any short prefix is likely unique."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """A new random id (UUID4 hex)."""
    return uuid.uuid4().hex
