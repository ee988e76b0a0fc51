"""The control-plane HTTP API: tracking and registry data, promotion, approvals, audit, tokens.

Every endpoint but ``/health`` needs a bearer token (``Authorization: Bearer swu_…``) unless the
server was started with ``--insecure-local``, which binds to loopback only and acts as the local
OS user. Each route declares the least role it needs (function-level authorization); routes
about one model check the role on that model (object-level), and request bodies accept only the
fields a client may set (extra fields are refused), so status, approvals and creators stay
server-owned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import shipway
from shipway.core.actor import Actor, acting_as, local_actor
from shipway.core.clock import iso
from shipway.core.errors import ShipwayError, Unauthenticated
from shipway.store import Store, current_revision, schema
from shipway.tracking import get_run, list_experiments, metric_history, search_runs
from shipway.tracking.search import MAX_LIMIT

# Requests larger than this are refused with 413 before they are read.
MAX_BODY_BYTES = 1 << 20


def _envelope(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, "details": details}}
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AliasBody(_Body):
    version: int = Field(ge=1)


class VersionEdit(_Body):
    description: str | None = Field(None, max_length=10_000)
    tags: dict[str, str] | None = None
    card: dict[str, str] | None = None


class PromoteBody(_Body):
    to: str = Field(min_length=1, max_length=64)


class ApproveBody(_Body):
    to: str = Field(min_length=1, max_length=64)
    comment: str | None = Field(None, max_length=10_000)


class RejectBody(_Body):
    to: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=10_000)


class PolicyBody(_Body):
    source: str = Field(min_length=1, max_length=200_000)


class TokenBody(_Body):
    principal: str | None = Field(None, max_length=128)
    role: str | None = Field(None, max_length=16)
    models: list[str] | None = Field(None, max_length=100)
    expires_in: str | None = Field(None, max_length=16, description="e.g. 30d, 12h")
    description: str | None = Field(None, max_length=1000)


class PrincipalBody(_Body):
    name: str = Field(min_length=1, max_length=128)
    role: str = Field("viewer", max_length=16)
    kind: str = Field("user", max_length=16)


class GrantBody(_Body):
    role: str = Field(max_length=16)
    model: str | None = Field(None, max_length=256)


def create_app(
    store: Store, *, insecure_local: bool = False, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """The ASGI app serving ``store``; authenticated unless ``insecure_local``."""
    from shipway import governance
    from shipway.governance import identity
    from shipway.server import ingest

    app = FastAPI(
        title="Shipway",
        version=shipway.__version__,
        description="Shipway control-plane API. Authenticate with `Authorization: Bearer <token>`.",
    )

    @app.exception_handler(ShipwayError)
    async def _shipway_error(_request: Request, exc: ShipwayError) -> JSONResponse:
        return _envelope(exc.http_status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg")}
            for err in exc.errors()
        ]
        return _envelope(400, "invalid_input", "The request has invalid parameters.", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = (
            f"No endpoint at {request.url.path}; see /docs for the API."
            if exc.status_code == 404
            else str(exc.detail)
        )
        return _envelope(exc.status_code, code, message)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Callable[[Request], Any]) -> Any:
        if request.method == "PUT" and request.url.path.startswith(ingest.BLOB_PATH_PREFIX):
            return await call_next(request)  # file uploads stream, under their own limit
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return _envelope(
                413, "too_large", f"The request body exceeds {max_body_bytes} bytes; send less per call."
            )
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            body = await request.body()  # chunked: read at most what we allow
            if len(body) > max_body_bytes:
                return _envelope(413, "too_large", f"The request body exceeds {max_body_bytes} bytes.")
        return await call_next(request)

    def authenticated(request: Request) -> Actor:
        if insecure_local:
            return local_actor()
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated(
                "This endpoint needs a token: send `Authorization: Bearer <token>` "
                "(create one with `shipway token create`)."
            )
        return identity.authenticate_cached(secret.strip(), store=store)

    def need(role: str, *, per_model: bool = False) -> Callable[..., Actor]:
        def dependency(request: Request, actor: Actor = Depends(authenticated)) -> Actor:
            model = request.path_params.get("name") if per_model else None
            identity.require(role, model, actor=actor)
            return actor

        dependency.__name__ = f"need_{role}"
        return dependency

    viewer, admin = need("viewer"), need("admin")
    model_viewer, model_contributor = need("viewer", per_model=True), need("contributor", per_model=True)
    model_approver = need("approver", per_model=True)

    @app.get("/health", tags=["operations"], summary="Liveness and store health")
    def health() -> dict[str, Any]:
        with store.read() as conn:
            conn.execute(schema.experiments.select().limit(1)).all()
        return {
            "status": "ok",
            "version": shipway.__version__,
            "schema_revision": current_revision(store.engine),
        }

    @app.get("/api/v1/server", tags=["operations"], summary="Where the server keeps its data")
    def server_info(_: Actor = Depends(admin)) -> dict[str, Any]:
        return {
            "store": store.describe(),
            "artifacts": store.settings.artifact_uri,
            "authentication": not insecure_local,
        }

    @app.get("/api/v1/whoami", tags=["identity"], summary="The identity a token stands for")
    def whoami(actor: Actor = Depends(viewer)) -> dict[str, Any]:
        with acting_as(actor):
            return governance.whoami()

    @app.get("/api/v1/experiments", tags=["tracking"], summary="List experiments")
    def experiments(_: Actor = Depends(viewer)) -> dict[str, Any]:
        return {
            "experiments": [
                {"id": e.id, "name": e.name, "runs": e.runs, "created_at": iso(e.created_at)}
                for e in list_experiments(store=store)
            ]
        }

    @app.get("/api/v1/experiments/{experiment}/runs", tags=["tracking"], summary="Search runs")
    def runs(
        experiment: str,
        filter: str | None = Query(None, description="e.g. metrics.auc > 0.8 and params.depth = 6"),
        order_by: str | None = Query(None, description="e.g. metrics.auc desc"),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        page_token: str | None = None,
        _: Actor = Depends(viewer),
    ) -> dict[str, Any]:
        page = search_runs(
            experiment, filter=filter, order_by=order_by, limit=limit, page_token=page_token, store=store
        )
        return {"runs": [r.to_dict() for r in page], "next_page_token": page.next_page_token}

    @app.get("/api/v1/runs/{run_id}", tags=["tracking"], summary="One run")
    def run(run_id: str, _: Actor = Depends(viewer)) -> dict[str, Any]:
        return get_run(run_id, store=store).to_dict()

    @app.get("/api/v1/runs/{run_id}/metrics/{key:path}", tags=["tracking"], summary="Metric history")
    def history(run_id: str, key: str, _: Actor = Depends(viewer)) -> dict[str, Any]:
        points = metric_history(run_id, key, store=store)
        return {
            "run_id": run_id,
            "key": key,
            "points": [
                {"step": p.step, "timestamp": p.timestamp, "value": None if math.isnan(p.value) else p.value}
                for p in points
            ],
        }

    @app.get("/api/v1/models", tags=["registry"], summary="List registered models")
    def models(actor: Actor = Depends(viewer)) -> dict[str, Any]:
        from shipway.registry import list_models

        return {
            "models": [
                {
                    "name": m.name,
                    "versions": m.versions,
                    "latest": m.latest,
                    "aliases": m.aliases,
                    "created_at": iso(m.created_at),
                }
                for m in list_models(store=store)
                if actor.can("viewer", m.name)
            ]
        }

    @app.get("/api/v1/models/{name}/versions", tags=["registry"], summary="Versions of a model")
    def model_versions(name: str, _: Actor = Depends(model_viewer)) -> dict[str, Any]:
        from shipway.registry import list_versions

        return {"versions": [_version_json(v) for v in list_versions(name, store=store)]}

    @app.get("/api/v1/models/{name}/versions/{version}", tags=["registry"], summary="One version")
    def model_version(name: str, version: int, _: Actor = Depends(model_viewer)) -> dict[str, Any]:
        from shipway.registry import get_version

        return _version_json(get_version(name, version, store=store))

    @app.get("/api/v1/models/{name}/aliases/{alias}", tags=["registry"], summary="The version an alias names")
    def model_alias(name: str, alias: str, _: Actor = Depends(model_viewer)) -> dict[str, Any]:
        from shipway.registry import get_version

        return _version_json(get_version(name, alias=alias, store=store))

    # -- registry writes ---------------------------------------------------------------------

    @app.put("/api/v1/models/{name}/aliases/{alias}", tags=["registry"], summary="Point a plain alias")
    def put_alias(name: str, alias: str, body: AliasBody, actor: Actor = Depends(model_contributor)) -> Any:
        from shipway.registry import get_version, set_alias

        with acting_as(actor):
            set_alias(name, alias, body.version, store=store)
        return _version_json(get_version(name, alias=alias, store=store))

    @app.delete("/api/v1/models/{name}/aliases/{alias}", tags=["registry"], summary="Remove a plain alias")
    def delete_alias(name: str, alias: str, actor: Actor = Depends(model_contributor)) -> dict[str, Any]:
        from shipway.registry import delete_alias as _delete

        with acting_as(actor):
            _delete(name, alias, store=store)
        return {"deleted": alias}

    @app.patch("/api/v1/models/{name}/versions/{version}", tags=["registry"], summary="Edit a version's text")
    def edit_version(
        name: str, version: int, body: VersionEdit, actor: Actor = Depends(model_contributor)
    ) -> dict[str, Any]:
        from shipway.registry import update_version

        with acting_as(actor):
            edited = update_version(
                name, version, description=body.description, tags=body.tags, card=body.card, store=store
            )
        return _version_json(edited)

    # -- governance --------------------------------------------------------------------------

    @app.post("/api/v1/models/{name}/versions/{version}/promote", tags=["governance"], summary="Promote")
    def promote(name: str, version: int, body: PromoteBody, actor: Actor = Depends(model_contributor)) -> Any:
        with acting_as(actor):
            return governance.promote(name, version, body.to, store=store).to_dict()

    @app.post("/api/v1/models/{name}/versions/{version}/approve", tags=["governance"], summary="Approve")
    def approve(name: str, version: int, body: ApproveBody, actor: Actor = Depends(model_approver)) -> Any:
        with acting_as(actor):
            return governance.approve(name, version, body.to, comment=body.comment, store=store).to_dict()

    @app.post("/api/v1/models/{name}/versions/{version}/reject", tags=["governance"], summary="Reject")
    def reject(name: str, version: int, body: RejectBody, actor: Actor = Depends(model_approver)) -> Any:
        with acting_as(actor):
            return governance.reject(name, version, body.to, reason=body.reason, store=store).to_dict()

    @app.get("/api/v1/requests", tags=["governance"], summary="Promotion requests, newest first")
    def requests(
        model: str | None = Query(None, max_length=256),
        status: str | None = Query(None, max_length=16),
        limit: int = Query(100, ge=1, le=1000),
        actor: Actor = Depends(viewer),
    ) -> dict[str, Any]:
        found = governance.list_requests(model=model, status=status, limit=limit, store=store)
        return {"requests": [r.to_dict() for r in found if actor.can("viewer", r.model)]}

    @app.get("/api/v1/requests/{request_id}", tags=["governance"], summary="One promotion request")
    def request(request_id: str, actor: Actor = Depends(viewer)) -> dict[str, Any]:
        found = governance.get_request(request_id, store=store)
        identity.require("viewer", found.model, actor=actor)
        return found.to_dict()

    @app.get("/api/v1/policy", tags=["governance"], summary="The policy in force")
    def policy(_: Actor = Depends(viewer)) -> dict[str, Any]:
        current = governance.current_policy(store=store)
        if current is None:
            return {"policy": None}
        return {
            "policy": {
                "version": current.version,
                "document": current.document,
                "digest": current.digest,
                "applied_at": iso(current.applied_at),
                "applied_by": current.applied_by,
                "source": current.source,
            }
        }

    @app.put("/api/v1/policy", tags=["governance"], summary="Apply a policy (YAML text)")
    def put_policy(body: PolicyBody, actor: Actor = Depends(admin)) -> dict[str, Any]:
        with acting_as(actor):
            applied = governance.apply_policy(body.source, store=store)
        return {"version": applied.version, "digest": applied.digest}

    @app.get("/api/v1/audit", tags=["audit"], summary="Audit entries, oldest first (keyset pages)")
    def audit_entries(
        after_seq: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=10_000),
        subject: str | None = Query(None, max_length=512),
        _: Actor = Depends(admin),
    ) -> dict[str, Any]:
        found = governance.audit.entries(after_seq=after_seq, limit=limit, subject=subject, store=store)
        last = found[-1].seq if len(found) == limit else None
        return {"entries": [e.to_dict() for e in found], "next_after_seq": last}

    @app.get("/api/v1/audit/verify", tags=["audit"], summary="Recompute the audit chain")
    def audit_verify(_: Actor = Depends(admin)) -> dict[str, Any]:
        return governance.audit.verify(store=store).to_dict()

    # -- identities and tokens ----------------------------------------------------------------

    @app.post("/api/v1/tokens", tags=["identity"], summary="Create a token (shown once)", status_code=201)
    def create_token(body: TokenBody, actor: Actor = Depends(viewer)) -> dict[str, Any]:
        expires = identity.parse_duration_ms(body.expires_in) if body.expires_in else None
        with acting_as(actor):
            info, secret = governance.create_token(
                body.principal,
                role=body.role,
                models=body.models,
                expires_in_ms=expires,
                description=body.description,
                store=store,
            )
        return {"token": secret, **info.to_dict()}

    @app.get("/api/v1/tokens", tags=["identity"], summary="Your tokens (admins: anyone's)")
    def tokens(principal: str | None = Query(None, max_length=128), actor: Actor = Depends(viewer)) -> Any:
        with acting_as(actor):
            return {"tokens": [t.to_dict() for t in governance.list_tokens(principal, store=store)]}

    @app.delete("/api/v1/tokens/{token_id}", tags=["identity"], summary="Revoke a token")
    def revoke(token_id: str, actor: Actor = Depends(viewer)) -> dict[str, Any]:
        with acting_as(actor):
            return governance.revoke_token(token_id, store=store).to_dict()

    @app.get("/api/v1/principals", tags=["identity"], summary="Users and service accounts")
    def principals(actor: Actor = Depends(admin)) -> dict[str, Any]:
        with acting_as(actor):
            return {"principals": [p.to_dict() for p in governance.list_principals(store=store)]}

    @app.post(
        "/api/v1/principals", tags=["identity"], summary="Add a user or service account", status_code=201
    )
    def add_principal(body: PrincipalBody, actor: Actor = Depends(admin)) -> dict[str, Any]:
        with acting_as(actor):
            return governance.add_principal(body.name, body.role, kind=body.kind, store=store).to_dict()

    @app.post("/api/v1/principals/{principal}/grants", tags=["identity"], summary="Set a role")
    def grant(principal: str, body: GrantBody, actor: Actor = Depends(admin)) -> dict[str, Any]:
        with acting_as(actor):
            return governance.grant(principal, body.role, model=body.model, store=store).to_dict()

    app.include_router(ingest.build_router(store, need))
    return app


def _version_json(v: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(v)
    data.update(uri=v.uri, created_at=iso(v.created_at), archived_at=iso(v.archived_at), signed=v.signed)
    return data
