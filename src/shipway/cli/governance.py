"""`shipway promote / approve / reject`, `requests`, `policy`, `audit`, `token`, `users`, `whoami`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from shipway.cli.output import console, print_json, when
from shipway.core.errors import GateFailed, IntegrityError, InvalidInput

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Name = Annotated[str, typer.Argument(help="Model name.")]
Version = Annotated[int, typer.Argument(help="Version number.")]
To = Annotated[str, typer.Option("--to", help="Target environment (a governed alias such as prod).")]

requests_app = typer.Typer(
    help="Promotion requests: list them, show one with its gate report.", no_args_is_help=True
)
policy_app = typer.Typer(
    help="The promotion policy: apply shipway.yaml, show the one in force.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The tamper-evident audit log: verify, export, checkpoint.", no_args_is_help=True
)
token_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
users_app = typer.Typer(help="Users and service accounts, and their roles (admins).", no_args_is_help=True)

_STATUS_STYLE = {
    "pass": "green",
    "fail": "red",
    "insufficient_evidence": "yellow",
    "completed": "green",
    "pending": "cyan",
    "failed": "red",
    "rejected": "red",
    "lapsed": "yellow",
    "superseded": "dim",
}


def _styled(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _print_request(request: dict[str, Any]) -> None:
    console.print(
        Text.assemble(
            f"Request {request['id'][:12]}  {request['model']} v{request['version']} -> "
            f"{request['environment']}  ",
            _styled(request["status"]),
        )
    )
    policy = request.get("policy_version")
    console.print(
        f"  requested by {request['requested_by']} at {when(request['requested_at'])}; "
        + (f"policy v{policy}" if policy else "no policy in force (no gates, no approvals)")
    )
    gates = request["report"].get("gates", [])
    if gates:
        table = Table("gate", "result", "evidence", box=None, pad_edge=False)
        for g in gates:
            table.add_row(g["gate"], _styled(g["status"]), g["summary"])
        console.print(table)
    needed = request.get("approvals_needed", 0)
    if needed:
        given = [a for a in request.get("approvals", []) if a["decision"] == "approve"]
        console.print(f"  approvals: {len(given)} of {needed}")
        for a in request.get("approvals", []):
            note = f": {a['comment']}" if a.get("comment") else ""
            console.print(f"    {a['decision']} by {a['approver']} at {when(a['at'])}{note}")
    if request.get("reason"):
        console.print(f"  reason: {request['reason']}")


def promote(name: Name, version: Version, to: To, as_json: JsonFlag = False) -> None:
    """Evaluate every gate for an environment; move its alias if all pass and no approval is needed."""
    from shipway import governance

    try:
        request = governance.promote(name, version, to).to_dict()
    except GateFailed as exc:
        request = exc.details["request"]
        if as_json:
            print_json(request)
        else:
            _print_request(request)
        raise
    if as_json:
        print_json(request)
        return
    _print_request(request)
    if request["status"] == "pending":
        console.print(f"Waiting for approval: shipway approve {name} {version} --to {to}")
    else:
        console.print(f"{to} now points at {name} v{version}.")


def approve(
    name: Name,
    version: Version,
    to: To,
    comment: Annotated[str | None, typer.Option(help="What you reviewed.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a pending promotion (as the identity SHIPWAY_TOKEN names, else the OS user)."""
    from shipway import governance

    request = governance.approve(name, version, to, comment=comment).to_dict()
    if as_json:
        print_json(request)
        return
    _print_request(request)
    if request["status"] == "completed":
        console.print(f"{to} now points at {name} v{version}.")


def reject(
    name: Name,
    version: Version,
    to: To,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")],
) -> None:
    """Reject a pending promotion, with a reason."""
    from shipway import governance

    _print_request(governance.reject(name, version, to, reason=reason).to_dict())


