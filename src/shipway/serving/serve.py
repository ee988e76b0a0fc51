"""Running the app under uvicorn: named versions (``churn@prod``, ``churn/3``, ``churn``), or every
deployment of an environment, following the store, with the rollout controller alongside."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipway.core.errors import InvalidInput
from shipway.registry import ModelVersion, parse_model_uri, resolve
from shipway.serving.app import ServingApp, ServingConfig
from shipway.serving.host import ModelHost
from shipway.store import Store, get_store

if TYPE_CHECKING:
    from shipway.rollout import Deployment, Event
    from shipway.serving.routing import Endpoint


@dataclass(frozen=True)
class Target:
    """One endpoint to serve and the model URI whose version answers it."""

    endpoint: str
    uri: str


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


def serve(
    targets: Sequence[Target],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServingConfig | None = None,
    trust: bool = False,
    store: Store | None = None,
    on_start: Callable[[ServingApp], None] | None = None,
    on_ready: Callable[[ModelHost], None] | None = None,
    on_error: Callable[[str, str, Exception], None] | None = None,
) -> None:
    """Serve ``targets`` until interrupted; versions load in the background while health answers."""
    store = store or get_store()
    resolved = resolve_targets(targets, store=store)  # an unknown model or alias fails here, at once
    app = ServingApp(config, store=store)
    if on_start is not None:
        on_start(app)
    app.deploy_in_background(
        [(t.endpoint, v.uri) for t, v in resolved], trust=trust, on_ready=on_ready, on_error=on_error
    )
    _run(app, host, port)


def serve_deployments(
    environment: str = "prod",
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServingConfig | None = None,
    trust: bool = False,
    store: Store | None = None,
    sync_interval: float = 1.0,
    controller_interval: float = 5.0,
    worker: str | None = None,
    on_start: Callable[[ServingApp], None] | None = None,
    on_change: Callable[[Deployment, Endpoint], None] | None = None,
    on_error: Callable[[str, str, Exception], None] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> None:
    """Serve every deployment of ``environment`` until interrupted, following changes in the store.

    Each request of a rollout is counted in its arm's window, saved every ``sync_interval``
    seconds and at shutdown; with ``controller_interval`` > 0 the rollout controller runs here too
    (0: another process runs it).
    """
    from shipway.rollout import Controller
    from shipway.serving.sync import DeploymentSync
    from shipway.serving.windows import WindowRecorder

    if not sync_interval > 0:
        raise InvalidInput(f"--sync-interval must be positive, not {sync_interval}.")
    if controller_interval < 0:
        raise InvalidInput(f"--controller-interval must be 0 (off) or positive, not {controller_interval}.")
    store = store or get_store()
    app = ServingApp(config, store=store)
    recorder = WindowRecorder(store, worker=worker, interval=sync_interval)
    app.listeners.append(recorder)
    sync = DeploymentSync(
        app,
        environment,
        store=store,
        trust=trust,
        interval=sync_interval,
        on_change=on_change,
        on_error=on_error,
    )
    controller = (
        Controller(interval=controller_interval, environment=environment, store=store, on_event=on_event)
        if controller_interval > 0
        else None
    )
    # At shutdown: stop changing things, then save the windows of every request answered.
    if controller is not None:
        app.on_close.append(controller.stop)
    app.on_close.extend([sync.stop, recorder.stop])
    if on_start is not None:
        on_start(app)
    sync.start()
    recorder.start()
    if controller is not None:
        controller.start()
    try:
        _run(app, host, port)
    finally:
        app.close()


def _run(app: ServingApp, host: str, port: int) -> None:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="auto",
            http="auto",
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    server.run()
