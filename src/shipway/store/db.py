"""Engines for the metadata store: SQLite (WAL, busy timeout, immediate write locks) or PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from shipway.core.errors import InvalidInput, MissingDependency, Unavailable

# How long a writer waits for another process's write lock before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 120_000


def parse_store_uri(uri: str) -> URL:
    """Turn a user-facing store URI into a SQLAlchemy URL with the driver Shipway uses."""
    try:
        url = make_url(uri)
    except sa.exc.ArgumentError as exc:
        raise InvalidInput(
            f"Store URI {uri!r} is not a database URL; use sqlite:///path/to/shipway.db "
            "or postgresql://user:password@host:5432/dbname."
        ) from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise InvalidInput(
                "An in-memory SQLite store would vanish with the process; "
                "give a file path such as sqlite:///./.shipway/shipway.db."
            )
        return url.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    raise InvalidInput(
        f"Store URI scheme {url.drivername!r} is not supported; use sqlite:/// or postgresql://."
    )


def redact(uri: str) -> str:
    """The URI with any password hidden, fit for messages and `shipway doctor`."""
    try:
        return make_url(uri).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return uri


def create_engine(uri: str) -> Engine:
    """Create an engine for ``uri``, configured for many concurrent processes."""
    url = parse_store_uri(uri)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingDependency.for_extra("postgres", "psycopg", "A PostgreSQL store") from exc
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_engine(url: URL) -> Engine:
    path = Path(url.database or "").expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Unavailable(f"Cannot create the folder for the SQLite store {path}: {exc}") from exc
    engine = sa.create_engine(
        url.set(database=str(path)),
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below choose the kind of BEGIN instead of pysqlite.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives any process crash; only an OS crash can lose the last commits.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # LIKE is case-sensitive on PostgreSQL; make SQLite agree (ILIKE is the case-blind form).
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that upgrades to a
        # writer can fail with "database is locked" at once, without waiting for busy_timeout.
        mode = conn.get_execution_options().get("shipway_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextlib.contextmanager
def translate_errors(uri: str) -> Iterator[None]:
    """Turn driver errors that mean "cannot reach the store" into :class:`Unavailable`."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        if "locked" in text or "busy" in text:
            raise Unavailable(
                f"The metadata store {redact(uri)} stayed locked by another process for "
                f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s; retry, or move a busy team to PostgreSQL."
            ) from exc
        text = " ".join(text.split())
        end = "" if text.endswith((".", "?", "!")) else "."
        raise Unavailable(
            f"Cannot use the metadata store {redact(uri)}: {text}{end} "
            "Check SHIPWAY_STORE_URI and that the database server is running and reachable."
        ) from exc


def insert_for(dialect: str) -> Any:
    """The INSERT construct with ``on_conflict_do_*`` for a dialect (SQLite and PostgreSQL share it)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