@requests_app.command("list")
def requests_list(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, completed, failed, rejected, lapsed…")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Promotion requests, newest first."""
    from shipway import governance

    found = governance.list_requests(model=model, status=status, limit=limit)
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    table = Table("id", "model", "version", "to", "status", "gates", "approvals", "requested by", "at")
    for r in found:
        passed = sum(1 for g in r.gates if g["status"] == "pass")
        approvals = sum(1 for a in r.approvals if a.decision == "approve")
        table.add_row(
            r.id[:12],
            r.model,
            str(r.version),
            r.environment,
            _styled(r.status),
            f"{passed}/{len(r.gates)}",
            f"{approvals}/{r.approvals_needed}",
            r.requested_by,
            when(r.requested_at),
        )
    console.print(table)


@requests_app.command("show")
def requests_show(
    request_id: Annotated[str, typer.Argument(help="Request id (or its first 6+ characters).")],
    as_json: JsonFlag = False,
) -> None:
    """One request: gate report, approvals, outcome."""
    from shipway import governance

    request = governance.get_request(request_id).to_dict()
    if as_json:
        print_json(request)
    else:
        _print_request(request)


@policy_app.command("apply")
def policy_apply(
    path: Annotated[Path, typer.Argument(help="The policy file.")] = Path("shipway.yaml"),
) -> None:
    """Check a policy file and store it as the next policy version (admins)."""
    from shipway import governance

    before = governance.current_policy()
    applied = governance.apply_file(path)
    if before is not None and before.version == applied.version:
        console.print(f"Policy unchanged: v{applied.version} is already in force.")
    else:
        console.print(
            f"Policy v{applied.version} in force (sha256 {applied.digest[:12]}); "
            f"governed environments: {', '.join(applied.environments)}."
        )


@policy_app.command("show")
def policy_show(as_json: JsonFlag = False) -> None:
    """The policy in force, as applied."""
    from shipway import governance

    current = governance.current_policy()
    if current is None:
        console.print("No policy applied: promotion needs no gates or approvals (but is still audited).")
        return
    if as_json:
        print_json({"version": current.version, "digest": current.digest, "document": current.document})
        return
    console.print(f"# policy v{current.version}, applied {when(current.applied_at)} by {current.applied_by}")
    console.print(current.source.rstrip())


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None, typer.Option(help="JSON Lines of signed checkpoints (from `audit checkpoint`).")
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="The key the checkpoints must be signed by.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute the hash chain; name the first entry that does not match (exit 8 if any)."""
    from shipway.governance import audit, identity

    identity.require("admin")
    found = audit.read_checkpoints(checkpoints) if checkpoints else []
    report = audit.verify(checkpoints=found, public_key=public_key)
    if as_json:
        print_json(report.to_dict())
    elif report.ok:
        extra = f", {report.checkpoints} signed checkpoint(s) matched" if report.checkpoints else ""
        console.print(
            f"Audit chain OK: {report.entries} entries, "
            f"head {report.head_seq} {report.head_hash[:16]}{extra}."
        )
    if not report.ok:
        raise IntegrityError(
            f"Audit chain broken at entry {report.first_bad_seq}: {report.problem}.", details=report.to_dict()
        )


@audit_app.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="Only entries from this date (YYYY-MM-DD) on.")] = None,
) -> None:
    """Write the log as JSON Lines to standard output."""
    from shipway.governance import audit, identity

    identity.require("admin")
    since_ms = audit.parse_since(since) if since else None
    out = sys.stdout
    for line in audit.export_lines(since_ms=since_ms):
        out.write(line + "\n")


@audit_app.command("checkpoint")
def audit_checkpoint(
    key: Annotated[Path, typer.Option(help="ed25519 private key (PEM), e.g. from `shipway models keygen`.")],
    output: Annotated[Path, typer.Option(help="Append the signed checkpoint to this file.")] = Path(
        "audit-checkpoints.jsonl"
    ),
) -> None:
    """Sign the chain's current head and append it to a file kept outside the database."""
    from shipway.governance import audit, identity

    identity.require("admin")
    cp = audit.checkpoint(key)
    with open(output, "a") as handle:
        handle.write(json.dumps(cp.to_dict(), sort_keys=True) + "\n")
    console.print(f"Checkpoint of entry {cp.seq} ({cp.hash[:16]}) appended to {output}.")


