"""Shared ground with no I/O of its own: errors, ids, clock, settings."""

from shipway.core.clock import iso, now_ms
from shipway.core.config import Settings
from shipway.core.errors import (
    AlreadyExists,
    Conflict,
    GateFailed,
    IntegrityError,
    InvalidInput,
    MissingDependency,
    NotFound,
    PermissionDenied,
    ShipwayError,
    Unauthenticated,
    Unavailable,
)
from shipway.core.ids import new_id

__all__ = [
    "AlreadyExists",
    "Conflict",
    "GateFailed",
    "IntegrityError",
    "InvalidInput",
    "MissingDependency",
    "NotFound",
    "PermissionDenied",
    "Settings",
    "ShipwayError",
    "Unauthenticated",
    "Unavailable",
    "iso",
    "new_id",
    "now_ms",
]
