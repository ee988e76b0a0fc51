"""`shipway backup` and `shipway restore`: a consistent copy of the store, and putting it back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from shipway.cli.output import console, err_console, print_json
from shipway.core.errors import InvalidInput

_SHOWN = (
    ("runs", "run"),
    ("metrics", "metric point"),
    ("model_versions", "model version"),
    ("audit_log", "audit entry"),
)


def _local_only(command: str) -> None:
    if os.environ.get("SHIPWAY_URI"):
        raise InvalidInput(
            f"`shipway {command}` works on the store's files, but SHIPWAY_URI points this shell at the "
            f"server {os.environ['SHIPWAY_URI']}; run it on the server's host with SHIPWAY_URI unset."
        )


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    size = n / 1000
    for unit in ("kB", "MB"):
        if size < 1000:
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _count(n: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def _summary(counts: dict[str, int], artifacts: dict[str, Any]) -> str:
    parts = [_count(counts.get(table, 0), noun) for table, noun in _SHOWN]
    parts.append(f"{_count(artifacts['files'], 'artifact file')} ({_size(artifacts['bytes'])})")
    return ", ".join(parts)


def _say(text: str) -> None:
    console.print(text, soft_wrap=True)  # paths and digests stay whole, for copying


def backup(
    path: Annotated[Path, typer.Argument(help="A new folder to write the backup to.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest's summary as JSON.")] = False,
) -> None:
    """Copy the store's metadata and artifacts to PATH, consistently, while it is in use.

    SQLite is copied with its online backup API; PostgreSQL with pg_dump (which must be on PATH).
    PATH gets manifest.json with the SHA-256 of every file; keep the printed manifest digest apart
    from the backup to detect a rewritten manifest (`shipway restore --manifest-sha256`).
    """
    from shipway.store.backup import backup as take

    _local_only("backup")
    done = take(path)
    m = done.manifest
    problems = m.artifacts["missing"] + m.artifacts["corrupt"]
    if as_json:
        data = {k: v for k, v in m.to_dict().items() if k != "files"}
        print_json({"path": str(done.path), "manifest_sha256": done.manifest_sha256, **data})
    else:
        _say(
            f"Backed up {m.source['store']} (schema {m.schema_revision or 'empty'}) and "
            f"{m.source['artifacts']} to {done.path}:"
        )
        _say(f"  {_summary(m.counts, m.artifacts)}")
        _say(f"  manifest sha256 {done.manifest_sha256}")
    if problems:
        err_console.print(
            Text.assemble(
                ("Warning: ", "yellow"),
                f"{len(m.artifacts['missing'])} referenced blob(s) missing and "
                f"{len(m.artifacts['corrupt'])} corrupt in the artifact store, so not in the backup "
                f"(first: {problems[0]}); manifest.json lists them. The files they belong to cannot "
                "be restored from this backup.",
            )
        )
        raise typer.Exit(8)


def restore(
    path: Annotated[Path, typer.Argument(help="A folder written by `shipway backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a store that is not empty (stop its servers first).")
    ] = False,
    manifest_sha256: Annotated[
        str | None,
        typer.Option(help="The manifest digest `shipway backup` printed; refuse the backup if it differs."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was restored as JSON.")] = False,
) -> None:
    """Restore a backup into the configured store, which must be empty unless --force.

    Every file is checked against the manifest first; a damaged backup is refused, naming the file,
    and nothing is written. The restored audit chain is then verified and the restore recorded in it.
    """
    from shipway.store.backup import restore as put_back

    _local_only("restore")
    done = put_back(path, force=force, manifest_sha256=manifest_sha256)
    m = done.backup.manifest
    report = None
    if not done.upgrade_needed:
        from shipway.governance import audit

        report = audit.verify()
    if as_json:
        print_json(
            {
                "path": str(done.backup.path),
                "store": done.store,
                "artifacts": done.artifacts,
                "schema_revision": m.schema_revision,
                "counts": m.counts,
                "audit_seq": done.audit_seq,
                "audit": report.to_dict() if report is not None else None,
                "upgrade_needed": done.upgrade_needed,
            }
        )
    else:
        _say(
            f"Verified {len(m.files)} files against the manifest; restored the backup of "
            f"{_when(m.created_at)} (Shipway {m.shipway_version}) into {done.store} "
            f"and {done.artifacts}:"
        )
        _say(f"  {_summary(m.counts, m.artifacts)}")
        if report is not None and report.ok:
            _say(f"Audit chain OK: {report.entries} entries; entry {done.audit_seq} records this restore.")
        if done.upgrade_needed:
            _say(
                f"The backup is at schema revision {m.schema_revision}; run `shipway db upgrade`, "
                "then `shipway audit verify`."
            )
    if report is not None and not report.ok:
        from shipway.core.errors import IntegrityError

        raise IntegrityError(
            f"The restored audit chain is broken at entry {report.first_bad_seq}: {report.problem}.",
            details=report.to_dict(),
        )


def _when(ms: int) -> str:
    from shipway.cli.output import when

    return f"{when(ms)} UTC"
