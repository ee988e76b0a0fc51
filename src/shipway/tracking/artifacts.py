"""Run artifacts: files stored by content digest, listed in a per-run manifest (path -> digest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.errors import InvalidInput, NotFound
from shipway.store import Store, safe_destination, schema
from shipway.store.db import insert_for


@dataclass(frozen=True)
class ArtifactEntry:
    """One file of a run's artifact manifest."""

    path: str
    digest: str
    size: int


def clean_artifact_path(path: str) -> str:
    """A relative POSIX path inside the run's artifact tree; refuses escapes such as '..'."""
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or str(p) in (".", ""):
        raise InvalidInput(
            f"Artifact path {path!r} must be relative and stay inside the run, for example 'plots/roc.png'."
        )
    return str(p)


def artifact_files(local_path: str | Path, artifact_path: str | None = None) -> list[tuple[Path, str]]:
    """(local file, artifact path) for a file, or for every file under a folder."""
    src = Path(local_path)
    if src.is_file():
        files = [(src, clean_artifact_path(artifact_path or src.name))]
    elif src.is_dir():
        prefix = clean_artifact_path(artifact_path) + "/" if artifact_path else ""
        files = [
            (f, clean_artifact_path(prefix + f.relative_to(src).as_posix()))
            for f in sorted(src.rglob("*"))
            if f.is_file()
        ]
        if not files:
            raise InvalidInput(f"Folder {src} holds no files to log as artifacts.")
    else:
        raise NotFound(f"Cannot log artifact {src}: no such file or folder.")
    return files


def log_artifact(
    store: Store, run_id: str, local_path: str | Path, artifact_path: str | None = None
) -> list[ArtifactEntry]:
    """Store a file, or every file under a folder, and add them to the run's manifest."""
    entries = []
    for path, name in artifact_files(local_path, artifact_path):
        blob = store.blobs.put_file(path)
        entries.append(ArtifactEntry(name, blob.digest, blob.size))
    record_artifacts(store, run_id, entries)
    return entries


def record_artifacts(store: Store, run_id: str, entries: list[ArtifactEntry]) -> None:
    """Add stored blobs to a run's manifest (a path logged again points at its new content)."""
    t = schema.run_artifacts
    insert = insert_for(store.dialect)
    stmt = insert(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.run_id, t.c.path],
        set_={
            "digest": stmt.excluded.digest,
            "size": stmt.excluded.size,
            "logged_at": stmt.excluded.logged_at,
        },
    )
    now = now_ms()
    with store.write() as conn:
        conn.execute(
            stmt,
            [
                {
                    "run_id": run_id,
                    "path": e.path,
                    "digest": e.digest,
                    "size": e.size,
                    "logged_at": now,
                }
                for e in entries
            ],
        )


def list_artifacts(store: Store, run_id: str) -> list[ArtifactEntry]:
    """A run's manifest, sorted by path."""
    t = schema.run_artifacts
    with store.read() as conn:
        rows = conn.execute(
            sa.select(t.c.path, t.c.digest, t.c.size).where(t.c.run_id == run_id).order_by(t.c.path)
        ).all()
    return [ArtifactEntry(*row) for row in rows]


def download_artifacts(store: Store, run_id: str, dest: str | Path, path: str | None = None) -> list[Path]:
    """Copy a run's artifacts (or those under ``path``) to ``dest``, verifying every digest."""
    entries = list_artifacts(store, run_id)
    if not entries:
        with store.read() as conn:
            if conn.execute(sa.select(schema.runs.c.id).where(schema.runs.c.id == run_id)).first() is None:
                raise NotFound(f"No run with id {run_id!r}.")
    if path is not None:
        wanted = clean_artifact_path(path)
        entries = [e for e in entries if e.path == wanted or e.path.startswith(wanted + "/")]
        if not entries:
            raise NotFound(f"Run {run_id} has no artifact at {wanted!r}.")
    dest = Path(dest)
    return [store.blobs.get_file(e.digest, safe_destination(dest, e.path)) for e in entries]
