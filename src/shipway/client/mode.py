"""Embedded or remote: whether the SDK works on a local store or talks to a server.

Remote mode is on when ``SHIPWAY_URI`` names a server (``http://host:8080``); requests carry
``SHIPWAY_TOKEN``. Every public function that takes ``store=`` asks :func:`remote_client` first,
so the same call works both ways. This module imports nothing heavy: embedded mode never pays
for the HTTP client.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipway.client.http import Client

_clients: dict[tuple[str, str | None, int], Client] = {}
_lock = threading.Lock()


def remote_uri() -> str | None:
    """The server named by ``SHIPWAY_URI``, if any."""
    return os.environ.get("SHIPWAY_URI", "").strip() or None


def remote_client(store: Any = None) -> Client | None:
    """The client for ``SHIPWAY_URI``; None in embedded mode, when a store is passed explicitly,
    or while a server is handling a request (it acts on its own store, never on another server)."""
    if store is not None:
        return None
    uri = remote_uri()
    if uri is None:
        return None
    from shipway.core.actor import acting_for_request

    if acting_for_request():
        return None
    token = os.environ.get("SHIPWAY_TOKEN", "").strip() or None
    key = (uri, token, os.getpid())
    with _lock:
        client = _clients.get(key)
        if client is None:
            from shipway.client.http import Client

            client = _clients[key] = Client(uri, token)
        return client
