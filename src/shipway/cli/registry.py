"""`shipway models …`: list, show, card, verify, keygen, sign, alias, archive, delete-artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shipway.cli.output import console, ok, print_json, when
from shipway.core.errors import IntegrityError
from shipway.registry import (
    archive_version,
    check_deletable,
    delete_alias,
    delete_artifacts,
    generate_keypair,
    get_version,
    list_models,
    list_versions,
    missing_fields,
    render_card,
    set_alias,
    sign_version,
    verify_version,
    version_history,
)

models_app = typer.Typer(
    help="Registered models: inspect, verify, sign and manage versions.", no_args_is_help=True
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Name = Annotated[str, typer.Argument(help="Model name.")]
Version = Annotated[int, typer.Argument(help="Version number.")]


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """List registered models with their latest version and aliases."""
    models = list_models()
    if as_json:
        print_json(
            [
                {"name": m.name, "versions": m.versions, "latest": m.latest, "aliases": m.aliases}
                for m in models
            ]
        )
        return
    if not models:
        console.print("No models registered yet. Register one with shipway.register_model(model, name=...).")
        return
    table = Table("name", "versions", "latest", "aliases", "created (UTC)")
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())) or "-"
        table.add_row(m.name, str(m.versions), str(m.latest), aliases, when(m.created_at))
    console.print(table)


@models_app.command("show")
def models_show(
    name: Name,
    version: Annotated[int | None, typer.Option("--version", "-v", help="Version (default: newest).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a version: lineage, datasets, environment, metrics, signature, digests, aliases."""
    v = get_version(name, version)
    if as_json:
        from dataclasses import asdict

        print_json({**asdict(v), "uri": v.uri, "card_missing": missing_fields(v)})
        return
    lin = v.lineage
    git = lin.get("git") or {}
    env = lin.get("environment") or {}
    overview = Table(title=f"{v.name} version {v.version}", title_justify="left", show_header=False)
    overview.add_column(style="bold")
    overview.add_column()
    rows = {
        "status": v.status,
        "aliases": ", ".join(v.aliases) or "-",
        "flavor / format": f"{v.flavor} / {v.format}",
        "registered": f"{when(v.created_at)} by {v.created_by or '?'}",
        "run": lin.get("run_id") or "missing",
        "git commit": (git.get("commit") or "missing") + (" (dirty)" if git.get("dirty") else ""),
        "environment": f"{env.get('hash', 'missing')} ({env.get('packages', '?')} packages)",
        "python": lin.get("python") or "?",
        "artifact digest": v.manifest_digest,
        "signature": f"signed by key {v.signing_key}" if v.signed else "unsigned",
        "missing lineage": ", ".join(lin.get("missing") or []) or "none",
        "model card": "missing " + ", ".join(missing_fields(v)) if missing_fields(v) else "complete",
    }
    for key, value in rows.items():
        overview.add_row(key, value)
    console.print(overview)
    if lin.get("datasets"):
        table = Table(
            "role", "dataset", "version", "rows", "content hash", title="datasets", title_justify="left"
        )
        for d in lin["datasets"]:
            table.add_row(d["role"], d["name"], str(d["version"]), str(d["num_rows"]), d["content_hash"])
        console.print(table)
    if lin.get("metrics"):
        table = Table("metric", "value", title="metrics (from the run)", title_justify="left")
        for key, value in sorted(lin["metrics"].items()):
            table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
        console.print(table)
    if v.schema:
        table = Table("input", "type", "nullable", "categories", title="signature", title_justify="left")
        for col in v.schema["inputs"]:
            table.add_row(
                col["name"],
                col["type"],
                "yes" if col["nullable"] else "no",
                ", ".join(col.get("categories") or []) or "-",
            )
        console.print(table)
    files = Table("file", "size", "sha256", title="artifacts", title_justify="left")
    for rel, entry in sorted(v.manifest.items()):
        files.add_row(rel, str(entry["size"]), entry["digest"])
    console.print(files)


@models_app.command("versions")
def models_versions(name: Name) -> None:
    """List every version of a model."""
    table = Table("version", "status", "aliases", "flavor", "run", "registered (UTC)")
    for v in list_versions(name):
        table.add_row(
            str(v.version),
            v.status,
            ", ".join(v.aliases) or "-",
            v.flavor,
            (v.run_id or "-")[:12],
            when(v.created_at),
        )
    console.print(table)


