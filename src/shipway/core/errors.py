"""The one error tree every Shipway capability raises from.

    ShipwayError
    ├── NotFound            an experiment, run, dataset or artifact that does not exist
    ├── AlreadyExists       a name or key that is already taken
    ├── InvalidInput        a malformed value, filter, URI or file
    ├── Conflict            a valid request that clashes with the current state
    ├── PermissionDenied    an identity that may not do this
    ├── Unauthenticated     no identity, or one that could not be verified
    ├── GateFailed          a promotion gate that did not pass
    ├── IntegrityError      stored bytes that do not match their recorded digest
    ├── MissingDependency   an optional extra that is not installed
    └── Unavailable         a store or server that cannot be reached right now

Each class carries a stable ``code`` (for the JSON error envelope), an HTTP status and a
CLI exit code, so callers catch a family by type instead of comparing strings.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "Conflict",
    "GateFailed",
    "IntegrityError",
    "InvalidInput",
    "MissingDependency",
    "NotFound",
    "PermissionDenied",
    "ShipwayError",
    "Unauthenticated",
    "Unavailable",
]


class ShipwayError(Exception):
    """Base of every error Shipway raises on purpose; the message says what to do next."""

    code = "internal"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error envelope body: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class NotFound(ShipwayError):
    """Something named in the request does not exist."""

    code = "not_found"
    http_status = 404
    exit_code = 3


class AlreadyExists(ShipwayError):
    """A name or key that must be unique is taken."""

    code = "already_exists"
    http_status = 409
    exit_code = 4


class InvalidInput(ShipwayError):
    """A value, filter, URI or file is malformed."""

    code = "invalid_input"
    http_status = 400
    exit_code = 2


class Conflict(ShipwayError):
    """The request is valid but clashes with the current state."""

    code = "conflict"
    http_status = 409
    exit_code = 5


class PermissionDenied(ShipwayError):
    """The caller is known but may not do this."""

    code = "permission_denied"
    http_status = 403
    exit_code = 6


class Unauthenticated(ShipwayError):
    """The caller did not present a valid identity."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 6


class GateFailed(ShipwayError):
    """A promotion gate did not pass."""

    code = "gate_failed"
    http_status = 422
    exit_code = 7


class IntegrityError(ShipwayError):
    """Stored bytes do not match the digest recorded for them."""

    code = "integrity_error"
    http_status = 409
    exit_code = 8


class MissingDependency(ShipwayError):
    """An optional extra is needed for this and is not installed."""

    code = "missing_dependency"
    http_status = 501
    exit_code = 9

    @classmethod
    def for_extra(cls, extra: str, module: str, purpose: str) -> MissingDependency:
        """Build the error that names the extra to install."""
        return cls(
            f"{purpose} needs the '{module}' package, which is not installed. "
            f'Install it with: pip install "shipway[{extra}]"'
        )


class Unavailable(ShipwayError):
    """A store or server cannot be reached or is not ready."""

    code = "unavailable"
    http_status = 503
    exit_code = 10
