"""PostgreSQL stores in backups: ``pg_dump`` of an exported snapshot, ``pg_restore`` into a database.

The backup holds one transaction open at REPEATABLE READ, exports its snapshot to ``pg_dump``
(``--snapshot``) and reads the row counts, audit head and blob references in that same transaction,
so the dump and the manifest describe one point in time while writers carry on. The password goes
to the tools through ``PGPASSWORD``, never on a command line other users could list.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shipway.core.errors import MissingDependency, Unavailable

_BOOKKEEPING = frozenset({"alembic_version", "audit_head"})
_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"


def _libpq(uri: str) -> tuple[str, str | None, dict[str, str]]:
    """The store URI as libpq reads it (no password), the password, and an environment carrying it."""
    from shipway.store.db import parse_store_uri

    url = parse_store_uri(uri)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    conninfo = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return conninfo, (str(url.password) if url.password else None), env


def tool(name: str, instead: str) -> str:
    """The path of a PostgreSQL client program, or MissingDependency saying what to run instead."""
    found = shutil.which(name)
    if found is None:
        raise MissingDependency(
            f"{name} is not on PATH, and a PostgreSQL store is backed up and restored with it. Install "
            "PostgreSQL's client programs (Debian/Ubuntu: apt-get install postgresql-client, of the "
            f"server's major version or newer) and rerun this command, or do it by hand: {instead}"
        )
    return found


def dump_command(uri: str, dest: Path, artifact_uri: str) -> str:
    """What to run by hand when ``pg_dump`` is missing (the message of :func:`tool`)."""
    conninfo = _libpq(uri)[0]
    return (
        f"pg_dump --format=custom --no-owner --no-privileges --file={dest / 'postgres.dump'} "
        f"'{conninfo}' (password from PGPASSWORD or ~/.pgpass), then copy the artifact store "
        f"{artifact_uri} to {dest / 'artifacts'}/; restore such a dump with pg_restore as "
        "docs/operations.md shows."
    )


@contextmanager
def _connect(uri: str, *, snapshot: bool = False) -> Iterator[Any]:
    from shipway.store.db import redact

    try:
        import psycopg
    except ImportError as exc:
        raise MissingDependency.for_extra("postgres", "psycopg", "A PostgreSQL store") from exc
    conninfo, password, _ = _libpq(uri)
    try:
        conn = psycopg.connect(conninfo, password=password, connect_timeout=30)
    except psycopg.Error as exc:
        raise Unavailable(
            f"Cannot use the metadata store {redact(uri)}: {' '.join(str(exc).split())} "
            "Check SHIPWAY_STORE_URI and that the database server is running and reachable."
        ) from exc
    try:
        if snapshot:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        yield conn
    finally:
        conn.rollback()
        conn.close()


def snapshot(uri: str, dest: Path, inspect: Callable[[Any, list[str]], Any], pg_dump: str) -> Any:
    """Run ``pg_dump`` into ``dest`` and ``inspect`` the store, both at one exported snapshot."""
    from shipway.store.db import redact

    conninfo, _, env = _libpq(uri)
    with _connect(uri, snapshot=True) as conn:
        exported = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        done = subprocess.run(
            [
                pg_dump,
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                "--no-password",
                f"--snapshot={exported}",
                f"--file={dest}",
                f"--dbname={conninfo}",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise Unavailable(f"pg_dump failed on {redact(uri)}: {done.stderr.strip()}")
        return inspect(conn, [r[0] for r in conn.execute(_TABLES).fetchall()])


def occupied(uri: str) -> str | None:
    """Why the database is not empty (a table with rows), or None."""
    from shipway.store.db import redact

    with _connect(uri) as conn:
        for (table,) in sorted(conn.execute(_TABLES).fetchall()):
            if table not in _BOOKKEEPING and conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():
                return f"{redact(uri)} has rows in {table}"
    return None


def restore(uri: str, dump: Path) -> None:
    """``pg_restore`` a dump in one transaction, replacing the objects it holds if they exist."""
    from shipway.store.db import redact

    conninfo, _, env = _libpq(uri)
    pg_restore = tool(
        "pg_restore",
        f"pg_restore --no-owner --no-privileges --exit-on-error --single-transaction "
        f"--dbname='{conninfo}' {dump}, then copy {dump.parent / 'artifacts'}/ into the artifact store.",
    )
    with _connect(uri) as conn:
        has_tables = conn.execute(_TABLES).fetchone() is not None
    command = [
        pg_restore,
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        "--no-password",
        f"--dbname={conninfo}",
    ]
    if has_tables:  # a created-but-empty store, or --force: drop what the dump recreates
        command += ["--clean", "--if-exists"]
    done = subprocess.run([*command, str(dump)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"pg_restore into {redact(uri)} failed and changed nothing: {done.stderr.strip()}")


def inspect_live(uri: str, inspect: Callable[[Any, list[str]], Any]) -> Any:
    """``inspect`` the database as it is now, in one snapshot."""
    with _connect(uri, snapshot=True) as conn:
        return inspect(conn, [r[0] for r in conn.execute(_TABLES).fetchall()])
