"""The metadata store (SQL) and the artifact store (content-addressed blobs), opened together."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from functools import cached_property

from sqlalchemy.engine import Connection, Engine

from shipway.core.config import Settings
from shipway.store import schema
from shipway.store.artifacts import Blob, BlobStore, open_blob_store, safe_destination, sha256_file
from shipway.store.db import create_engine, redact, translate_errors
from shipway.store.migrate import current_revision, ensure_schema, head_revision, upgrade

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


class Store:
    """One metadata database and one blob store, as named by :class:`Settings`."""

    def __init__(self, settings: Settings, *, create: bool = True) -> None:
        self.settings = settings
        self.uri = settings.store_uri
        # Per-process memo of ids that never change once written (experiment ids, environments).
        self.cache: dict[tuple[str, str], object] = {}
        with translate_errors(self.uri):
            self.engine: Engine = create_engine(settings.store_uri)
            try:
                if create:
                    ensure_schema(self.engine)
            except BaseException:
                self.engine.dispose()
                raise
        self._write_engine = (
            self.engine.execution_options(shipway_begin="IMMEDIATE")
            if self.engine.dialect.name == "sqlite"
            else self.engine
        )

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
        with translate_errors(self.uri), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that holds the write lock from its start and commits on success."""
        with translate_errors(self.uri), self._write_engine.begin() as conn:
            yield conn

    def describe(self) -> str:
        """The store URI with any password hidden."""
        return redact(self.uri)

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()


_default: Store | None = None
_default_key: tuple[object, ...] | None = None
_default_lock = threading.Lock()


def get_store() -> Store:
    """The process's store for the settings in force now (reopened if they change)."""
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
            _default = Store(settings)
            _default_key = key
        return _default


def reset_default_store() -> None:
    """Forget the cached default store (tests and long-lived servers switching settings)."""
    global _default, _default_key
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None
        _default_key = None
