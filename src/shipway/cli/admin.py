"""`shipway doctor`, `shipway db …` and `shipway server`."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import shipway
from shipway.cli.output import console, print_json
from shipway.cli.output import ok as verdict
from shipway.core.config import Settings
from shipway.core.errors import InvalidInput, ShipwayError
from shipway.store import Store, current_revision, head_revision, upgrade
from shipway.store.db import create_engine, redact, translate_errors
from shipway.store.schema import SCHEMA_REVISION

db_app = typer.Typer(help="Manage the metadata store's schema.", no_args_is_help=True)


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        return Path(make_url(uri).database or "").expanduser()
    return None


def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Say which store and artifact location are in use, their schema version and health."""
    settings = Settings.resolve()
    checks: list[tuple[str, bool, str]] = []
    checks.append(("settings", True, f"from {settings.source}; home {settings.home}"))
    path = _sqlite_path(settings.store_uri)
    store_line = f"{redact(settings.store_uri)}"
    if path is not None and not path.exists():
        checks.append(("metadata store", True, f"{store_line} (not created yet: it is made on first use)"))
    else:
        try:
            with translate_errors(settings.store_uri):
                engine = create_engine(settings.store_uri)
                revision = current_revision(engine)
                dialect = engine.dialect.name
                extra = ""
                if dialect == "sqlite":
                    with engine.connect() as conn:
                        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                    extra = f", journal {mode}"
                engine.dispose()
            checks.append(("metadata store", True, f"{store_line} ({dialect}{extra})"))
            if revision == SCHEMA_REVISION:
                checks.append(("schema", True, f"revision {revision} (current)"))
            elif revision is None:
                checks.append(("schema", True, "empty: tables are created on first use"))
            else:
                from shipway.store.migrate import known_revisions

                todo = (
                    "run `shipway db upgrade`"
                    if revision in known_revisions()
                    else "a newer Shipway upgraded it; install that release or newer"
                )
                checks.append(
                    ("schema", False, f"revision {revision}, this Shipway needs {SCHEMA_REVISION}: {todo}")
                )
        except ShipwayError as exc:
            checks.append(("metadata store", False, exc.message))
    checks.append(_artifact_check(settings))
    healthy = all(ok for _, ok, _ in checks)
    if as_json:
        print_json(
            {
                "healthy": healthy,
                "version": shipway.__version__,
                "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in checks],
            }
        )
    else:
        table = Table("check", "", "detail", title=f"Shipway {shipway.__version__}", title_justify="left")
        for name, passed, detail in checks:
            table.add_row(name, verdict(passed), detail)
        console.print(table)
        console.print(verdict(healthy, "healthy", "unhealthy: fix the failing checks above"))
    if not healthy:
        raise typer.Exit(1)


def _artifact_check(settings: Settings) -> tuple[str, bool, str]:
    uri = settings.artifact_uri
    if uri.startswith("s3://"):
        try:
            from shipway.store import open_blob_store

            blobs = open_blob_store(uri, settings.s3_endpoint_url)
            backend = blobs.backend
            backend._client.head_bucket(Bucket=backend.bucket)  # type: ignore[attr-defined]
            return ("artifact store", True, f"{uri} (bucket reachable)")
        except ShipwayError as exc:
            return ("artifact store", False, exc.message)
        except Exception as exc:  # botocore raises many kinds for an unreachable bucket
            return ("artifact store", False, f"{uri}: {exc}")
    try:
        from shipway.store import open_blob_store

        open_blob_store(uri, settings.s3_endpoint_url)
    except ShipwayError as exc:
        return ("artifact store", False, exc.message)
    root = Path(uri.removeprefix("file://")).expanduser()
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        return ("artifact store", False, f"{root} is not writable by this user")
    free = shutil.disk_usage(probe).free / 2**30
    state = "exists" if root.exists() else "created on first use"
    return ("artifact store", True, f"{root} ({state}, {free:.1f} GiB free)")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the store's tables to this Shipway's schema (back up first)."""
    settings = Settings.resolve()
    with translate_errors(settings.store_uri):
        engine = create_engine(settings.store_uri)
        before = current_revision(engine)
        after = upgrade(engine)
        engine.dispose()
    if before == after:
        console.print(f"{redact(settings.store_uri)} is already at revision {after}.")
    else:
        console.print(f"Upgraded {redact(settings.store_uri)} from {before or 'empty'} to {after}.")


@db_app.command("current")
def db_current() -> None:
    """Print the store's schema revision and the one this Shipway needs."""
    settings = Settings.resolve()
    with translate_errors(settings.store_uri):
        engine = create_engine(settings.store_uri)
        revision = current_revision(engine)
        engine.dispose()
    console.print(f"store: {revision or 'empty'}; needed: {head_revision()}")


