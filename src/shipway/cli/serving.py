"""`shipway serve`: the inference server for registered versions."""

from __future__ import annotations

import ipaddress
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from shipway.cli.admin import check_port_free
from shipway.cli.output import console, err_console
from shipway.core.errors import InvalidInput

if TYPE_CHECKING:
    from shipway.rollout import Deployment, Event
    from shipway.serving import Endpoint, ModelHost, ServingConfig


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models to serve, each NAME@ALIAS (churn@prod), NAME/VERSION (churn/3) or NAME (newest "
            "version). Each is served under its model name. Without any, every deployment of --env is "
            "served, following its rollouts.",
            metavar="MODEL",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on.", envvar="SHIPWAY_SERVE_HOST")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", envvar="SHIPWAY_SERVE_PORT")] = 8080,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", help="Most rows one batched predict call takes.")
    ] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-wait-ms",
            help="How long a batch may wait to fill. 0 batches only requests that queued while the "
            "previous call ran, so a lone request is never delayed.",
        ),
    ] = 0.0,
    max_queue: Annotated[
        int,
        typer.Option(
            "--max-queue", help="Requests that may wait per version; beyond it, 503 with Retry-After."
        ),
    ] = 256,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", help="Largest request body accepted (413 beyond it), in MiB.")
    ] = 8.0,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust", help="Allow python-function models, whose files hold code that runs when loaded."
        ),
    ] = False,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Without MODEL arguments: the environment whose deployments to serve [default: prod].",
            envvar="SHIPWAY_SERVE_ENV",
            show_default=False,
        ),
    ] = None,
    sync_interval: Annotated[
        float,
        typer.Option(
            "--sync-interval",
            help="Seconds between looks at the store: at the deployments (or at the aliases of the "
            "named models, which are followed), and between saves of the rollout windows.",
        ),
    ] = 1.0,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            envvar="SHIPWAY_SERVE_WORKERS",
            help="Processes sharing the port, about one per CPU core. Each follows the store on its own; "
            "the rollout controller runs once, in the parent process.",
        ),
    ] = 1,
    controller_interval: Annotated[
        float,
        typer.Option(
            "--controller-interval",
            help="Seconds between rollout analyses by the controller in this process; 0 when another "
            "process runs it.",
        ),
    ] = 5.0,
    log_sample: Annotated[
        float,
        typer.Option(
            "--log-sample",
            help="Share of requests written to the prediction log (by request id; 1 logs all).",
        ),
    ] = 1.0,
    no_prediction_log: Annotated[
        bool,
        typer.Option(
            "--no-prediction-log",
            help="Write no prediction log (it goes to the artifact store under predictions/).",
        ),
    ] = False,
) -> None:
    """Serve model versions over Open Inference Protocol v2 and plain JSON, with /metrics.

    A model named by alias (churn@prod) or by name alone (the newest version) is followed: when
    the alias moves, the new version is loaded and warmed, then answers in one switch.

    Without MODEL arguments, serves every deployment of --env (`shipway deploy`) under its model
    name and follows it: canary weights, A/B keys, shadow copies, promotions and rollbacks, each
    version loaded and warmed before it gets traffic; the rollout controller runs alongside.
    Versions load (digests verified) and warm in the background: /v2/health/live answers at once,
    /v2/health/ready and each model's predictions answer 503 until their version is warm.
    Inference endpoints have no authentication; see docs/serving.md.
    """
    from shipway.serving import BatchConfig, ServingConfig, parse_target
    from shipway.serving import serve as run

    if models and env is not None:
        raise InvalidInput(
            f"--env serves the deployments of an environment; it cannot be combined with named models "
            f"({' '.join(models)}). Drop --env, or the model names: shipway serve --env {env}"
        )
    if max_body_mb <= 0:
        raise InvalidInput(f"--max-body-mb must be positive, not {max_body_mb}.")
    config = ServingConfig(
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        batch=BatchConfig(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue),
    )
    sample = None if no_prediction_log else log_sample
    if sample is not None and not 0 < sample <= 1:
        raise InvalidInput(
            f"--log-sample must be over 0 and at most 1, not {sample}; --no-prediction-log turns it off."
        )
    if not models:
        _serve_deployments(
            env or "prod", host, port, config, trust, sync_interval, controller_interval, workers, sample
        )
        return
    targets = [parse_target(m) for m in models]

    check_port_free(host, port, "--port (or SHIPWAY_SERVE_PORT)")

    def started() -> None:
        console.print(
            f"Shipway serving on http://{host}:{port}  (health: /v2/health/ready, metrics: /metrics)"
        )
        if not _is_loopback(host):
            console.print(
                "  note: inference endpoints have no authentication; expose them only where intended"
            )
        if workers > 1:
            console.print(f"  workers: {workers} processes")
        for t in targets:
            console.print(f"  loading {t.endpoint} from {t.uri} ...")
        sys.stdout.flush()

    def ready(h: ModelHost) -> None:
        console.print(
            f"  {h.endpoint}: version {h.label} ready in {h.load_seconds or 0:.2f} s "
            f"at /v2/models/{h.endpoint}/infer and /v1/models/{h.endpoint}/predict"
        )
        sys.stdout.flush()

    def failed(endpoint: str, uri: str, exc: Exception) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        err_console.print(f"  {endpoint}: could not load {uri}: {message}")

    run(
        targets,
        host=host,
        port=port,
        config=config,
        trust=trust,
        workers=workers,
        sync_interval=sync_interval,
        log_sample=sample,
        on_start=started,
        on_ready=ready,
        on_error=failed,
    )


