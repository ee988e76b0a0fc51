"""Loading a registered version: verify every digest, scan for pickles, then hand to its flavor."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shipway.core.errors import InvalidInput
from shipway.registry import integrity
from shipway.registry.flavors import get_flavor
from shipway.registry.signature import as_frame, validate
from shipway.registry.versions import ModelVersion, get_version, materialize
from shipway.store import Store, get_store

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[a-z][a-z0-9_-]*)|/latest)?$")


def parse_model_uri(uri: str) -> tuple[str, int | None, str | None]:
    """(name, version, alias) from ``models:/name/3``, ``models:/name@alias`` or ``models:/name``."""
    m = _URI.match(uri.strip()) if isinstance(uri, str) else None
    if m is None:
        raise InvalidInput(
            f"{uri!r} is not a model URI; use models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME."
        )
    version = int(m["version"]) if m["version"] else None
    return m["name"], version, m["alias"]


def resolve(uri: str, *, store: Store | None = None) -> ModelVersion:
    """The version a model URI names."""
    name, version, alias = parse_model_uri(uri)
    store = store or get_store(connect=False)
    # A new process reading a SQLite store skips the engine (see Store.sqlite_reader). Whatever
    # that read cannot answer, or fails at, get_version answers or explains as always.
    with contextlib.suppress(sqlite3.Error), store.sqlite_reader() as conn:
        found = read_sqlite_version(conn, name, version, alias) if conn is not None else None
        if found is not None:
            return found
    return get_version(name, version, alias=alias, store=store)


# The standard-library form of versions.get_version's queries; a test checks that both read the
# same ModelVersion from the same store.
_COLUMNS = tuple(f.name for f in fields(ModelVersion) if f.name not in ("name", "aliases"))
_JSON_COLUMNS = ("flavor_meta", "manifest", "schema", "lineage", "tags", "card")
_SQL_MODEL_ID = "SELECT id FROM models WHERE name = ?"
_SQL_ALIAS = "SELECT version FROM model_aliases WHERE model_id = ? AND alias = ?"
_SQL_VERSIONS = f"SELECT {', '.join(_COLUMNS)} FROM model_versions WHERE model_id = ?"
_SQL_VERSION = _SQL_VERSIONS + " AND version = ?"
_SQL_NEWEST = _SQL_VERSIONS + " ORDER BY version DESC LIMIT 1"
_SQL_ALIASES_OF = "SELECT alias FROM model_aliases WHERE model_id = ? AND version = ? ORDER BY alias"


def read_sqlite_version(
    conn: sqlite3.Connection, name: str, version: int | None, alias: str | None
) -> ModelVersion | None:
    """A version by number, by alias or the newest, read with ``sqlite3``; None if there is none."""
    model = conn.execute(_SQL_MODEL_ID, (name,)).fetchone()
    if model is None:
        return None
    if alias is not None:
        target = conn.execute(_SQL_ALIAS, (model[0], alias)).fetchone()
        if target is None:
            return None
        version = target[0]
    if version is None:
        row = conn.execute(_SQL_NEWEST, (model[0],)).fetchone()
    else:
        row = conn.execute(_SQL_VERSION, (model[0], version)).fetchone()
    if row is None:
        return None
    values = dict(zip(_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        if values[column] is not None:
            values[column] = json.loads(values[column])
    values["schema"] = values["schema"] or None
    aliases = [a for (a,) in conn.execute(_SQL_ALIASES_OF, (model[0], values["version"]))]
    return ModelVersion(name=name, aliases=aliases, **values)


@dataclass
class LoadedModel:
    """A loaded version: ``predict`` validates input against the signature first."""

    version: ModelVersion
    model: Any = field(repr=False)

    def _input(self, data: Any) -> Any:
        signature = self.version.model_signature
        if signature is None:
            return as_frame(data)
        frame = validate(data, signature)
        return frame.to_numpy() if signature.input_kind == "ndarray" else frame

    def predict(self, data: Any) -> Any:
        """Predictions for a DataFrame (or records / dict of columns), checked against the signature."""
        return self.model.predict(self._input(data))

    def predict_proba(self, data: Any) -> Any:
        """Class probabilities, for classifiers whose flavor offers them."""
        method = getattr(self.model, "predict_proba", None)
        if method is None:
            raise InvalidInput(f"{self.version.uri} ({self.version.flavor}) does not give probabilities.")
        return method(self._input(data))


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found for one version."""

    uri: str
    files: dict[str, str]  # path -> "ok" | "mismatch" | "missing"
    manifest_ok: bool
    signed: bool
    signature_ok: bool | None
    signing_key: str | None

    @property
    def ok(self) -> bool:
        return (
            self.manifest_ok
            and all(v == "ok" for v in self.files.values())
            and self.signature_ok is not False
        )


