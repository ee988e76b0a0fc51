from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def shipway_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own empty Shipway store, never ./.shipway or the server SHIPWAY_URI names."""
    home = tmp_path / "shipway"
    for name in ("SHIPWAY_URI", "SHIPWAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHIPWAY_HOME", str(home))
    monkeypatch.setenv("SHIPWAY_STORE_URI", f"sqlite:///{home / 'shipway.db'}")
    monkeypatch.setenv("SHIPWAY_ARTIFACT_URI", str(home / "artifacts"))
    return home
