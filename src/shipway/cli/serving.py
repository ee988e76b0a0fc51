"""`shipway serve`: the inference server for registered versions."""

from __future__ import annotations

import ipaddress
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from shipway.cli.output import console, err_console
from shipway.core.errors import InvalidInput, ShipwayError

if TYPE_CHECKING:
    from shipway.serving import ModelHost, ServingApp


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ShipwayError(
                f"Cannot listen on {host}:{port} ({exc.strerror}); another process holds it. "
                "Stop it, or pick another port with --port (or SHIPWAY_SERVE_PORT)."
            ) from None


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models to serve, each NAME@ALIAS (churn@prod), NAME/VERSION (churn/3) or NAME (newest "
            "version). Each is served under its model name.",
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
) -> None:
    """Serve model versions over Open Inference Protocol v2 and plain JSON, with /metrics.

    Versions load (digests verified) and warm in the background: /v2/health/live answers at once,
    /v2/health/ready and each model's predictions answer 503 until their version is warm.
    Inference endpoints have no authentication; see docs/serving.md.
    """
    from shipway.serving import BatchConfig, ServingConfig, parse_target
    from shipway.serving import serve as run

    if not models:
        raise InvalidInput("Name at least one model to serve, for example: shipway serve churn@prod")
    if max_body_mb <= 0:
        raise InvalidInput(f"--max-body-mb must be positive, not {max_body_mb}.")
    targets = [parse_target(m) for m in models]
    config = ServingConfig(
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        batch=BatchConfig(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue),
    )

    _check_port_free(host, port)

    def started(app: ServingApp) -> None:
        console.print(
            f"Shipway serving on http://{host}:{port}  (health: /v2/health/ready, metrics: /metrics)"
        )
        if not _is_loopback(host):
            console.print(
                "  note: inference endpoints have no authentication; expose them only where intended"
            )
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
        on_start=started,
        on_ready=ready,
        on_error=failed,
    )
