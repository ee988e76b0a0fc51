"""Promotion requests: evaluate the gates, wait for approvals, move the governed alias atomically.

``promote`` records a request whatever happens. With every gate passed and no approvals needed
it moves the alias at once; with approvals needed it waits. Approvals are bound to the version's
artifact digest and the policy version the request was evaluated under: if either changes, the
request lapses and must be made again. The alias move, the request's completion and their audit
entries commit in one transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from shipway.client.mode import remote_client
from shipway.core.actor import current_actor
from shipway.core.clock import now_ms
from shipway.core.errors import Conflict, GateFailed, InvalidInput, NotFound, PermissionDenied
from shipway.core.ids import new_id
from shipway.core.pages import decode_cursor, encode_cursor
from shipway.governance import gates as gate_mod
from shipway.governance.identity import require
from shipway.governance.policy import current_policy
from shipway.registry import ARCHIVED, ModelVersion, get_version
from shipway.registry.versions import check_alias, move_alias
from shipway.store import Store, audit, get_store, schema
from shipway.tracking import Page

PENDING, COMPLETED, FAILED, REJECTED, LAPSED, SUPERSEDED = (
    "pending",
    "completed",
    "failed",
    "rejected",
    "lapsed",
    "superseded",
)
_R, _A, _M = schema.promotion_requests, schema.approvals, schema.models
MAX_PAGE = 1000  # requests per page of list_requests


@dataclass(frozen=True)
class Approval:
    approver: str
    decision: str  # approve | reject
    comment: str | None
    at: int
    artifact_digest: str
    policy_version: int | None


@dataclass(frozen=True)
class PromotionRequest:
    """A request to move ``environment`` to a version, with its gate report and approvals."""

    id: str
    model: str
    version: int
    environment: str
    status: str
    policy_version: int | None
    artifact_digest: str
    approvals_needed: int
    report: dict[str, Any]
    requested_by: str
    requested_at: int
    decided_at: int | None
    reason: str | None
    approvals: list[Approval] = field(default_factory=list)

    @property
    def gates(self) -> list[dict[str, Any]]:
        return list(self.report.get("gates", []))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(conn: sa.Connection, row: Any, model: str) -> PromotionRequest:
    approvals = [
        Approval(a.approver, a.decision, a.comment, a.at, a.artifact_digest, a.policy_version)
        for a in conn.execute(sa.select(_A).where(_A.c.request_id == row.id).order_by(_A.c.at)).all()
    ]
    return PromotionRequest(
        row.id,
        model,
        row.version,
        row.environment,
        row.status,
        row.policy_version,
        row.artifact_digest,
        row.approvals_needed,
        row.report,
        row.requested_by,
        row.requested_at,
        row.decided_at,
        row.reason,
        approvals,
    )


def _model_id(conn: sa.Connection, name: str) -> str:
    found = conn.execute(sa.select(_M.c.id).where(_M.c.name == name)).scalar()
    if found is None:
        raise NotFound(f"No model {name!r}.")
    return found


def _subject(name: str, version: int) -> str:
    return f"model/{name}/{version}"


def promote(name: str, version: int, to: str, *, store: Store | None = None) -> PromotionRequest:
    """Request that ``to`` point at ``version`` of ``name``: gates run now, approvals may follow.

    Returns the request (``completed`` when the alias moved, ``pending`` when approvals are
    needed); raises GateFailed, carrying the report, when a gate did not pass.
    """
    client = remote_client(store)
    if client is not None:
        return client.promote(name, version, to)
    actor = require("contributor", name)
    store = store or get_store()
    check_alias(to)
    policy = current_policy(store=store)
    if policy is not None and to not in policy.environments:
        raise InvalidInput(
            f"{to!r} is not an environment of the policy in force (v{policy.version}); environments are "
            f"{', '.join(policy.environments)}. Plain aliases move with `shipway models alias`."
        )
    target = get_version(name, version, store=store)
    if target.status == ARCHIVED:
        raise Conflict(f"Version {version} of {name!r} is archived and cannot be promoted.")
    specs, approvals = policy.stage(name, to) if policy is not None else ([], None)
    results = gate_mod.evaluate(specs, target, store)
    passed = all(r.passed for r in results)
    needed = approvals.count if approvals is not None else 0
    status = FAILED if not passed else PENDING if needed else COMPLETED
    report = {
        "gates": [r.to_dict() for r in results],
        "policy_version": policy.version if policy is not None else None,
        "approvals": approvals.model_dump() if approvals is not None else None,
        "passed": passed,
    }
    request_id = new_id()
    now = now_ms()
    with store.write() as conn:
        model_id = _model_id(conn, name)
        conn.execute(
            _R.update()
            .where(_R.c.model_id == model_id, _R.c.environment == to, _R.c.status == PENDING)
            .where(_R.c.version == version)
            .values(status=SUPERSEDED, decided_at=now, reason=f"superseded by request {request_id}")
        )
        conn.execute(
            _R.insert().values(
                id=request_id,
                model_id=model_id,
                version=version,
                environment=to,
                status=status,
                policy_version=report["policy_version"],
                artifact_digest=target.manifest_digest,
                approvals_needed=needed,
                report=report,
                requested_by=actor.name,
                requested_at=now,
                decided_at=now if status != PENDING else None,
            )
        )
        subject = _subject(name, version)
        audit.append(
            conn,
            "promotion.requested",
            subject,
            {"request": request_id, "environment": to, "policy_version": report["policy_version"]},
        )
        for r in results:
            audit.append(
                conn,
                "gate.evaluated",
                subject,
                {"request": request_id, "gate": r.gate, "status": r.status, "summary": r.summary},
            )
        if status == COMPLETED:
            _complete(conn, store, name, version, to, request_id)
        request = _load(conn, conn.execute(sa.select(_R).where(_R.c.id == request_id)).one(), name)
    if status == FAILED:
        failed = [r for r in results if not r.passed]
        raise GateFailed(
            f"Promotion of {name} v{version} to {to} stopped: {len(failed)} of {len(results)} gates did not "
            "pass (" + "; ".join(f"{r.gate}: {r.status}, {r.summary}" for r in failed) + ").",
            details={"request": request.to_dict()},
        )
    return request


def _complete(conn: sa.Connection, store: Store, name: str, version: int, to: str, request_id: str) -> None:
    previous = move_alias(conn, store.dialect, name, to, version)
    conn.execute(_R.update().where(_R.c.id == request_id).values(status=COMPLETED, decided_at=now_ms()))
    audit.append(
        conn,
        "promotion.completed",
        _subject(name, version),
        {"request": request_id, "environment": to, "previous": previous},
    )


def _pending(conn: sa.Connection, name: str, version: int, to: str) -> Any:
    model_id = _model_id(conn, name)
    row = conn.execute(
        sa.select(_R)
        .where(_R.c.model_id == model_id, _R.c.version == version, _R.c.environment == to)
        .where(_R.c.status == PENDING)
        .order_by(_R.c.requested_at.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound(
            f"No pending request to promote {name} v{version} to {to}; "
            f"make one with `shipway promote {name} {version} --to {to}`."
        )
    return row


def _check_still_bound(store: Store, row: Any, target: ModelVersion) -> str | None:
    """Why the request lapsed (policy or artifact changed since), or None if it still holds."""
    policy = current_policy(store=store)
    now_version = policy.version if policy is not None else None
    if now_version != row.policy_version:
        return f"the policy changed from v{row.policy_version} to v{now_version} since the request"
    if target.manifest_digest != row.artifact_digest:
        return "the version's artifact digest changed since the request"
    if target.status == ARCHIVED:
        return "the version was archived since the request"
    return None


def _decide(
    name: str, version: int, to: str, decision: str, comment: str | None, store: Store | None
) -> PromotionRequest:
    actor = current_actor()
    store = store or get_store()
    target = get_version(name, version, store=store)
    with store.write() as conn:
        row = _pending(conn, name, version, to)
        rules = (row.report or {}).get("approvals") or {"role": "approver", "distinct_from": []}
        require(rules["role"], name, actor=actor)
        if "author" in rules["distinct_from"] and actor.name == target.created_by:
            raise PermissionDenied(
                f"{actor.name} registered {name} v{version}; "
                "the policy requires an approver other than the author."
            )
        if "requester" in rules["distinct_from"] and actor.name == row.requested_by:
            raise PermissionDenied(
                f"{actor.name} requested this promotion; "
                "the policy requires an approver other than the requester."
            )
        lapsed = _check_still_bound(store, row, target)
        if lapsed is not None:
            conn.execute(
                _R.update().where(_R.c.id == row.id).values(status=LAPSED, decided_at=now_ms(), reason=lapsed)
            )
            audit.append(
                conn, "promotion.lapsed", _subject(name, version), {"request": row.id, "reason": lapsed}
            )
        else:
            if conn.execute(
                sa.select(_A.c.id).where(_A.c.request_id == row.id, _A.c.approver == actor.name)
            ).first():
                raise Conflict(f"{actor.name} has already decided on this request.")
            conn.execute(
                _A.insert().values(
                    id=new_id(),
                    request_id=row.id,
                    approver=actor.name,
                    decision=decision,
                    comment=comment,
                    artifact_digest=row.artifact_digest,
                    policy_version=row.policy_version,
                    at=now_ms(),
                )
            )
            audit.append(
                conn,
                "promotion.approved" if decision == "approve" else "promotion.rejected",
                _subject(name, version),
                {"request": row.id, "environment": to, "comment": comment},
            )
            if decision == "reject":
                conn.execute(
                    _R.update()
                    .where(_R.c.id == row.id)
                    .values(status=REJECTED, decided_at=now_ms(), reason=comment)
                )
            else:
                approved = conn.execute(
                    sa.select(sa.func.count()).where(
                        _A.c.request_id == row.id,
                        _A.c.decision == "approve",
                        _A.c.artifact_digest == target.manifest_digest,
                    )
                ).scalar_one()
                if approved >= row.approvals_needed:
                    _complete(conn, store, name, version, to, row.id)
        request = _load(conn, conn.execute(sa.select(_R).where(_R.c.id == row.id)).one(), name)
    if lapsed is not None:
        raise Conflict(
            f"The request to promote {name} v{version} to {to} lapsed: {lapsed}. Its approvals no longer "
            f"count; run `shipway promote {name} {version} --to {to}` again.",
            details={"request": request.to_dict()},
        )
    return request


def approve(
    name: str, version: int, to: str, *, comment: str | None = None, store: Store | None = None
) -> PromotionRequest:
    """Approve the pending request; the alias moves when the last required approval arrives."""
    client = remote_client(store)
    if client is not None:
        return client.decide(name, version, to, "approve", comment=comment)
    return _decide(name, version, to, "approve", comment, store)


def reject(name: str, version: int, to: str, *, reason: str, store: Store | None = None) -> PromotionRequest:
    """Reject the pending request, with a reason (required)."""
    if not reason or not reason.strip():
        raise InvalidInput("A rejection needs a reason: --reason 'fairness table shows ...'.")
    client = remote_client(store)
    if client is not None:
        return client.decide(name, version, to, "reject", reason=reason)
    return _decide(name, version, to, "reject", reason, store)


def list_requests(
    *,
    model: str | None = None,
    status: str | None = None,
    limit: int = 100,
    page_token: str | None = None,
    store: Store | None = None,
) -> Page[PromotionRequest]:
    """Requests, newest first: one page of at most ``limit``; pass its ``next_page_token`` for the next."""
    client = remote_client(store)
    if client is not None:
        return client.list_requests(model=model, status=status, limit=limit, page_token=page_token)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}, not {limit!r}.")
    store = store or get_store()
    query = sa.select(_R, _M.c.name.label("model_name")).join(_M, _M.c.id == _R.c.model_id)
    if model is not None:
        query = query.where(_M.c.name == model)
    if status is not None:
        query = query.where(_R.c.status == status)
    if page_token:
        # Keyset: strictly after the last request of the previous page in (newest, id) order.
        at, last_id = decode_cursor(page_token, (int, str))
        query = query.where(
            sa.or_(_R.c.requested_at < at, sa.and_(_R.c.requested_at == at, _R.c.id > last_id))
        )
    query = query.order_by(_R.c.requested_at.desc(), _R.c.id).limit(limit + 1)
    with store.read() as conn:
        rows = conn.execute(query).all()
        page: Page[PromotionRequest] = Page(_load(conn, row, row.model_name) for row in rows[:limit])
    if len(rows) > limit:
        page.next_page_token = encode_cursor([rows[limit - 1].requested_at, rows[limit - 1].id])
    return page


def get_request(request_id: str, *, store: Store | None = None) -> PromotionRequest:
    """One request by id (or a unique prefix of at least 6 characters)."""
    client = remote_client(store)
    if client is not None:
        return client.get_request(request_id)
    store = store or get_store()
    if not isinstance(request_id, str) or len(request_id) < 6:
        raise InvalidInput("Give a request id, or at least its first 6 characters.")
    query = (
        sa.select(_R, _M.c.name.label("model_name"))
        .join(_M, _M.c.id == _R.c.model_id)
        .where(_R.c.id.startswith(request_id, autoescape=True))
        .limit(2)
    )
    with store.read() as conn:
        rows = conn.execute(query).all()
        if not rows:
            raise NotFound(f"No promotion request {request_id!r}; `shipway requests list` shows them.")
        if len(rows) > 1:
            raise InvalidInput(f"{request_id!r} matches several requests; give more characters.")
        return _load(conn, rows[0], rows[0].model_name)
