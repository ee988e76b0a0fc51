"""Webhook delivery: a JSON POST in the background, retried with backoff, never blocking the caller.

Rollout outcomes and alerts go out this way. A delivery is tried up to ``attempts`` times; a
connection error, a timeout, a 5xx, 408 or 429 answer is retried after ``backoff`` seconds, then
twice that, and so on (at most a minute apart); any other 4xx is final, since sending the same
body again would get the same answer. Whatever happens is logged, never raised: the audit log
holds the state change, and a webhook is a courtesy on top of it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shipway.core.errors import InvalidInput

__all__ = ["Delivery", "check_url", "drain", "post_json"]

log = logging.getLogger("shipway.webhooks")

MAX_DELAY_S = 60.0
_RETRY_STATUSES = frozenset({408, 429})
_in_flight: set[threading.Thread] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Delivery:
    """How one webhook delivery ended."""

    url: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL; else InvalidInput naming it."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise InvalidInput(
            f"Webhook {url!r} is not an http(s) URL; give one like https://hooks.slack.com/..."
        )
    return url


def _where(url: str) -> str:
    """The scheme and host of a webhook URL, to name it in logs: the rest of a Slack or Teams URL
    (its path, and any user or password) is its secret."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # not a number: leave it out
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/..."


def _post(url: str, body: bytes, timeout: float) -> tuple[int | None, str | None]:
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # http(s) only, checked
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, reset, timed out, unresolvable
        return None, str(getattr(exc, "reason", exc))


def _deliver(
    url: str,
    body: bytes,
    attempts: int,
    backoff: float,
    timeout: float,
    on_done: Callable[[Delivery], None] | None,
) -> None:
    status: int | None = None
    error: str | None = None
    attempt = 0
    for attempt in range(1, attempts + 1):
        status, error = _post(url, body, timeout)
        if status is not None and 200 <= status < 300:
            error = None
            break
        final = status is not None and 400 <= status < 500 and status not in _RETRY_STATUSES
        if final or attempt == attempts:
            break
        time.sleep(min(backoff * 2 ** (attempt - 1), MAX_DELAY_S))
    result = Delivery(url, error is None, attempt, status, error)
    if not result.ok:
        shown = _where(url)
        log.warning(
            "webhook %s failed after %d attempt(s): %s", shown, attempt, (error or "").replace(url, shown)
        )
    if on_done is not None:
        try:
            on_done(result)
        except Exception:
            log.exception("webhook callback failed")


def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    attempts: int = 5,
    backoff: float = 1.0,
    timeout: float = 5.0,
    on_done: Callable[[Delivery], None] | None = None,
) -> threading.Thread:
    """POST ``payload`` as JSON to ``url`` in a daemon thread, retrying with exponential backoff."""
    check_url(url)
    body = json.dumps(dict(payload), default=str).encode()

    def run() -> None:
        try:
            _deliver(url, body, max(attempts, 1), backoff, timeout, on_done)
        finally:
            with _lock:
                _in_flight.discard(thread)

    thread = threading.Thread(target=run, name="shipway-webhook", daemon=True)
    with _lock:
        _in_flight.add(thread)
    thread.start()
    return thread


def drain(timeout: float = 10.0) -> bool:
    """Wait for deliveries in flight (at shutdown, in tests); False if some were still going."""
    deadline = time.monotonic() + timeout
    while True:
        with _lock:
            pending = list(_in_flight)
        if not pending:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        pending[0].join(remaining)