@models_app.command("card")
def models_card(
    name: Name,
    version: Version,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of printing.")
    ] = None,
) -> None:
    """Write the model card of a version as Markdown."""
    text = render_card(get_version(name, version))
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"Wrote {out}")


@models_app.command("verify")
def models_verify(
    name: Name,
    version: Version,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Check the signature with this key.")
    ] = None,
) -> None:
    """Recompute every artifact digest and the manifest digest, and check the signature."""
    report = verify_version(get_version(name, version), public_key)
    table = Table("check", "result", title=f"verify {report.uri}", title_justify="left")
    for rel, state in report.files.items():
        table.add_row(f"file {rel}", ok(state == "ok", bad=state.upper()))
    table.add_row("manifest digest", ok(report.manifest_ok, bad="MISMATCH"))
    if report.signature_ok is None:
        sig = f"signed by {report.signing_key} (pass --public-key to check)" if report.signed else "unsigned"
    else:
        sig = ok(report.signature_ok, good="valid", bad="INVALID")
    table.add_row("signature", sig)
    console.print(table)
    if not report.ok:
        bad = [f for f, s in report.files.items() if s != "ok"]
        raise IntegrityError(
            f"{report.uri} failed verification"
            + (f": {', '.join(bad)} changed or missing" if bad else "")
            + ("" if report.manifest_ok else "; its manifest was altered")
            + ("" if report.signature_ok is not False else "; its signature does not verify")
            + ". Do not deploy it."
        )
    console.print(f"{report.uri} verified.", style="green")


@models_app.command("keygen")
def models_keygen(
    folder: Annotated[Path, typer.Option("--out", help="Folder for the key pair.")] = Path("keys"),
    name: Annotated[str, typer.Option("--name", help="File name stem.")] = "shipway",
) -> None:
    """Create an ed25519 key pair for signing versions (NAME.key is private: keep it secret)."""
    private, public = generate_keypair(folder, name)
    console.print(f"private key: {private} (mode 0600; keep it out of version control)")
    console.print(f"public key:  {public} (share it with whoever verifies)")


@models_app.command("sign")
def models_sign(
    name: Name,
    version: Version,
    key: Annotated[Path, typer.Option("--key", help="Private key from `shipway models keygen`.")],
) -> None:
    """Sign a version's manifest with an ed25519 private key."""
    v = sign_version(name, version, key)
    console.print(f"Signed {v.uri} with key {v.signing_key}.")


@models_app.command("alias")
def models_alias(
    name: Name,
    alias: Annotated[str, typer.Argument(help="Alias such as staging or champion.")],
    version: Version,
) -> None:
    """Point an alias at a version."""
    set_alias(name, alias, version)
    console.print(f"{name}@{alias} → version {version}")


@models_app.command("unalias")
def models_unalias(
    name: Name,
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
) -> None:
    """Remove an alias from a model."""
    delete_alias(name, alias)
    console.print(f"Removed {name}@{alias}.")


@models_app.command("history")
def models_history(name: Name, version: Version) -> None:
    """Every recorded change to a version: edits, alias moves, signing, archiving."""
    table = Table("when (UTC)", "by", "field", "old", "new")
    for e in version_history(name, version):
        table.add_row(when(e.at), e.by or "?", e.field, str(e.old), str(e.new))
    console.print(table)


@models_app.command("archive")
def models_archive(name: Name, version: Version) -> None:
    """Archive a version: metadata and history stay; it can no longer take an alias."""
    archive_version(name, version)
    console.print(f"Archived {name} version {version}.")


@models_app.command("delete-artifacts")
def models_delete_artifacts(
    name: Name,
    version: Version,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the deletion.")] = False,
) -> None:
    """Delete the stored files of an archived version (metadata stays); this is logged."""
    from shipway.core.errors import InvalidInput

    check_deletable(get_version(name, version))  # say what is wrong before asking for --yes
    if not yes:
        raise InvalidInput(f"This deletes the files of {name} version {version} for good; rerun with --yes.")
    doomed = delete_artifacts(name, version)
    console.print(f"Deleted {len(doomed)} blob(s) of {name} version {version}; its metadata remains.")
