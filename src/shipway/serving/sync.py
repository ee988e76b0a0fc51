"""Serving what the store says: every deployment of one environment, following its changes.

A :class:`DeploymentSync` reads each deployment's ``generation`` every ``interval`` seconds (one
small query) and, for each one that changed, reads the deployment and makes the app route as
:func:`~shipway.rollout.routing` asks: weights, shadow copies, the sticky key of its rollout, and
the rollout step each request is counted in. A version an arm needs is loaded and warmed *before*
the table that routes to it is published, so a change never sends a request to a cold version;
hosts no table needs any more are retired. Every worker does the same from the same store, so
all workers agree without talking to each other.

A version that fails to load is retried after ``retry_after`` seconds. Until then a candidate
that does not load gets no traffic in this worker (stable answers everything, so the rollout
holds for want of candidate traffic), and an endpoint whose stable version does not load answers
503 with the reason (or keeps the routing it had), rather than send stable's share to a candidate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shipway.rollout import Deployment, deployment_generations, get_deployment, routing
from shipway.serving.app import ServingApp
from shipway.serving.host import ModelHost
from shipway.serving.routing import Arm, Endpoint, RolloutRef
from shipway.store import Store

log = logging.getLogger("shipway.serving")

ACTIVE = ("progressing", "paused")


class DeploymentSync:
    """Keeps ``app`` routing every deployment of ``environment`` as the store describes it."""

    def __init__(
        self,
        app: ServingApp,
        environment: str = "prod",
        *,
        store: Store,
        trust: bool = False,
        interval: float = 1.0,
        retry_after: float = 30.0,
        on_change: Callable[[Deployment, Endpoint], None] | None = None,
        on_error: Callable[[str, str, Exception], None] | None = None,
    ) -> None:
        self.app = app
        self.environment = environment
        self.store = store
        self.trust = trust
        self.interval = interval
        self.retry_after = retry_after
        self.on_change = on_change
        self.on_error = on_error
        self._applied: dict[str, int] = {}  # model -> generation its routing was built from
        self._hosts: dict[tuple[str, int], ModelHost] = {}
        self._failed: dict[tuple[str, int], float] = {}  # version -> monotonic time it failed
        self._incomplete: set[str] = set()  # models routed without a version that failed to load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()  # set after the first complete pass

    # -- one pass ---------------------------------------------------------------------------

    def sync(self) -> list[str]:
        """Bring the routing up to date once; the models whose routing changed."""
        generations = deployment_generations(self.environment, store=self.store)
        changed = []
        for model, generation in generations.items():
            if self._applied.get(model) == generation and (
                model not in self._incomplete or not self._retry_due(model)
            ):
                continue
            deployment = get_deployment(model, self.environment, store=self.store)
            if self._apply(deployment):
                changed.append(model)
        for model in [m for m in self._applied if m not in generations]:
            self._remove(model)
            changed.append(model)
        self.synced.set()
        return changed

    def _retry_due(self, model: str) -> bool:
        now = time.monotonic()
        return any(now - failed >= self.retry_after for (m, _), failed in self._failed.items() if m == model)

    def _host(self, model: str, version: int) -> ModelHost | None:
        key = (model, version)
        host = self._hosts.get(key)
        if host is not None:
            return host
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed < self.retry_after:
            return None
        uri = f"models:/{model}/{version}"
        try:
            host = self.app.load(model, uri, trust=self.trust)
        except Exception as exc:
            self._failed[key] = time.monotonic()
            if self.on_error is not None:
                self.on_error(model, uri, exc)
            else:
                log.error("could not load %s for %s: %s", uri, model, getattr(exc, "message", exc))
            return None
        self._failed.pop(key, None)
        self._hosts[key] = host
        return host

    def _apply(self, d: Deployment) -> bool:
        wanted = routing(d)
        if not wanted:
            return False
        model = d.model
        current = self.app.router.table.endpoints.get(model)
        if current is None or not current.arms:
            versions = ", ".join(f"v{a.version}" for a in wanted)
            self.app.router.mark_unready(model, f"loading {versions} of the {self.environment} deployment")
        arms = []
        missing = []
        for a in wanted:
            host = self._host(model, a.version)  # loaded and warmed before any table names it
            if host is None:
                missing.append(a)
                continue
            arms.append(Arm(host, a.weight, a.role, mirror=a.shadow))
        if missing:
            self._incomplete.add(model)
        else:
            self._incomplete.discard(model)
        if not arms or any(a.role == "stable" and a.weight > 0 for a in missing):
            # Never hand a stable version's traffic to a candidate the rollout has not vetted.
            versions = ", ".join(f"v{a.version}" for a in missing)
            self.app.router.mark_unready(model, f"{versions} could not be loaded; see the server log")
            self._applied[model] = d.generation
            return False
        if missing and len(arms) == 1:  # stable answers everything until the candidate loads
            arms[0] = Arm(arms[0].host, 100.0, arms[0].label)
        config = d.config
        sticky = config.sticky_key if config is not None else None
        rollout = None
        if d.status in ACTIVE and d.candidate_version is not None and d.rollout_id is not None:
            rollout = RolloutRef(d.rollout_id, d.step)
        self.app.route(model, *arms, sticky_header=sticky, sticky_field=sticky, rollout=rollout)
        self._applied[model] = d.generation
        keep = {(model, a.host.version.version) for a in arms}
        for key in [k for k in self._hosts if k[0] == model and k not in keep]:
            del self._hosts[key]  # app.route retired it
        if self.on_change is not None:
            self.on_change(d, self.app.router.table.endpoints[model])
        return True

    def _remove(self, model: str) -> None:
        endpoint = self.app.router.remove(model)
        for arm in endpoint.arms if endpoint is not None else ():
            arm.host.retire()
        self._applied.pop(model, None)
        self._incomplete.discard(model)
        for key in [k for k in self._hosts if k[0] == model]:
            del self._hosts[key]

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Sync every ``interval`` seconds until :meth:`stop` (a failed pass is logged and retried)."""
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:
                log.exception("could not read the %s deployments; retrying", self.environment)
            self._stop.wait(self.interval)

    def announce(self) -> None:
        """Make every deployment known at once, answering 503 until its first pass has loaded it
        (instead of 404 for a model the server has not read about yet)."""
        for model in deployment_generations(self.environment, store=self.store):
            self.app.router.mark_unready(model, f"loading the {self.environment} deployment")

    def start(self) -> DeploymentSync:
        """Announce the deployments, then run in a daemon thread."""
        if self._thread is None:
            try:
                self.announce()
            except Exception:  # the loop retries reading the store
                log.exception("could not read the %s deployments; retrying", self.environment)
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="shipway-deployment-sync", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop following the store (after the pass in progress, which may be loading a model)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