def _check_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInput(
            f"Refusing to listen on {host} with --insecure-local: without authentication the server "
            "binds to loopback only. Drop --insecure-local to require tokens, or use --host 127.0.0.1."
        )


def check_port_free(host: str, port: int, option: str = "--port (or SHIPWAY_PORT)") -> None:
    """Refuse at once, naming ``option``, when another process listens on ``host:port``."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ShipwayError(
                f"Cannot listen on {host}:{port} ({exc.strerror}); another process holds it. "
                f"Stop it, or pick another port with {option}."
            ) from None


def server(
    host: Annotated[str, typer.Option(help="Address to listen on.", envvar="SHIPWAY_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", envvar="SHIPWAY_PORT")] = 5050,
    insecure_local: Annotated[
        bool,
        typer.Option(
            "--insecure-local",
            help="Serve without authentication, as the local OS user; loopback addresses only.",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            envvar="SHIPWAY_WORKERS",
            help="Server processes sharing the port and the store; about one per CPU core. Each keeps "
            "its own 5 s token cache, so a revocation reaches the other workers within 5 s.",
        ),
    ] = 1,
) -> None:
    """Run the control-plane API server alone on the configured store (`shipway up` runs it with
    serving and monitoring).

    Every API call needs a token (`shipway token create`) unless --insecure-local is given.
    """
    if insecure_local:
        _check_loopback(host)
    check_port_free(host, port)
    settings = Settings.resolve()
    store = Store(settings)  # creates or checks the schema once, before any worker starts
    describe_api(host, port, insecure_local, workers, store, settings)
    console.print("Press Ctrl-C to stop.")
    sys.stdout.flush()
    run_api(host, port, insecure_local, workers, store)


def describe_api(
    host: str, port: int, insecure_local: bool, workers: int, store: Store, settings: Settings
) -> None:
    console.print(f"Shipway {shipway.__version__} listening on http://{host}:{port}")
    console.print(f"  store:     {store.describe()}")
    console.print(f"  artifacts: {settings.artifact_uri}")
    console.print(f"  health:    http://{host}:{port}/health   API docs: http://{host}:{port}/docs")
    if insecure_local:
        console.print("  auth:      NONE (--insecure-local): every caller acts as the local OS user")
    else:
        console.print("  auth:      bearer tokens; make one with `shipway token create`")
    if workers > 1:
        console.print(f"  workers:   {workers} processes")


def run_api(
    host: str,
    port: int,
    insecure_local: bool,
    workers: int,
    store: Store,
    *,
    stop: threading.Event | None = None,
) -> None:
    """Serve the API until a signal (or ``stop``, set from another thread) ends it; closes ``store``."""
    import uvicorn

    from shipway.server import create_app
    from shipway.server.app import INSECURE_LOCAL_ENV

    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        store.close()
        # Each worker builds its own app and store from the same settings (app_from_environment).
        os.environ[INSECURE_LOCAL_ENV] = "1" if insecure_local else "0"
        config = uvicorn.Config(
            "shipway.server.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
        )
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        if stop is not None:
            _when_set(stop, supervisor.should_exit.set)
        supervisor.run()
        return
    config = uvicorn.Config(
        create_app(store, insecure_local=insecure_local),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )
    api = uvicorn.Server(config)
    if stop is not None:
        _when_set(stop, lambda: setattr(api, "should_exit", True))
    try:
        api.run()
    finally:
        store.close()
    if not api.started:
        raise ShipwayError(f"Could not listen on {host}:{port}; is the port already in use? Try --port.")


def _when_set(event: threading.Event, action: Callable[[], object]) -> None:
    def watch() -> None:
        event.wait()
        action()

    threading.Thread(target=watch, name="shipway-stop-watch", daemon=True).start()
