"""Schema migrations with Alembic: create a fresh store, report and upgrade an old one."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shipway.core.errors import Conflict
from shipway.store.schema import SCHEMA_REVISION

MIGRATIONS = Path(__file__).parent / "migrations"


def current_revision(engine: Engine) -> str | None:
    """The revision a store is at, or None for a store with no Shipway tables yet."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Apply every migration up to ``revision``; safe to run from several processes at once."""
    from alembic import command
    from alembic.config import Config

    _refuse_newer(current_revision(engine))
    with _migration_lock(engine), engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return current_revision(engine)


def head_revision() -> str:
    """The newest revision among the migration scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None  # the package always ships at least one migration
    return head


def known_revisions() -> set[str]:
    """Every revision among this Shipway's migration scripts (a store at any other is newer)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def _refuse_newer(revision: str | None) -> None:
    # Alembic cannot step back from a revision it has no script for; say what to do instead.
    if revision is not None and revision not in known_revisions():
        raise Conflict(
            f"The metadata store is at schema revision {revision}, which this version of Shipway "
            f"(schema {SCHEMA_REVISION}) does not know: a newer Shipway upgraded it. Install that "
            "Shipway or a newer one (pip install -U shipway); there is no downgrade, other than "
            "restoring a backup taken before the upgrade."
        )


def ensure_schema(engine: Engine) -> None:
    """Create the tables of a new store; refuse an existing one at another revision."""
    revision = current_revision(engine)
    if revision is None:
        revision = upgrade(engine)
    if revision != SCHEMA_REVISION:
        _refuse_newer(revision)
        raise Conflict(
            f"The metadata store is at schema revision {revision}, but this version of Shipway "
            f"needs {SCHEMA_REVISION}. Back it up, then run `shipway db upgrade`."
        )


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    # Several processes may open a brand-new store at the same moment; only one may migrate.
    if engine.dialect.name == "sqlite":
        lock_path = Path(str(engine.url.database) + ".migrate.lock")
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(74657)"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(74657)"))
                conn.commit()
