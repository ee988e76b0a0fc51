"""Where Shipway keeps things: resolved from the environment, then ``shipway.toml``, then defaults.

| setting        | environment variable     | ``shipway.toml`` key | default                         |
| -------------- | ------------------------ | -------------------- | ------------------------------- |
| home           | ``SHIPWAY_HOME``         | ``home``             | ``./.shipway``                  |
| store URI      | ``SHIPWAY_STORE_URI``    | ``store_uri``        | ``sqlite:///<home>/shipway.db`` |
| artifact URI   | ``SHIPWAY_ARTIFACT_URI`` | ``artifact_uri``     | ``<home>/artifacts``            |
| S3 endpoint    | ``SHIPWAY_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``) | ``s3_endpoint_url`` | AWS |
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from shipway.core.errors import InvalidInput

CONFIG_FILE = "shipway.toml"
_KEYS = ("home", "store_uri", "artifact_uri", "s3_endpoint_url")


@dataclass(frozen=True)
class Settings:
    """The resolved locations of the metadata store and the artifact store."""

    home: Path
    store_uri: str
    artifact_uri: str
    s3_endpoint_url: str | None = None
    source: str = "defaults"

    @classmethod
    def resolve(cls, cwd: Path | None = None) -> Settings:
        """Read the settings in force for a process started in ``cwd``."""
        cwd = Path.cwd() if cwd is None else cwd
        file_values = _read_config_file(cwd / CONFIG_FILE)
        sources = []
        if file_values:
            sources.append(str(cwd / CONFIG_FILE))

        def pick(key: str, env: str) -> str | None:
            if os.environ.get(env):
                sources.append(env)
                return os.environ[env]
            return file_values.get(key)

        home_value = pick("home", "SHIPWAY_HOME") or ".shipway"
        home = Path(home_value).expanduser()
        if not home.is_absolute():
            home = (cwd / home).resolve()
        store_uri = pick("store_uri", "SHIPWAY_STORE_URI") or f"sqlite:///{home / 'shipway.db'}"
        artifact_uri = pick("artifact_uri", "SHIPWAY_ARTIFACT_URI") or str(home / "artifacts")
        endpoint = pick("s3_endpoint_url", "SHIPWAY_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        return cls(
            home=home,
            store_uri=store_uri,
            artifact_uri=artifact_uri,
            s3_endpoint_url=endpoint or None,
            source=", ".join(dict.fromkeys(sources)) or "defaults",
        )


def _read_config_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid TOML ({exc}); fix or remove it.") from exc
    section = data.get("shipway", data)
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise InvalidInput(
            f"{path} has unknown setting(s) {', '.join(unknown)}; known settings are {', '.join(_KEYS)}."
        )
    for key, value in section.items():
        if not isinstance(value, str):
            raise InvalidInput(f"{path}: setting '{key}' must be a string, not {value!r}.")
    return dict(section)
