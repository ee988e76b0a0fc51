"""The rollout controller's loop: :func:`~shipway.rollout.deployments.tick` every few seconds.

Everything the controller knows lives in the store (the deployment's step and failures, the
windows serving workers saved), so the loop keeps no state: it can run in the serving process
(``shipway serve`` starts one), in the control-plane server, or alone (``Controller().run()``),
and a restarted one carries on where the last left off. Two controllers on one store do not act
twice on a rollout: each change is conditional on the generation the controller read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shipway.core.errors import InvalidInput
from shipway.rollout.deployments import Event, tick
from shipway.store import Store, get_store

log = logging.getLogger("shipway.rollout")

DEFAULT_INTERVAL_S = 5.0


class Controller:
    """Ticks every ``interval`` seconds (for one environment, or all) until :meth:`stop`."""

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        environment: str | None = None,
        store: Store | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if not interval > 0:
            raise InvalidInput(f"The controller's interval must be positive, not {interval} s.")
        self.interval = interval
        self.environment = environment
        self.store = store
        self.on_event = on_event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[Event]:
        """Analyse and act once; a failure (the store unreachable, say) is logged, not raised."""
        try:
            events = tick(environment=self.environment, store=self.store or get_store())
        except Exception:
            log.exception("rollout controller tick failed; retrying in %s s", self.interval)
            return []
        for event in events:
            log.info("rollout %s in %s: %s (%s)", event.model, event.environment, event.action, event.reasons)
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("rollout event callback failed")
        return events

    def run(self) -> None:
        """Tick until :meth:`stop` is called (blocking: the body of the thread, or of a process)."""
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    def start(self) -> Controller:
        """Run in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="shipway-rollout-controller", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop ticking (after the tick in progress, if any)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
