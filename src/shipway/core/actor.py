"""Who is acting: the local OS user in embedded mode, or the principal a server authenticated.

Every state change names its actor in the audit log. The server sets the actor for the span of
one request with :func:`acting_as`; in embedded mode the actor is whoever runs the process,
unless ``SHIPWAY_TOKEN`` names another identity (see :mod:`shipway.governance.identity`).
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache

# Roles, weakest first. A role grants everything the roles before it grant.
ROLES = ("viewer", "contributor", "approver", "admin")


def role_rank(role: str) -> int:
    """The position of ``role`` in :data:`ROLES` (higher grants more)."""
    return ROLES.index(role)


@dataclass(frozen=True)
class Actor:
    """An identity and what it may do.

    ``role`` is the global role; ``model_roles`` raises it for named models. ``ceiling`` is the
    most a token allows whatever the principal's roles, and ``models`` (when set) the only models
    the token may touch.
    """

    name: str
    role: str
    kind: str = "user"  # "user", "service" or "local" (the embedded OS user)
    principal_id: str | None = None
    token_id: str | None = None
    model_roles: dict[str, str] = field(default_factory=dict)
    ceiling: str | None = None
    models: tuple[str, ...] | None = None

    def role_for(self, model: str | None = None) -> str | None:
        """The effective role on ``model`` (or globally), or None if the token excludes it."""
        if model is not None and self.models is not None and model not in self.models:
            return None
        best = self.role
        if model is not None and model in self.model_roles:
            best = max(best, self.model_roles[model], key=role_rank)
        if self.ceiling is not None and role_rank(best) > role_rank(self.ceiling):
            best = self.ceiling
        return best

    def can(self, role: str, model: str | None = None) -> bool:
        """Whether this actor holds at least ``role`` (on ``model`` when given)."""
        held = self.role_for(model)
        return held is not None and role_rank(held) >= role_rank(role)


@lru_cache(maxsize=1)
def os_user() -> str:
    """The OS user running this process."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def local_actor() -> Actor:
    """The embedded-mode actor: the OS user, who owns the store and so holds every role."""
    return Actor(name=os_user(), role="admin", kind="local")


_current: ContextVar[Actor | None] = ContextVar("shipway_actor", default=None)


def current_actor() -> Actor:
    """The actor for the code running now.

    Inside :func:`acting_as`, that actor; in remote mode (``SHIPWAY_URI``), the identity the
    server says the token names; otherwise, when ``SHIPWAY_TOKEN`` is set, the identity
    the token names in the local store (so one machine can act as two people, as four-eyes
    approval needs); otherwise the OS user.
    """
    actor = _current.get()
    if actor is not None:
        return actor
    from shipway.client.mode import remote_client

    client = remote_client()
    if client is not None:
        return client.actor()  # who the server says the token is (the server still checks every call)
    token = os.environ.get("SHIPWAY_TOKEN")
    if token:
        # Governance sits above core; it is imported only when a token asks for it.
        from shipway.governance.identity import actor_for_local_token

        return actor_for_local_token(token)
    return local_actor()


def acting_for_request() -> bool:
    """Whether code runs inside :func:`acting_as`, as a server handling a request does."""
    return _current.get() is not None


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Run a block as ``actor`` (the server wraps each request in this)."""
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)