def _describe(d: Deployment, endpoint: Endpoint) -> str:
    parts = []
    for arm in endpoint.arms:
        share = f"{arm.weight:g}%" if not arm.mirror else f"shadow of {arm.mirror:g}%"
        parts.append(f"v{arm.host.label} {share} ({arm.label})")
    what = ", ".join(parts)
    if d.status != "idle" and d.config is not None:
        what += f"; {d.config.strategy} rollout {d.status}"
        if d.config.strategy == "canary":
            what += f", step {d.step + 1} of {len(d.config.steps)}"
        if d.config.sticky_key:
            what += f", sticky by {d.config.sticky_key}"
    return what


def _serve_deployments(
    environment: str,
    host: str,
    port: int,
    config: ServingConfig,
    trust: bool,
    sync_interval: float,
    controller_interval: float,
    workers: int,
    log_sample: float | None,
) -> None:
    from shipway.rollout import deployment_generations
    from shipway.serving import serve_deployments
    from shipway.store import get_store

    if not sync_interval > 0:
        raise InvalidInput(f"--sync-interval must be positive, not {sync_interval}.")
    if controller_interval < 0:
        raise InvalidInput(f"--controller-interval must be 0 (off) or positive, not {controller_interval}.")
    store = get_store()
    deployed = deployment_generations(environment, store=store)
    check_port_free(host, port, "--port (or SHIPWAY_SERVE_PORT)")

    def started() -> None:
        console.print(
            f"Shipway serving the {environment} deployments on http://{host}:{port}  "
            "(health: /v2/health/ready, metrics: /metrics)"
        )
        if not _is_loopback(host):
            console.print(
                "  note: inference endpoints have no authentication; expose them only where intended"
            )
        if not deployed:
            console.print(
                f"  no deployments in {environment} yet: `shipway deploy NAME --env {environment}` "
                "starts one, and it is served as soon as it exists"
            )
        if workers > 1:
            console.print(f"  workers: {workers} processes, each following the store")
        if controller_interval > 0:
            console.print(f"  rollout controller: analysing every {controller_interval:g} s")
        sys.stdout.flush()

    def changed(d: Deployment, endpoint: Endpoint) -> None:
        console.print(f"  {d.model}: {_describe(d, endpoint)}")
        sys.stdout.flush()

    def failed(endpoint: str, uri: str, exc: Exception) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        err_console.print(f"  {endpoint}: could not load {uri}: {message}")

    def acted(event: Event) -> None:
        console.print(f"  rollout of {event.model}: {event.action}: {'; '.join(event.reasons)}")
        sys.stdout.flush()

    serve_deployments(
        environment,
        host=host,
        port=port,
        config=config,
        trust=trust,
        store=store,
        sync_interval=sync_interval,
        controller_interval=controller_interval,
        workers=workers,
        log_sample=log_sample,
        on_start=started,
        on_change=changed,
        on_error=failed,
        on_event=acted,
    )
