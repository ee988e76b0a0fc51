"""Running the app under uvicorn: named versions (``churn@prod``, ``churn/3``, ``churn``), following
their aliases, or every deployment of an environment, following the store, with the rollout
controller alongside; in one process, or in several worker processes sharing the port.

Workers agree through the store, not with each other: each one follows the same deployments (or
aliases) on its own, and the rollout windows each one saves are added up by the controller, which
runs once, in the parent process. A worker is started with ``spawn`` and builds its app from a
:class:`ServePlan` passed in the environment (``app_from_environment``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipway.core.errors import InvalidInput
from shipway.registry import ModelVersion, parse_model_uri, resolve
from shipway.serving.app import ServingApp, ServingConfig
from shipway.serving.batching import BatchConfig
from shipway.serving.follow import Target, TargetSync
from shipway.serving.host import ModelHost
from shipway.store import Store, get_store

if TYPE_CHECKING:
    from shipway.rollout import Controller, Deployment, Event
    from shipway.serving.routing import Endpoint

log = logging.getLogger("shipway.serving")

PLAN_ENV = "SHIPWAY_SERVE_PLAN"
MAX_WORKERS = 64


def parse_target(text: str) -> Target:
    """``NAME@ALIAS``, ``NAME/VERSION``, ``NAME`` (the newest version) or a ``models:/`` URI."""
    uri = text if text.startswith("models:/") else f"models:/{text}"
    try:
        name, _, _ = parse_model_uri(uri)
    except InvalidInput:
        raise InvalidInput(
            f"{text!r} does not name a model version: use NAME@ALIAS (churn@prod), NAME/VERSION "
            "(churn/3) or NAME for the newest version."
        ) from None
    return Target(name, uri)


def resolve_targets(
    targets: Sequence[Target], *, store: Store | None = None
) -> list[tuple[Target, ModelVersion]]:
    """Each target with the version it names now, refusing an endpoint named twice."""
    seen: dict[str, str] = {}
    for target in targets:
        if target.endpoint in seen:
            raise InvalidInput(
                f"'{target.endpoint}' is named twice ({seen[target.endpoint]} and {target.uri}); "
                "an endpoint serves one version here."
            )
        seen[target.endpoint] = target.uri
    return [(t, resolve(t.uri, store=store)) for t in targets]


@dataclass(frozen=True)
class ServePlan:
    """What one serving process runs, in a form a spawned worker can rebuild from JSON: the
    deployments of ``environment``, or else ``targets``."""

    environment: str | None = None
    targets: tuple[Target, ...] = ()
    config: ServingConfig = field(default_factory=ServingConfig)
    trust: bool = False
    sync_interval: float = 1.0
    log_sample: float | None = 1.0  # share of requests in the prediction log; None: no log
    log_flush_seconds: float = 10.0  # the most a logged request waits to reach a file

    def __post_init__(self) -> None:
        if (self.environment is None) == (not self.targets):
            raise InvalidInput("A serving plan names an environment or models to serve, not both or neither.")
        if not self.sync_interval > 0:
            raise InvalidInput(f"--sync-interval must be positive, not {self.sync_interval}.")
        if self.log_sample is not None and not 0 < self.log_sample <= 1:
            raise InvalidInput(
                f"--log-sample must be over 0 and at most 1, not {self.log_sample}; "
                "--no-prediction-log turns the log off."
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServePlan:
        data: dict[str, Any] = json.loads(text)
        config = data.pop("config")
        batch = BatchConfig(**config.pop("batch"))
        targets = tuple(Target(**t) for t in data.pop("targets"))
        return cls(targets=targets, config=ServingConfig(batch=batch, **config), **data)


@dataclass
class Callbacks:
    """What the process running the app is told (printing, in the CLI)."""

    on_start: Callable[[], None] | None = None
    on_ready: Callable[[ModelHost], None] | None = None
    on_change: Callable[[Deployment, Endpoint], None] | None = None
    on_error: Callable[[str, str, Exception], None] | None = None
    on_event: Callable[[Event], None] | None = None


def build_app(
    plan: ServePlan,
    *,
    store: Store,
    worker: str | None = None,
    controller_interval: float = 0.0,
    callbacks: Callbacks | None = None,
) -> ServingApp:
    """The app ``plan`` describes, with its background work started: following the deployments
    (recording each rollout request in its arm's window) or the targets' aliases, counting traffic
    per minute (for alerts and SLOs), writing the prediction log, and with ``controller_interval``
    > 0 the rollout controller. All of it stops when the app closes, and what is buffered is saved
    then."""
    from shipway.serving.sync import DeploymentSync
    from shipway.serving.windows import WindowRecorder

    cb = callbacks or Callbacks()
    app = ServingApp(plan.config, store=store)
    parts: list[Any] = []  # started in this order; stopped in this order when the app closes

    def alongside(part: Any, *, listens: bool = False) -> None:
        if listens:
            app.listeners.append(part)
        app.on_close.append(part.stop)
        parts.append(part)

    if plan.environment is not None:
        recorder = WindowRecorder(store, worker=worker, interval=plan.sync_interval)
        sync = DeploymentSync(
            app,
            plan.environment,
            store=store,
            trust=plan.trust,
            interval=plan.sync_interval,
            on_change=cb.on_change,
            on_error=cb.on_error,
        )
        controller = _controller(plan.environment, controller_interval, store, cb.on_event)
        # At shutdown: stop changing things, then save the windows of every request answered.
        if controller is not None:
            alongside(controller)
        alongside(sync)
        alongside(recorder, listens=True)
    else:
        follower = TargetSync(
            app,
            plan.targets,
            store=store,
            trust=plan.trust,
            interval=plan.sync_interval,
            on_ready=cb.on_ready,
            on_error=cb.on_error,
        )
        for target in plan.targets:  # 503 "loading", not 404, until the first load
            app.router.mark_unready(target.endpoint, f"{target.uri} is loading.")
        alongside(follower)
    from shipway.serving.traffic import TrafficRecorder, target_environments

    counted = plan.environment if plan.environment is not None else target_environments(plan.targets)
    interval = max(plan.sync_interval, 1)
    alongside(TrafficRecorder(store, environment=counted, worker=worker, interval=interval), listens=True)
    if plan.log_sample is not None:
        from shipway.serving.predlog import PredictionLog

        # Last to stop: it writes every request answered, those answered while others stopped too.
        log_ = PredictionLog(
            store, sample=plan.log_sample, flush_seconds=plan.log_flush_seconds, worker=worker
        )
        alongside(log_, listens=True)
    if cb.on_start is not None:
        cb.on_start()
    for part in parts:
        part.start()
    return app


def _controller(
    environment: str, interval: float, store: Store, on_event: Callable[[Event], None] | None
) -> Controller | None:
    if interval < 0:
        raise InvalidInput(f"--controller-interval must be 0 (off) or positive, not {interval}.")
    if interval == 0:
        return None
    from shipway.rollout import Controller

    return Controller(interval=interval, environment=environment, store=store, on_event=on_event)


def serve(
    targets: Sequence[Target],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServingConfig | None = None,
    trust: bool = False,
    store: Store | None = None,
    workers: int = 1,
    sync_interval: float = 1.0,
    log_sample: float | None = 1.0,
    on_start: Callable[[], None] | None = None,
    on_ready: Callable[[ModelHost], None] | None = None,
    on_error: Callable[[str, str, Exception], None] | None = None,
) -> None:
    """Serve ``targets`` until interrupted, following their aliases; versions load in the
    background while health answers."""
    store = store or get_store()
    resolve_targets(targets, store=store)  # an unknown model or alias fails here, at once
    plan = ServePlan(
        targets=tuple(targets),
        config=config or ServingConfig(),
        trust=trust,
        sync_interval=sync_interval,
        log_sample=log_sample,
    )
    callbacks = Callbacks(on_start=on_start, on_ready=on_ready, on_error=on_error)
    if workers > 1:
        if on_start is not None:
            on_start()
        _run_workers(plan, workers, host, port)
        return
    _run(build_app(plan, store=store, callbacks=callbacks), host, port)


def serve_deployments(
    environment: str = "prod",
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServingConfig | None = None,
    trust: bool = False,
    store: Store | None = None,
    workers: int = 1,
    sync_interval: float = 1.0,
    controller_interval: float = 5.0,
    worker: str | None = None,
    log_sample: float | None = 1.0,
    on_start: Callable[[], None] | None = None,
    on_change: Callable[[Deployment, Endpoint], None] | None = None,
    on_error: Callable[[str, str, Exception], None] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> None:
    """Serve every deployment of ``environment`` until interrupted, following changes in the store.

    Each request of a rollout is counted in its arm's window, saved every ``sync_interval``
    seconds and at shutdown; with ``controller_interval`` > 0 the rollout controller runs here too
    (0: another process runs it). With ``workers`` > 1 each worker process follows the store on
    its own and the controller runs once, in this process.
    """
    store = store or get_store()
    plan = ServePlan(
        environment=environment,
        config=config or ServingConfig(),
        trust=trust,
        sync_interval=sync_interval,
        log_sample=log_sample,
    )
    callbacks = Callbacks(on_start=on_start, on_change=on_change, on_error=on_error, on_event=on_event)
    if workers > 1:
        controller = _controller(environment, controller_interval, store, on_event)
        if on_start is not None:
            on_start()
        if controller is not None:
            controller.start()
        try:
            _run_workers(plan, workers, host, port)
        finally:
            if controller is not None:
                controller.stop()
        return
    app = build_app(
        plan, store=store, worker=worker, controller_interval=controller_interval, callbacks=callbacks
    )
    try:
        _run(app, host, port)
    finally:
        app.close()


def app_from_environment() -> ServingApp:
    """A worker's app, built from the plan its parent put in ``SHIPWAY_SERVE_PLAN`` (uvicorn factory)."""
    plan = ServePlan.from_json(os.environ[PLAN_ENV])
    pid = os.getpid()

    def ready(host: ModelHost) -> None:
        print(f"  [worker {pid}] {host.endpoint}: version {host.label} ready", flush=True)

    def failed(endpoint: str, uri: str, exc: Exception) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        log.error("[worker %s] %s: could not load %s: %s", pid, endpoint, uri, message)

    return build_app(plan, store=get_store(), callbacks=Callbacks(on_ready=ready, on_error=failed))


def _uvicorn_options() -> dict[str, Any]:
    return {"loop": "auto", "http": "auto", "log_level": "warning", "access_log": False, "lifespan": "on"}


def _run(app: ServingApp, host: str, port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, host=host, port=port, **_uvicorn_options())).run()


def _run_workers(plan: ServePlan, workers: int, host: str, port: int) -> None:
    """Run ``workers`` processes sharing one listening socket until interrupted; uvicorn's
    supervisor restarts a worker that dies."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if not 1 < workers <= MAX_WORKERS:
        raise InvalidInput(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}.")
    os.environ[PLAN_ENV] = plan.to_json()  # spawned workers inherit it
    config = uvicorn.Config(
        "shipway.serving.serve:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **_uvicorn_options(),
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()
