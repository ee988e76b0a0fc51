"""The metadata store: SQLite settings, migrations, schema revision checks, bad URIs."""

from pathlib import Path

import pytest
import sqlalchemy as sa

import shipway
from shipway.core.config import Settings
from shipway.core.errors import Conflict, InvalidInput, Unavailable
from shipway.store import Store, current_revision, head_revision, reset_default_store
from shipway.store.schema import SCHEMA_REVISION


def test_code_expects_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_REVISION


def test_the_migrations_build_exactly_the_tables_the_code_declares(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from shipway.store import schema

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(shipway_home: Path) -> None:
    store = Store(Settings.resolve())
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (shipway_home / "shipway.db").exists()
    store.close()


def test_a_fresh_store_is_migrated_to_head(store: Store) -> None:
    assert current_revision(store.engine) == SCHEMA_REVISION
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"experiments", "runs", "params", "metrics", "latest_metrics", "datasets"} <= tables


def test_a_store_at_another_revision_is_refused_until_upgraded(store: Store) -> None:
    with store.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    reset_default_store()
    with pytest.raises(Conflict, match="shipway db upgrade"):
        Store(Settings.resolve())


def test_a_store_a_newer_shipway_upgraded_is_refused_saying_to_upgrade_shipway(store: Store) -> None:
    from shipway.store import upgrade

    with store.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    reset_default_store()
    for attempt in (lambda: Store(Settings.resolve()), lambda: upgrade(store.engine)):
        with pytest.raises(Conflict, match="revision 9999, which this version of Shipway") as info:
            attempt()
        assert "pip install -U shipway" in info.value.message


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("mysql://host/db", "not supported"),
        ("sqlite://", "in-memory"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_store_uris_are_refused(monkeypatch: pytest.MonkeyPatch, uri: str, message: str) -> None:
    monkeypatch.setenv("SHIPWAY_STORE_URI", uri)
    with pytest.raises(InvalidInput, match=message):
        shipway.start_run(experiment="x")


def test_unreachable_postgres_is_unavailable_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from servers import free_port

    monkeypatch.setenv("SHIPWAY_STORE_URI", f"postgresql://nobody:secret@127.0.0.1:{free_port()}/x")
    with pytest.raises(Unavailable) as info:
        shipway.start_run(experiment="x")
    assert "SHIPWAY_STORE_URI" in info.value.message
    assert "secret" not in info.value.message


def test_shipway_toml_configures_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPWAY_HOME")
    (tmp_path / "shipway.toml").write_text('[shipway]\nhome = "state"\n')
    settings = Settings.resolve()
    assert settings.home == tmp_path / "state"
    assert settings.store_uri == f"sqlite:///{tmp_path / 'state' / 'shipway.db'}"
    (tmp_path / "shipway.toml").write_text('[shipway]\nhomee = "x"\n')
    with pytest.raises(InvalidInput, match="unknown setting"):
        Settings.resolve()
    (tmp_path / "shipway.toml").write_text("[shipway\n")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        Settings.resolve()


def test_upgrading_an_older_store_keeps_its_runs(store_uri: str) -> None:
    from shipway.store import upgrade
    from shipway.store.db import create_engine

    engine = create_engine(store_uri)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO experiments (id, name, created_at) VALUES ('e1', 'old', 1)"))
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, experiment_id, name, status, start_time, lineage) "
                "VALUES ('r1', 'e1', 'before-upgrade', 'FINISHED', 1, '{}')"
            )
        )
    reset_default_store()
    with pytest.raises(Conflict, match=f"needs {SCHEMA_REVISION}"):
        Store(Settings.resolve())
    assert upgrade(engine) == SCHEMA_REVISION
    engine.dispose()
    assert shipway.get_run("r1").name == "before-upgrade"
    assert shipway.search_runs("old")[0].id == "r1"