@token_app.command("create")
def token_create(
    user: Annotated[str | None, typer.Option(help="Whose token (admins); default: yours.")] = None,
    role: Annotated[str | None, typer.Option(help="The most this token may do: viewer … admin.")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Limit the token to these models.")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime such as 30d or 12h; default: none.")] = None,
    description: Annotated[str | None, typer.Option(help="What the token is for.")] = None,
) -> None:
    """Create a token. It is printed once, on standard output; only its hash is kept."""
    from shipway.governance import create_token, identity

    expires_ms = identity.parse_duration_ms(expires) if expires else None
    info, secret = create_token(
        user, role=role, models=model, expires_in_ms=expires_ms, description=description
    )
    print(secret)
    detail = f"token {info.id[:12]} for {info.principal}" + (f", role {info.ceiling}" if info.ceiling else "")
    if info.expires_at:
        detail += f", expires {when(info.expires_at)}"
    typer.echo(f"Created {detail}. Store it now: it cannot be shown again.", err=True)


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option(help="Whose tokens (admins); default: yours.")] = None,
) -> None:
    """Tokens (never their secrets): hint, role, expiry, last use, revocation."""
    from shipway.governance import list_tokens

    table = Table("id", "hint", "user", "role", "models", "created", "expires", "last used", "revoked")
    for t in list_tokens(user):
        table.add_row(
            t.id[:12],
            t.hint,
            t.principal,
            t.ceiling or "(user's)",
            ",".join(t.models or []) or "all",
            when(t.created_at),
            when(t.expires_at),
            when(t.last_used_at),
            when(t.revoked_at),
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (see `token list`).")]) -> None:
    """Revoke a token at once."""
    from shipway.governance import list_tokens, revoke_token

    matches = [t.id for t in list_tokens() if t.id.startswith(token_id)] if len(token_id) < 32 else [token_id]
    if len(matches) != 1:
        raise InvalidInput(f"{token_id!r} does not name exactly one of your tokens; give its full id.")
    info = revoke_token(matches[0])
    console.print(f"Revoked token {info.id[:12]} of {info.principal}.")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User or service-account name.")],
    role: Annotated[str, typer.Option(help="viewer, contributor, approver or admin.")] = "viewer",
    service: Annotated[bool, typer.Option("--service", help="A service account (CI, pipelines).")] = False,
) -> None:
    """Add a user or service account."""
    from shipway.governance import add_principal

    p = add_principal(name, role, kind="service" if service else "user")
    console.print(
        f"Added {p.kind} {p.name} with role {p.role}. Give it a token: shipway token create --user {p.name}"
    )


@users_app.command("grant")
def users_grant(
    name: Annotated[str, typer.Argument(help="User or service-account name.")],
    role: Annotated[str, typer.Argument(help="viewer, contributor, approver or admin.")],
    model: Annotated[str | None, typer.Option(help="Only on this model.")] = None,
) -> None:
    """Set a global role, or a role on one model."""
    from shipway.governance import grant

    grant(name, role, model=model)
    console.print(f"{name} is now {role}" + (f" on {model}." if model else "."))


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="User or service-account name.")]) -> None:
    """Disable a user: every token of theirs stops working."""
    from shipway.governance import disable_principal

    disable_principal(name)
    console.print(f"Disabled {name}.")


@users_app.command("list")
def users_list() -> None:
    """Users and service accounts with their roles."""
    from shipway.governance import list_principals

    table = Table("name", "kind", "role", "model roles", "created", "disabled")
    for p in list_principals():
        grants = ", ".join(f"{m}:{r}" for m, r in sorted(p.grants.items()))
        table.add_row(p.name, p.kind, p.role, grants or "-", when(p.created_at), when(p.disabled_at))
    console.print(table)


def whoami(as_json: JsonFlag = False) -> None:
    """The identity commands act as: SHIPWAY_TOKEN's, else the local OS user (admin of a local store)."""
    from shipway.governance import whoami as _whoami

    me = _whoami()
    if as_json:
        print_json(me)
        return
    scope = f", token limited to {me['ceiling']}" if me["ceiling"] else ""
    console.print(f"{me['name']} ({me['kind']}), role {me['role']}{scope}")
