"""Serving named versions and following their aliases: ``churn@prod`` answers with whichever
version holds ``prod`` now, ``churn`` with the newest version.

A :class:`TargetSync` loads each target once at start (the endpoint answers 503 until it is
warm), then every ``interval`` seconds resolves each target that can move (an alias, or the
newest version; ``churn/3`` never moves) with one small read. When a target names another
version, that version is loaded and warmed in this thread while the old one keeps answering,
and then the endpoint switches in one swap: no request sees a cold version or a 503. A version
that fails to load is reported once and retried after ``retry_after`` seconds; until then the
endpoint keeps the version it had.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shipway.core.errors import ShipwayError
from shipway.registry import parse_model_uri, resolve
from shipway.serving.app import ServingApp
from shipway.serving.host import ModelHost
from shipway.serving.routing import Arm
from shipway.store import Store

log = logging.getLogger("shipway.serving")


@dataclass(frozen=True)
class Target:
    """One endpoint to serve and the model URI whose version answers it."""

    endpoint: str
    uri: str

    @property
    def moves(self) -> bool:
        """Whether the version it names can change: an alias or the newest version."""
        _, version, _ = parse_model_uri(self.uri)
        return version is None


class TargetSync:
    """Keeps each of ``targets`` served by the version it names now."""

    def __init__(
        self,
        app: ServingApp,
        targets: Sequence[Target],
        *,
        store: Store,
        trust: bool = False,
        interval: float = 1.0,
        retry_after: float = 30.0,
        on_ready: Callable[[ModelHost], None] | None = None,
        on_error: Callable[[str, str, Exception], None] | None = None,
    ) -> None:
        self.app = app
        self.targets = list(targets)
        self.store = store
        self.trust = trust
        self.interval = interval
        self.retry_after = retry_after
        self.on_ready = on_ready
        self.on_error = on_error
        self._serving: dict[str, int] = {}  # endpoint -> version number it answers with
        self._failed: dict[tuple[str, int], float] = {}  # (endpoint, version) -> when it failed
        self._unresolved: set[str] = set()  # endpoints whose target names no version now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded = threading.Event()  # set once every target had its first try

    def first_load(self) -> None:
        """Load every target, marking each endpoint 503 until its version is warm."""
        for target in self.targets:
            self.app.router.mark_unready(target.endpoint, f"{target.uri} is loading.")
        for target in self.targets:
            try:
                version = resolve(target.uri, store=self.store)
                host = self.app.deploy(target.endpoint, version.uri, trust=self.trust)
            except Exception as exc:  # reported; the endpoint answers 503 with why
                why = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                self.app.router.mark_unready(target.endpoint, f"{target.uri} could not be loaded: {why}")
                self._report(target.endpoint, target.uri, exc)
                continue
            self._serving[target.endpoint] = version.version
            if self.on_ready is not None:
                self.on_ready(host)
        self.loaded.set()

    def follow(self) -> list[str]:
        """Switch every target whose alias moved to the version it names now; the endpoints switched."""
        switched = []
        for target in self.targets:
            if not target.moves and target.endpoint in self._serving:
                continue  # pinned, and serving: it never moves (one that failed to load is retried)
            try:
                version = resolve(target.uri, store=self.store)
            except ShipwayError as exc:  # the alias was removed, say: keep answering, say so once
                if target.endpoint not in self._unresolved:
                    self._unresolved.add(target.endpoint)
                    self._report(target.endpoint, target.uri, exc)
                continue
            self._unresolved.discard(target.endpoint)
            current = self._serving.get(target.endpoint)
            if version.version == current:
                continue
            failed_at = self._failed.get((target.endpoint, version.version))
            if failed_at is not None and time.monotonic() - failed_at < self.retry_after:
                continue
            try:
                host = self.app.load(target.endpoint, version.uri, trust=self.trust)
            except Exception as exc:  # the endpoint keeps the version it had
                self._failed[(target.endpoint, version.version)] = time.monotonic()
                self._report(target.endpoint, version.uri, exc)
                continue
            self.app.route(target.endpoint, Arm(host))  # one swap; the old host is retired
            self._serving[target.endpoint] = version.version
            self._failed.pop((target.endpoint, version.version), None)
            switched.append(target.endpoint)
            log.info("%s now answers with version %s (%s)", target.endpoint, version.version, target.uri)
            if self.on_ready is not None:
                self.on_ready(host)
        return switched

    def _report(self, endpoint: str, uri: str, exc: Exception) -> None:
        if self.on_error is not None:
            self.on_error(endpoint, uri, exc)
        else:
            log.error("could not serve %s as %s: %s", uri, endpoint, exc)

    def run(self) -> None:
        """Load, then follow every ``interval`` seconds until :meth:`stop` (failures are retried)."""
        self.first_load()
        while not self._stop.wait(self.interval):
            try:
                self.follow()
            except Exception:
                log.exception("could not resolve the served models; retrying")

    def start(self) -> TargetSync:
        """Run in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="shipway-target-sync", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop following (after the load in progress, if any)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
