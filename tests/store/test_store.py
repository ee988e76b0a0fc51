"""The Store: an engine opened now or on first use, and the read-only standard-library reader."""

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from shipway.core.config import Settings
from shipway.core.errors import Conflict
from shipway.store import Store, _sqlite_file, get_store, reset_default_store
from shipway.store.db import parse_store_uri


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///rel/shipway.db", "sqlite:////abs/shipway.db", "sqlite:///~/s.db", "sqlite:///a dir/s.db"],
)
def test_the_sqlite_file_of_a_plain_uri_is_the_one_sqlalchemy_opens(uri: str) -> None:
    assert _sqlite_file(uri) == Path(parse_store_uri(uri).database or "").expanduser()


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///s.db?timeout=3",
        "sqlite:///a%20b.db",
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite+pysqlite:///s.db",
        "postgresql://u@localhost/db",
    ],
)
def test_uris_with_options_escapes_or_other_databases_are_left_to_sqlalchemy(uri: str) -> None:
    assert _sqlite_file(uri) is None


def test_the_reader_sees_the_store_read_only_and_opens_no_engine(shipway_home: Path) -> None:
    get_store()  # creates and migrates the store
    reader = Store(Settings.resolve(), connect=False)
    with reader.sqlite_reader() as conn:
        assert conn is not None
        assert conn.execute("SELECT count(*) FROM models").fetchone() == (0,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO experiments (id, name, created_at) VALUES ('e', 'x', 1)")
    # Still no engine: a second reader is handed out as well.
    with reader.sqlite_reader() as conn:
        assert conn is not None


def test_the_reader_leaves_an_open_engine_or_another_database_to_read(store: Store) -> None:
    # The `store` fixture has opened its engine (SQLite) or is PostgreSQL: either way, read().
    with store.sqlite_reader() as conn:
        assert conn is None


def test_the_reader_never_creates_a_store(shipway_home: Path) -> None:
    reader = Store(Settings.resolve(), connect=False)
    with reader.sqlite_reader() as conn:
        assert conn is None
    assert not (shipway_home / "shipway.db").exists()


def test_a_store_at_another_revision_is_left_to_the_engine_which_refuses_it(shipway_home: Path) -> None:
    # An older revision this Shipway knows (an unknown one is a newer Shipway's: see test_db.py).
    with get_store().write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    reset_default_store()
    store = get_store(connect=False)
    with store.sqlite_reader() as conn:
        assert conn is None
    with pytest.raises(Conflict, match="shipway db upgrade"):
        get_store()


def test_a_store_got_without_connecting_connects_when_asked(shipway_home: Path) -> None:
    lazy = get_store(connect=False)
    assert not (shipway_home / "shipway.db").exists()
    assert get_store() is lazy
    assert lazy.dialect == "sqlite" and (shipway_home / "shipway.db").exists()
    with lazy.sqlite_reader() as conn:
        assert conn is None  # the engine is open now
