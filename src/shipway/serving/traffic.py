"""Per-minute traffic counters: what each version answered, saved for alerts and SLOs.

A :class:`TrafficRecorder` is an app listener. Each request a version handled is counted in its
(model, version, minute) of the environment the recorder counts for: one request, an error when
it failed with a 5xx (the model raised or its queue was full; a 4xx is the client's mistake and
counts as an answered request, as on ``/metrics``), and its latency in the buckets of the
``/metrics`` histogram. Shadow copies are not counted: nobody waited for their answer. Every
``interval`` seconds, and at shutdown, the minutes that changed are saved in one transaction (one
per environment) under this worker's name; each saved row is cumulative for its minute, so
saving twice never counts twice, and workers never write the same row. A minute is dropped from
memory once saved and over.

The environment is what alert rules and SLOs select on (a rule of ``churn`` in prod reads only
prod's counts): a server of an environment's deployments (``shipway serve --env staging``) counts
every endpoint in that environment; a server of named versions counts each target in its alias
(``churn@prod`` in prod) and a target without one (``churn/3``, ``churn``) in ``""``, no
environment, which rules and SLOs (each made for an environment) do not read
(:func:`target_environments`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from shipway.core.clock import now_ms
from shipway.monitoring.traffic import MINUTE_MS, Counts, read_counts, record_traffic
from shipway.registry import parse_model_uri
from shipway.serving.app import PredictionEvent
from shipway.serving.follow import Target
from shipway.serving.windows import PeriodicSaver, default_worker
from shipway.store import Store

log = logging.getLogger("shipway.serving")

NO_ENVIRONMENT = ""  # what a target that names no alias counts in


def target_environments(targets: Iterable[Target]) -> dict[str, str]:
    """The environment each named target's endpoint counts for: the alias it follows
    (``churn@prod``: prod), else :data:`NO_ENVIRONMENT` (``churn/3``, ``churn``)."""
    return {t.endpoint: parse_model_uri(t.uri)[2] or NO_ENVIRONMENT for t in targets}


class TrafficRecorder(PeriodicSaver):
    """Counts requests per (model, version, minute) and saves them to the store in the background.

    ``environment`` is the environment every endpoint counts for, or a mapping from endpoint to
    its environment (an endpoint it does not name counts in :data:`NO_ENVIRONMENT`).
    """

    thread_name = "shipway-traffic"

    def __init__(
        self,
        store: Store,
        *,
        environment: str | Mapping[str, str],
        worker: str | None = None,
        interval: float = 5.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.environment = environment if isinstance(environment, str) else dict(environment)
        self.worker = worker or default_worker()
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], Counts] = {}
        self._dirty: set[tuple[str, str, int]] = set()
        # Minutes whose stored row (if any) is already in the counts above.
        self._known: set[tuple[str, str, int]] = set()
        super().__init__()

    # -- counting: on the event loop, a few microseconds -------------------------------------

    def __call__(self, event: PredictionEvent) -> None:
        if event.mirrored:
            return
        ms = self.clock()
        key = (event.endpoint, event.version, ms - ms % MINUTE_MS)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = Counts()
            counts.record(event.seconds, error=event.status >= 500)
            self._dirty.add(key)

    def counts(self, model: str, version: str, minute: int) -> Counts:
        """A copy of this worker's counts for one minute (what the next save writes)."""
        with self._lock:
            found = self._counts.get((model, version, minute))
            return found.copy() if found is not None else Counts()

    def environment_of(self, endpoint: str) -> str:
        """The environment ``endpoint``'s requests count for."""
        if isinstance(self.environment, str):
            return self.environment
        return self.environment.get(endpoint, NO_ENVIRONMENT)

    # -- saving: on the recorder's thread ------------------------------------------------------

    def flush(self) -> int:
        """Save every minute that changed since the last save; how many were saved."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        if not dirty:
            self._forget()
            return 0
        try:
            for key in dirty - self._known:
                # A worker restarted under the name it had (one given explicitly; a default name is
                # new in every process) carries on from what it saved of this minute, instead of
                # overwriting it with a smaller count.
                before = read_counts(self.store, *key, self.worker, environment=self.environment_of(key[0]))
                if before is not None:
                    with self._lock:
                        self._counts[key] = self._counts[key].merge(before)
                self._known.add(key)  # merged once, even if the save below fails
            rows: dict[str, dict[tuple[str, str, int], Counts]] = {}
            with self._lock:
                for key in dirty:
                    rows.setdefault(self.environment_of(key[0]), {})[key] = self._counts[key].copy()
            for environment, saved in rows.items():  # one environment, unless targets name several
                record_traffic(self.store, self.worker, saved, environment=environment)
        except Exception:
            log.exception("could not save the traffic counters of %d minute(s)", len(dirty))
            with self._lock:
                self._dirty |= dirty
            return 0
        self._forget()
        return len(dirty)

    def _forget(self) -> None:
        """Drop minutes that are over and saved (a late request for one is still counted: its
        minute comes back, carrying on from what was saved)."""
        current = self.clock()
        current -= current % MINUTE_MS
        with self._lock:
            done = [k for k in self._counts if k[2] < current - MINUTE_MS and k not in self._dirty]
            for key in done:
                del self._counts[key]
                self._known.discard(key)
