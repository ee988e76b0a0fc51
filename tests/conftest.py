"""Fixtures: every test gets a fresh SHIPWAY_HOME; `store` runs a test on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import PostgresServer, S3Server, find_pg_bin

from shipway.core.config import Settings
from shipway.store import Store, reset_default_store


@pytest.fixture(autouse=True)
def shipway_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh embedded store per test, and no settings leaking in from the caller's shell."""
    for var in (
        "SHIPWAY_STORE_URI",
        "SHIPWAY_ARTIFACT_URI",
        "SHIPWAY_S3_ENDPOINT_URL",
        "SHIPWAY_EXPERIMENT",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("SHIPWAY_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    reset_default_store()
    yield home
    reset_default_store()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session; each test gets its own database."""
    if find_pg_bin() is None:
        # Every store test runs on PostgreSQL too; without it the suite is incomplete, not green.
        pytest.fail(
            "PostgreSQL is not installed: run ./scripts/test, which installs it from Debian's packages"
        )
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_uri(request: pytest.FixtureRequest, shipway_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store URI for this test's backend, also set as SHIPWAY_STORE_URI."""
    if request.param == "sqlite":
        uri = f"sqlite:///{shipway_home / 'shipway.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        uri = server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("SHIPWAY_STORE_URI", uri)
    reset_default_store()
    return uri


@pytest.fixture
def store(store_uri: str) -> Iterator[Store]:
    """An open store on SQLite or PostgreSQL (the test runs once on each)."""
    s = Store(Settings.resolve())
    yield s
    s.close()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3-protocol server on loopback."""
    server = S3Server()
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield server
    server.stop()