def _check_signable(version: ModelVersion, public_key: str | Path) -> None:
    """Refuse a signature check that cannot happen: no key file, or an unsigned version."""
    from shipway.core.errors import IntegrityError, NotFound

    if not Path(public_key).is_file():
        raise NotFound(f"No public key at {public_key}.")
    if not version.signed:
        raise IntegrityError(
            f"{version.uri} is not signed, so a public key has nothing to check. Sign it with "
            f"`shipway models sign {version.name} {version.version} --key PRIVATE_KEY`."
        )


def verify_version(
    version: ModelVersion, public_key: str | Path | None = None, *, store: Store | None = None
) -> VerifyReport:
    """Recompute every file digest and the manifest digest, and check the signature when a key is given."""
    from shipway.core.errors import IntegrityError, NotFound

    store = store or get_store()
    if public_key is not None:
        _check_signable(version, public_key)
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel, entry in sorted(version.manifest.items()):
            try:
                store.blobs.get_file(entry["digest"], Path(tmp) / "f")
                files[rel] = "ok"
            except IntegrityError:
                files[rel] = "mismatch"
            except NotFound:
                files[rel] = "missing"
    payload = version.payload()
    manifest_ok = integrity.manifest_digest(payload) == version.manifest_digest
    signature_ok = None
    if version.signature is not None and public_key is not None:
        signature_ok = integrity.verify_signature(payload, version.signature, Path(public_key))
    return VerifyReport(version.uri, files, manifest_ok, version.signed, signature_ok, version.signing_key)


def load_model(
    uri: str, *, trust: bool = False, public_key: str | Path | None = None, store: Store | None = None
) -> LoadedModel:
    """Load ``models:/name@alias`` or ``models:/name/3`` with digests verified and pickles scanned."""
    from shipway.client.mode import remote_client

    client = remote_client(store)
    if client is not None:
        return client.load_model(uri, trust=trust, public_key=public_key)
    store = store or get_store(connect=False)
    version = resolve(uri, store=store)
    check_before_load(version, public_key)
    tmp = tempfile.TemporaryDirectory(prefix="shipway-load-")
    try:
        folder = materialize(version, Path(tmp.name) / "model", store=store)
        model = load_folder(version, folder, trust=trust)
    finally:
        tmp.cleanup()
    return LoadedModel(version, model)


def check_before_load(version: ModelVersion, public_key: str | Path | None) -> None:
    """Refuse a version whose manifest was altered, or whose signature ``public_key`` rejects."""
    from shipway.core.errors import IntegrityError

    payload = version.payload()
    if integrity.manifest_digest(payload) != version.manifest_digest:
        raise IntegrityError(
            f"The manifest of {version.uri} was altered in the metadata store: it no longer matches its "
            "recorded digest. Do not use this version."
        )
    if public_key is not None:
        _check_signable(version, public_key)
        if not integrity.verify_signature(payload, version.signature or "", Path(public_key)):
            raise IntegrityError(f"The signature of {version.uri} does not verify with {public_key}.")


def load_folder(version: ModelVersion, folder: Path, *, trust: bool) -> Any:
    """The model in ``folder`` (a verified copy of the version's files), pickles refused unless trusted."""
    if not trust:
        integrity.refuse_unsafe_pickles(folder, version.uri, version.format)
    return get_flavor(version.flavor).load(folder, version.flavor_meta, trust=trust)
