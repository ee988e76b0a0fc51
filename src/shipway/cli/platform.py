"""`shipway up`: the whole platform in one command.

One process runs the control-plane API and the monitoring loop that evaluates alert rules and
SLOs; a child process runs `shipway serve` for every deployment of an environment, with the
rollout controller. Ctrl-C or SIGTERM stops both, the
child first saving what it has buffered (rollout windows, traffic, prediction logs).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Annotated

import typer

from shipway.cli.admin import _check_loopback, check_port_free, describe_api, run_api
from shipway.cli.output import console, err_console
from shipway.core.config import Settings
from shipway.core.errors import InvalidInput
from shipway.store import Store

CHILD_STOP_S = 30.0  # how long serving gets to save what it buffered before it is killed


def up(
    host: Annotated[str, typer.Option(help="Address of the API.", envvar="SHIPWAY_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.", envvar="SHIPWAY_PORT")] = 5050,
    insecure_local: Annotated[
        bool,
        typer.Option(
            "--insecure-local",
            help="Serve the API without authentication, as the local OS user; loopback addresses only.",
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, envvar="SHIPWAY_WORKERS", help="API server processes.")
    ] = 1,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the deployments of --env (inference).")
    ] = True,
    env: Annotated[
        str,
        typer.Option(
            "--env", help="The environment whose deployments are served.", envvar="SHIPWAY_SERVE_ENV"
        ),
    ] = "prod",
    serve_host: Annotated[
        str,
        typer.Option("--serve-host", help="Address of the inference server.", envvar="SHIPWAY_SERVE_HOST"),
    ] = "127.0.0.1",
    serve_port: Annotated[
        int, typer.Option("--serve-port", help="Port of the inference server.", envvar="SHIPWAY_SERVE_PORT")
    ] = 8080,
    serve_workers: Annotated[
        int,
        typer.Option(
            "--serve-workers",
            min=1,
            max=64,
            envvar="SHIPWAY_SERVE_WORKERS",
            help="Inference server processes.",
        ),
    ] = 1,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust", help="Serve python-function models, whose files hold code that runs when loaded."
        ),
    ] = False,
    controller_interval: Annotated[
        float, typer.Option("--controller-interval", help="Seconds between rollout analyses.")
    ] = 5.0,
    monitor_interval: Annotated[
        float,
        typer.Option(
            "--monitor-interval", help="Seconds between evaluations of the alert rules and SLOs; 0: off."
        ),
    ] = 30.0,
    keep_logs: Annotated[
        str | None,
        typer.Option(
            "--keep-logs",
            envvar="SHIPWAY_KEEP_LOGS",
            help="Delete prediction logs and labels older than this (30d, 12w), hourly; default: keep all.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the platform on the configured store: the control-plane API, serving of every
    deployment of --env with the rollout controller, and monitoring.

    The embedded default is SQLite and a local folder (./.shipway, or SHIPWAY_HOME); set
    SHIPWAY_STORE_URI and SHIPWAY_ARTIFACT_URI for PostgreSQL and S3. Every API call needs a token
    (`shipway token create`) unless --insecure-local is given; inference endpoints have none (see
    docs/serving.md). `shipway server` runs the API alone, `shipway serve` the inference server alone.
    """
    if insecure_local:
        _check_loopback(host)
    check_port_free(host, port, "--port (or SHIPWAY_PORT)")
    if serve:
        check_port_free(serve_host, serve_port, "--serve-port (or SHIPWAY_SERVE_PORT), or --no-serve")
        if not controller_interval > 0:
            raise InvalidInput(f"--controller-interval must be positive, not {controller_interval}.")
    if monitor_interval < 0:
        raise InvalidInput(f"--monitor-interval must be 0 (off) or positive, not {monitor_interval}.")
    keep_logs_ms = None
    if keep_logs is not None:
        from shipway.monitoring.retention import retention_ms

        keep_logs_ms = retention_ms(keep_logs)
        if monitor_interval == 0:
            raise InvalidInput("--keep-logs needs the monitor: drop --monitor-interval 0.")
    settings = Settings.resolve()
    store = Store(settings)  # creates or checks the schema before anything else opens it
    describe_api(host, port, insecure_local, workers, store, settings)
    if serve:
        console.print(
            f"  serving:   http://{serve_host}:{serve_port}  (every {env} deployment; rollout controller "
            f"every {controller_interval:g} s; metrics at /metrics)"
        )
    else:
        console.print("  serving:   off (--no-serve)")
    if monitor_interval > 0:
        console.print(
            f"  alerts:    rules and SLOs evaluated every {monitor_interval:g} s (`shipway alerts list`)"
        )
        kept = f"deleted after {keep_logs}" if keep_logs else "kept until pruned (--keep-logs)"
        console.print(f"  logs:      prediction logs and labels {kept}")
    else:
        console.print("  alerts:    off (--monitor-interval 0)")
    console.print("Press Ctrl-C to stop.")
    sys.stdout.flush()

    stop = threading.Event()
    stopping = threading.Event()
    failed: list[str] = []
    # uvicorn restores the handlers it found and re-raises the signal it caught once it has shut
    # down; these make that re-raise a no-op, so the children are stopped below, in order.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    child: subprocess.Popen[bytes] | None = None
    if serve:
        argv = [sys.executable, "-m", "shipway", "serve", "--env", env, "--host", serve_host]
        argv += ["--port", str(serve_port), "--workers", str(serve_workers)]
        argv += ["--controller-interval", str(controller_interval)]
        if trust:
            argv.append("--trust")
        child = subprocess.Popen(argv)

        def watch(proc: subprocess.Popen[bytes]) -> None:
            code = proc.wait()
            if not stopping.is_set():
                failed.append(f"serving exited unexpectedly (exit code {code}); stopping")
                stop.set()

        threading.Thread(target=watch, args=(child,), name="shipway-serve-watch", daemon=True).start()
    monitor = None
    if monitor_interval > 0:
        from shipway.monitoring import Monitor

        # Its own store object: the API's is closed when the API stops.
        monitor = Monitor(store=Store(settings), interval=monitor_interval, keep_logs_ms=keep_logs_ms).start()
    try:
        run_api(host, port, insecure_local, workers, store, stop=stop)
    finally:
        stopping.set()
        if monitor is not None:
            monitor.stop()
            if monitor.store is not None:
                monitor.store.close()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(CHILD_STOP_S)
            except subprocess.TimeoutExpired:
                err_console.print(f"serving did not stop within {CHILD_STOP_S:g} s; killing it")
                child.kill()
                child.wait()
    if failed:
        for line in failed:
            err_console.print(line)
        raise typer.Exit(1)
