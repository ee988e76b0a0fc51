"""Naming what to serve (``churn@prod``, ``churn/3``, ``churn``) and running the app under uvicorn."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shipway.core.errors import InvalidInput
from shipway.registry import ModelVersion, parse_model_uri, resolve
from shipway.serving.app import ServingApp, ServingConfig
from shipway.serving.host import ModelHost
from shipway.store import Store, get_store


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
    import uvicorn

    store = store or get_store()
    resolved = resolve_targets(targets, store=store)  # an unknown model or alias fails here, at once
    app = ServingApp(config, store=store)
    if on_start is not None:
        on_start(app)
    app.deploy_in_background(
        [(t.endpoint, v.uri) for t, v in resolved], trust=trust, on_ready=on_ready, on_error=on_error
    )
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
