"""The metadata store (SQL) and the artifact store (content-addressed blobs), opened together.

Importing this package does not import SQLAlchemy (~0.3 s on a small machine): the engine code
is imported when a store opens its engine, and ``schema``, ``current_revision``,
``head_revision`` and ``upgrade`` on first use.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipway.core.config import Settings
from shipway.store.artifacts import Blob, BlobStore, open_blob_store, safe_destination, sha256_file
from shipway.store.revision import SCHEMA_REVISION

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from shipway.store import schema
    from shipway.store.migrate import current_revision, head_revision, upgrade

__all__ = [
    "Blob",
    "BlobStore",
    "Store",
    "current_revision",
    "get_store",
    "head_revision",
    "open_blob_store",
    "reset_default_store",
    "safe_destination",
    "schema",
    "sha256_file",
    "upgrade",
]

_LAZY = {
    "schema": ("shipway.store.schema", None),
    "current_revision": ("shipway.store.migrate", "current_revision"),
    "head_revision": ("shipway.store.migrate", "head_revision"),
    "upgrade": ("shipway.store.migrate", "upgrade"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError(f"module 'shipway.store' has no attribute {name!r}")


class Store:
    """One metadata database and one blob store, as named by :class:`Settings`.

    The database engine opens when the store is made (creating or checking the schema), or with
    ``connect=False`` on first use, so that a model load that reads its version through
    :meth:`sqlite_reader` never opens it.
    """

    def __init__(self, settings: Settings, *, create: bool = True, connect: bool = True) -> None:
        self.settings = settings
        self.uri = settings.store_uri
        # Per-process memo of ids that never change once written (experiment ids, environments).
        self.cache: dict[tuple[str, str], object] = {}
        self._create = create
        self._engine: Engine | None = None
        self._opening = threading.Lock()
        if connect:
            self.connect()

    def connect(self) -> Engine:
        """The engine, opened now if it is not open yet."""
        with self._opening:
            if self._engine is None:
                from shipway.store.db import create_engine, translate_errors
                from shipway.store.migrate import ensure_schema

                with translate_errors(self.uri):
                    engine = create_engine(self.uri)
                    try:
                        if self._create:
                            ensure_schema(engine)
                    except BaseException:
                        engine.dispose()
                        raise
                self._engine = engine
            return self._engine

    @property
    def engine(self) -> Engine:
        return self._engine if self._engine is not None else self.connect()

    @cached_property
    def _write_engine(self) -> Engine:
        engine = self.engine
        return engine.execution_options(shipway_begin="IMMEDIATE") if self.dialect == "sqlite" else engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @cached_property
    def blobs(self) -> BlobStore:
        """The artifact store, opened on first use."""
        return open_blob_store(self.settings.artifact_uri, self.settings.s3_endpoint_url)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading; on SQLite it never blocks or is blocked by writers."""
        from shipway.store.db import translate_errors

        with translate_errors(self.uri), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that holds the write lock from its start and commits on success."""
        from shipway.store.db import translate_errors

        with translate_errors(self.uri), self._write_engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def sqlite_reader(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only ``sqlite3`` connection in one read transaction, or None to use :meth:`read`.

        A new process that loads a model needs a few rows. The engine costs SQLAlchemy's import
        (unless something else needed it), an engine and a schema check; ``sqlite3`` costs about a
        millisecond. The file is opened with ``mode=ro``, so this path can never create, migrate
        or change a store. It yields None, leaving the work to :meth:`read` (which creates, checks
        or refuses the store as always), when the engine is already open, the store is not a
        ``sqlite:///`` file that exists, or its schema is at another revision.
        """
        path = _sqlite_file(self.uri) if self._engine is None else None
        conn = None
        if path is not None and path.is_file():
            try:
                conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
                conn.execute("BEGIN")  # every read sees the same snapshot, as in read()
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.Error:
                row = None
            if row is None or row[0] != SCHEMA_REVISION:
                if conn is not None:
                    conn.close()
                conn = None
        try:
            yield conn
        finally:
            if conn is not None:
                conn.close()

    def describe(self) -> str:
        """The store URI with any password hidden."""
        from shipway.store.db import redact

        return redact(self.uri)

    def close(self) -> None:
        """Release pooled connections."""
        if self._engine is not None:
            self._engine.dispose()


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a plain ``sqlite:///PATH`` URI; None for any other URI.

    URIs with options or escapes are left to SQLAlchemy's parser (a test checks the two agree).
    """
    prefix = "sqlite:///"
    database = uri[len(prefix) :] if uri.startswith(prefix) else ""
    if not database or database == ":memory:" or any(c in database for c in "?#%"):
        return None
    return Path(database).expanduser()


_default: Store | None = None
_default_key: tuple[object, ...] | None = None
_default_lock = threading.Lock()


def get_store(*, connect: bool = True) -> Store:
    """The process's store for the settings in force now (reopened if they change).

    With ``connect=False`` its engine opens on first use instead of now.
    """
    global _default, _default_key
    from shipway.client.mode import remote_client

    if remote_client() is not None:
        # A call that has no remote form must not quietly write to a local store instead.
        from shipway.core.errors import InvalidInput

        raise InvalidInput(
            f"This operation works on the store directly, but SHIPWAY_URI points this process at the "
            f"server {os.environ['SHIPWAY_URI']}; run it where the server runs, or unset SHIPWAY_URI."
        )
    settings = Settings.resolve()
    key = (settings, os.getpid())
    with _default_lock:
        if _default is None or _default_key != key:
            if _default is not None and _default_key is not None and _default_key[1] == os.getpid():
                _default.close()
            _default = Store(settings, connect=connect)
            _default_key = key
        store = _default
    if connect:
        store.connect()
    return store


def reset_default_store() -> None:
    """Forget the cached default store (tests and long-lived servers switching settings)."""
    global _default, _default_key
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None
        _default_key = None
