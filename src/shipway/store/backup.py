"""Backups of a whole store: a consistent snapshot of the metadata and of the artifacts it names.

A backup is a directory (tar it yourself to ship it as one file)::

    manifest.json    Shipway version, schema revision, row counts, the audit head, and the
                     size and SHA-256 of every other file
    shipway.db       SQLite: a copy made with SQLite's online backup API
    postgres.dump    PostgreSQL: pg_dump's custom format, from the snapshot the counts come from
    artifacts/...    the artifact store's keys: blobs under sha256/..., prediction logs and the rest

The metadata is copied first, in one read transaction that writers never wait for (SQLite in WAL
mode; a PostgreSQL snapshot exported to pg_dump); then the artifacts. A blob is stored before any
row names it and never changes afterwards, so every blob the snapshot refers to is already there
when the listing is taken; blobs written since are copied too, or not, harmlessly. Other keys are
copied as found. The backup is written under a temporary name and renamed when complete, so a
directory with a manifest is a whole backup.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipway.core.clock import iso, now_ms
from shipway.core.config import Settings
from shipway.core.errors import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    ShipwayError,
)
from shipway.store.artifacts import Backend, LocalBackend, blob_key, open_blob_store, sha256_file
from shipway.store.revision import SCHEMA_REVISION

__all__ = ["FORMAT", "MANIFEST", "Backup", "Manifest", "Restored", "backup", "restore", "verify_backup"]

FORMAT = "shipway-backup/1"
MANIFEST = "manifest.json"
SQLITE_FILE, POSTGRES_FILE = "shipway.db", "postgres.dump"
_HEX = frozenset("0123456789abcdef")
# Tables a freshly created store already fills: they do not make a store "non-empty".
_BOOKKEEPING = frozenset({"alembic_version", "audit_head"})


@dataclass(frozen=True)
class Manifest:
    """What a backup holds; ``files`` maps each path in it to its ``{"sha256", "size"}``."""

    shipway_version: str
    created_at: int
    dialect: str
    schema_revision: str | None
    source: dict[str, str]
    counts: dict[str, int]
    audit_head: dict[str, Any] | None
    artifacts: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(repr=False)
    format: str = FORMAT

    @property
    def database(self) -> str:
        """The file in the backup that holds the metadata."""
        return SQLITE_FILE if self.dialect == "sqlite" else POSTGRES_FILE

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written to ``manifest.json``."""
        return {
            "format": self.format,
            "shipway_version": self.shipway_version,
            "created_at": iso(self.created_at),
            "created_at_ms": self.created_at,
            "dialect": self.dialect,
            "schema_revision": self.schema_revision,
            "source": self.source,
            "counts": self.counts,
            "audit_head": self.audit_head,
            "artifacts": self.artifacts,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Read a manifest; InvalidInput when it is not one this Shipway can restore."""
        if data.get("format") != FORMAT:
            raise InvalidInput(
                f"The manifest's format is {data.get('format')!r}, and this Shipway reads {FORMAT!r} "
                "backups; restore it with the Shipway that wrote it."
            )
        try:
            return cls(
                shipway_version=str(data["shipway_version"]),
                created_at=int(data["created_at_ms"]),
                dialect=str(data["dialect"]),
                schema_revision=data["schema_revision"],
                source=dict(data["source"]),
                counts={str(k): int(v) for k, v in data["counts"].items()},
                audit_head=data["audit_head"],
                artifacts=dict(data["artifacts"]),
                files={str(k): dict(v) for k, v in data["files"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(
                f"The backup's {MANIFEST} is malformed ({exc!r} is wrong or missing)."
            ) from exc


@dataclass(frozen=True)
class Backup:
    """A backup on disk: where it is, its manifest, and the SHA-256 of ``manifest.json`` itself."""

    path: Path
    manifest: Manifest
    manifest_sha256: str


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` did: the backup, and the audit entry recording the restore (if any)."""

    backup: Backup
    store: str
    artifacts: str
    audit_seq: int | None
    upgrade_needed: bool


@dataclass
class _Facts:
    """What a metadata snapshot holds, read inside the snapshot's own transaction."""

    revision: str | None
    counts: dict[str, int]
    audit_head: dict[str, Any] | None
    referenced: set[str]


# -- reading a snapshot (any DB-API connection: sqlite3 or psycopg) --------------------------------


def _inspect(conn: Any, tables: Iterable[str]) -> _Facts:
    """Row counts, schema revision, audit head and referenced blob digests of ``tables``."""
    tables = sorted(tables)

    def rows(sql: str) -> list[Any]:
        return list(conn.execute(sql).fetchall())

    counts = {t: int(rows(f'SELECT COUNT(*) FROM "{t}"')[0][0]) for t in tables}
    revision = None
    if "alembic_version" in tables:
        found = rows("SELECT version_num FROM alembic_version")
        revision = found[0][0] if found else None
    head = None
    if "audit_head" in tables:
        found = rows("SELECT seq, hash FROM audit_head WHERE id = 1")
        head = {"seq": int(found[0][0]), "hash": found[0][1]} if found else None
    referenced: set[str] = set()
    if "run_artifacts" in tables:
        referenced |= {r[0] for r in rows("SELECT digest FROM run_artifacts")}
    if "datasets" in tables:
        referenced |= {r[0] for r in rows("SELECT blob_digest FROM datasets")}
    if "model_versions" in tables:
        for (manifest,) in rows("SELECT manifest FROM model_versions WHERE artifacts_deleted_at IS NULL"):
            files = json.loads(manifest) if isinstance(manifest, str) else manifest
            referenced |= {entry["digest"] for entry in files.values()}
    return _Facts(revision, counts, head, referenced)


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    return [r[0] for r in conn.execute(query)]


# -- taking a backup ---------------------------------------------------------------------------------


def backup(dest: Path | str, *, settings: Settings | None = None) -> Backup:
    """Write a consistent snapshot of the configured store (metadata and artifacts) to ``dest``.

    Safe while the server runs and writers write. ``dest`` must not exist (or be an empty folder).
    """
    import shipway

    settings = settings or Settings.resolve()
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AlreadyExists(f"{dest} already exists; back up to a new path (a backup never overwrites one).")
    blobs = open_blob_store(settings.artifact_uri, settings.s3_endpoint_url)
    if isinstance(blobs.backend, LocalBackend) and dest.resolve().is_relative_to(blobs.backend.root):
        raise InvalidInput(
            f"{dest} is inside the artifact store {blobs.uri}; back up to a folder outside it."
        )
    dialect = _dialect(settings.store_uri)
    if dialect == "postgresql":
        from shipway.store import pgdump

        pg_dump = pgdump.tool("pg_dump", pgdump.dump_command(settings.store_uri, dest, blobs.uri))
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    taken_at = now_ms()  # the snapshot's time, not the end of the copy
    try:
        if dialect == "sqlite":
            facts = _sqlite_snapshot(_sqlite_path(settings.store_uri), work / SQLITE_FILE)
        else:
            facts = pgdump.snapshot(settings.store_uri, work / POSTGRES_FILE, _inspect, pg_dump)
        database = SQLITE_FILE if dialect == "sqlite" else POSTGRES_FILE
        files = {database: _entry(work / database)}
        copied, summary = _copy_artifacts(blobs.backend, work / "artifacts", facts.referenced)
        files.update(copied)
        from shipway.store.db import redact

        manifest = Manifest(
            shipway_version=shipway.__version__,
            created_at=taken_at,
            dialect=dialect,
            schema_revision=facts.revision,
            source={"store": redact(settings.store_uri), "artifacts": blobs.uri},
            counts=facts.counts,
            audit_head=facts.audit_head,
            artifacts=summary,
            files=dict(sorted(files.items())),
        )
        text = json.dumps(manifest.to_dict(), indent=1, sort_keys=True) + "\n"
        (work / MANIFEST).write_text(text)
        _sync()
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Backup(dest, manifest, sha256_file(dest / MANIFEST).digest)


def _dialect(uri: str) -> str:
    from shipway.store.db import parse_store_uri

    return parse_store_uri(uri).get_backend_name()


def _sqlite_path(uri: str) -> Path:
    from shipway.store.db import parse_store_uri

    return Path(parse_store_uri(uri).database or "").expanduser()


def _sqlite_snapshot(src: Path, dest: Path) -> _Facts:
    if not src.is_file():
        raise NotFound(
            f"There is no SQLite store at {src}, so nothing to back up. `shipway doctor` says which "
            "store this shell uses (SHIPWAY_HOME, SHIPWAY_STORE_URI)."
        )
    source = sqlite3.connect(src, timeout=120)
    try:
        target = sqlite3.connect(dest)
        try:
            # One step copies every page inside a single read transaction: one point in time. In WAL
            # mode that transaction never blocks writers, and their commits do not restart the copy.
            source.backup(target, pages=-1)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            problems = [r[0] for r in target.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise IntegrityError(
                    f"The SQLite store {src} fails its integrity check ({'; '.join(problems[:3])}); "
                    "this backup would carry the damage. Restore an earlier backup.",
                    details={"integrity_check": problems[:100]},
                )
            return _inspect(target, _sqlite_tables(target))
        finally:
            target.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"Cannot back up {src}: {exc} (is it a Shipway SQLite store?).") from exc
    finally:
        source.close()


def _digest_of(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "sha256" and len(parts[1]) == 2 and len(parts[2]) == 62:
        digest = parts[1] + parts[2]
        return digest if set(digest) <= _HEX else None
    return None


def _copy_artifacts(
    backend: Backend, root: Path, referenced: set[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Copy every key of the artifact store; check each blob against its digest on the way."""
    keys = list(backend.list())
    listed = {_digest_of(k) for k in keys} - {None}
    # A referenced blob is always listed (it was stored before the snapshot); look up any that is not.
    keys += [blob_key(d) for d in sorted(referenced - listed)]

    def copy(key: str) -> tuple[str, dict[str, Any] | None, str | None]:
        digest = _digest_of(key)
        target = root / key
        if ".." in Path(key).parts or Path(key).is_absolute():
            return key, None, "skipped"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial")
        try:
            backend.get(key, tmp)
        except (OSError, ShipwayError):
            # Gone since the listing (an archived version's files deleted), or never there.
            tmp.unlink(missing_ok=True)
            return key, None, "missing" if digest in referenced else "skipped"
        blob = sha256_file(tmp)
        if digest is not None and blob.digest != digest:
            tmp.unlink()
            return key, None, "corrupt"
        os.replace(tmp, target)
        return key, {"sha256": blob.digest, "size": blob.size}, None

    files: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {"missing": [], "corrupt": [], "skipped": []}
    # A few threads hide an object store's latency; a local folder gains little but loses nothing.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for key, entry, problem in pool.map(copy, keys):
            if entry is not None:
                files[f"artifacts/{key}"] = entry
            else:
                problems[problem or "skipped"].append(key)
    blob_count = sum(1 for k in files if _digest_of(k.removeprefix("artifacts/")))
    summary = {
        "files": len(files),
        "blobs": blob_count,
        "bytes": sum(e["size"] for e in files.values()),
        "referenced_blobs": len(referenced),
        "missing": sorted(problems["missing"]),
        "corrupt": sorted(problems["corrupt"]),
        "skipped": len(problems["skipped"]),
    }
    return files, summary


def _entry(path: Path) -> dict[str, Any]:
    blob = sha256_file(path)
    return {"sha256": blob.digest, "size": blob.size}


def _sync() -> None:
    # The rename that publishes a backup must not outlive the bytes it publishes after a power cut.
    os.sync()


# -- checking and restoring a backup -----------------------------------------------------------------


def verify_backup(path: Path | str, *, manifest_sha256: str | None = None) -> Backup:
    """Check every file of a backup against its manifest; IntegrityError names the files that differ.

    ``manifest_sha256`` (printed by ``shipway backup``), when given, must match ``manifest.json``:
    the checksums inside it catch damage, the one kept apart catches a rewritten manifest.
    """
    from shipway.store.artifacts import safe_destination

    path = Path(path).expanduser().absolute()
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise NotFound(f"There is no backup at {path}: give the folder `shipway backup` wrote.")
    if not manifest_path.is_file():
        raise InvalidInput(
            f"{path} has no {MANIFEST}: it is not a Shipway backup, or one that never finished."
        )
    digest = sha256_file(manifest_path).digest
    if manifest_sha256 is not None and digest != manifest_sha256.strip().lower():
        raise IntegrityError(
            f"{manifest_path} hashes to {digest}, not to the {manifest_sha256} recorded when the backup "
            "was taken: the manifest was altered. Nothing was restored; use another backup.",
            details={"file": MANIFEST, "expected": manifest_sha256, "actual": digest},
        )
    try:
        data = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(
            f"{manifest_path} is not valid JSON (truncated or altered): {exc}. Nothing was restored.",
            details={"file": MANIFEST},
        ) from exc
    if not isinstance(data, dict):
        raise IntegrityError(f"{manifest_path} is not a Shipway manifest.", details={"file": MANIFEST})
    manifest = Manifest.from_dict(data)
    if manifest.dialect not in ("sqlite", "postgresql") or manifest.database not in manifest.files:
        raise InvalidInput(f"The manifest of {path} names no metadata file ({manifest.database}).")

    def check(item: tuple[str, dict[str, Any]]) -> tuple[str, str] | None:
        rel, entry = item
        file = safe_destination(path, rel)
        digest = _digest_of(rel.removeprefix("artifacts/")) if rel.startswith("artifacts/") else None
        if digest is not None and entry.get("sha256") != digest:
            return rel, "is a blob whose manifest entry names another digest"
        if not file.is_file():
            return rel, "is missing"
        size = file.stat().st_size
        if size != entry.get("size"):
            return rel, f"has {size} bytes where the manifest says {entry.get('size')} (truncated?)"
        if sha256_file(file).digest != entry.get("sha256"):
            return rel, "does not match its SHA-256 in the manifest (altered or corrupted)"
        return None

    # hashlib lets go of the GIL on large buffers, so a few threads hash a few files at once.
    with ThreadPoolExecutor(max_workers=4) as pool:
        bad = [found for found in pool.map(check, sorted(manifest.files.items())) if found]
    if bad:
        rel, problem = bad[0]
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        raise IntegrityError(
            f"The backup {path} is damaged: {rel} {problem}{more}. Nothing was restored; use another backup.",
            details={"files": [{"file": f, "problem": p} for f, p in bad]},
        )
    return Backup(path, manifest, digest)


def restore(
    src: Path | str,
    *,
    settings: Settings | None = None,
    force: bool = False,
    manifest_sha256: str | None = None,
) -> Restored:
    """Restore a backup into the configured store, which must be empty unless ``force``.

    Every file is checked against the manifest before anything is written. Artifacts go first, the
    metadata that names them last. A restore at this Shipway's schema revision is recorded in the
    audit log (``store.restored``) after the restored chain's head is checked against the manifest.
    """
    from shipway.store import reset_default_store
    from shipway.store.db import redact

    settings = settings or Settings.resolve()
    found = verify_backup(src, manifest_sha256=manifest_sha256)
    manifest = found.manifest
    dialect = _dialect(settings.store_uri)
    if manifest.dialect != dialect:
        raise Conflict(
            f"The backup holds a {manifest.dialect} store, and the configured store "
            f"{redact(settings.store_uri)} is {dialect}: restore it into a {manifest.dialect} store "
            "(see SHIPWAY_STORE_URI). A restore does not move data between SQLite and PostgreSQL."
        )
    _check_revision(manifest)
    blobs = open_blob_store(settings.artifact_uri, settings.s3_endpoint_url)
    if dialect == "postgresql":
        from shipway.store import pgdump

        occupied = pgdump.occupied(settings.store_uri)
    else:
        occupied = _sqlite_occupied(_sqlite_path(settings.store_uri))
    if occupied is None:
        first = next(iter(blobs.backend.list()), None)
        occupied = None if first is None else f"the artifact store {blobs.uri} holds files ({first}, ...)"
    if occupied is not None and not force:
        raise Conflict(
            f"Refusing to restore over a store that is not empty: {occupied}. Restore into an empty "
            "SHIPWAY_HOME (or empty database and artifact location), or pass --force to replace it "
            "(stop every server and job using it first)."
        )
    reset_default_store()  # this process must not keep writing to the store being replaced
    _put_artifacts(blobs.backend, found)
    if dialect == "postgresql":
        from shipway.store import pgdump

        pgdump.restore(settings.store_uri, found.path / POSTGRES_FILE)
        facts = pgdump.inspect_live(settings.store_uri, _inspect)
    else:
        target = _sqlite_path(settings.store_uri)
        _sqlite_restore(found.path / SQLITE_FILE, target)
        conn = sqlite3.connect(target)
        try:
            facts = _inspect(conn, _sqlite_tables(conn))
        finally:
            conn.close()
    _check_restored(manifest, facts)
    audit_seq = None
    upgrade_needed = manifest.schema_revision not in (None, SCHEMA_REVISION)
    if not upgrade_needed:
        from shipway.store import Store, audit

        store = Store(settings)
        try:
            with store.write() as conn:
                audit_seq = audit.append(
                    conn,
                    "store.restored",
                    "store",
                    {
                        "backup_taken_at": iso(manifest.created_at),
                        "backup_shipway_version": manifest.shipway_version,
                        "backup_audit_head": (manifest.audit_head or {}).get("seq", 0),
                        "manifest_sha256": found.manifest_sha256,
                    },
                )
        finally:
            store.close()
    return Restored(found, redact(settings.store_uri), blobs.uri, audit_seq, upgrade_needed)


def _check_revision(manifest: Manifest) -> None:
    from shipway.store.migrate import known_revisions

    revision = manifest.schema_revision
    if revision is not None and revision not in known_revisions():
        raise Conflict(
            f"The backup was taken by Shipway {manifest.shipway_version} at schema revision {revision}, "
            f"which this Shipway (schema {SCHEMA_REVISION}) does not know. Restore it with Shipway "
            f"{manifest.shipway_version} or newer (pip install -U shipway)."
        )


def _sqlite_occupied(path: Path) -> str | None:
    """Why the SQLite store at ``path`` is not empty, or None when it is (or does not exist)."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, timeout=120)
        try:
            for table in sorted(set(_sqlite_tables(conn)) - _BOOKKEEPING):
                if conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():
                    return f"{path} has rows in {table}"
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return f"{path} exists and is not a SQLite database"
    return None


def _put_artifacts(backend: Backend, found: Backup) -> None:
    def put(rel: str) -> None:
        backend.put(rel.removeprefix("artifacts/"), found.path / rel)

    keys = [rel for rel in found.manifest.files if rel.startswith("artifacts/")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(put, keys))


def _sqlite_restore(src: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # A write-ahead log left from the old database would be replayed onto the restored one.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _check_restored(manifest: Manifest, facts: _Facts) -> None:
    differ = sorted(
        t for t in set(manifest.counts) | set(facts.counts) if manifest.counts.get(t) != facts.counts.get(t)
    )
    if differ:
        t = differ[0]
        raise IntegrityError(
            f"The restored store has {facts.counts.get(t)} rows in {t} where the backup's manifest says "
            f"{manifest.counts.get(t)}; the restore did not complete. Restore again with --force.",
            details={"tables": differ},
        )
    if facts.audit_head != manifest.audit_head:
        raise IntegrityError(
            f"The restored audit head {facts.audit_head} differs from the backup's {manifest.audit_head}.",
        )
