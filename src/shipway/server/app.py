"""The control-plane HTTP API: tracking and registry data, promotion, approvals, audit, tokens.

Every endpoint but ``/health`` needs a bearer token (``Authorization: Bearer swu_…``) unless the
server was started with ``--insecure-local``, which binds to loopback only and acts as the local
OS user. Each route declares the least role it needs (function-level authorization); routes
about one model check the role on that model (object-level), and request bodies accept only the
fields a client may set (extra fields are refused), so status, approvals and creators stay
server-owned. Lists page by keyset: pass a page's ``next_page_token`` back as ``page_token``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import shipway
from shipway.core.actor import Actor, acting_as, local_actor
from shipway.core.clock import iso
from shipway.core.errors import ShipwayError, Unauthenticated
from shipway.core.pages import decode_cursor, encode_cursor
from shipway.server import schemas as s
from shipway.server.guard import MAX_BODY_BYTES, Guard, document_errors, envelope
from shipway.store import Store, current_revision, schema
from shipway.tracking import get_run, list_experiments, metric_history, search_runs
from shipway.tracking.search import MAX_LIMIT

__all__ = ["MAX_BODY_BYTES", "app_from_environment", "create_app"]

# Lists answer at most this many items per page (runs and audit entries allow more).
DEFAULT_PAGE, MAX_PAGE = 100, 1000
# `shipway up --workers N` hands these to each worker process (see app_from_environment).
INSECURE_LOCAL_ENV = "SHIPWAY_SERVER_INSECURE_LOCAL"

T = TypeVar("T")
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page")]
PageToken = Annotated[
    str | None, Query(max_length=2048, description="The next_page_token of the previous page")
]
Version = Annotated[int, Path(ge=1, le=s.INT32)]
ERROR: dict[str, Any] = {"model": s.ErrorEnvelope}


def _page(
    items: Sequence[T],
    key: Callable[[T], tuple[Any, ...]],
    shape: tuple[type, ...],
    limit: int,
    token: str | None,
) -> tuple[list[T], str | None]:
    """Keyset paging over a list the library returns whole: the items whose key follows ``token``'s."""
    ordered = sorted(items, key=key)
    if token:
        after = decode_cursor(token, shape)
        ordered = [item for item in ordered if key(item) > after]
    page = ordered[:limit]
    return page, encode_cursor(key(page[-1])) if len(ordered) > limit else None


def create_app(
    store: Store, *, insecure_local: bool = False, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """The ASGI app serving ``store``; authenticated unless ``insecure_local``."""
    from shipway import governance
    from shipway.governance import identity
    from shipway.server import ingest, monitoring

    app = FastAPI(
        title="Shipway",
        version=shipway.__version__,
        description="Shipway control-plane API. Authenticate with `Authorization: Bearer <token>`. "
        'Every error is `{"error": {"code", "message", "details"}}`.',
    )
    app.add_middleware(Guard, max_body_bytes=max_body_bytes, unlimited_puts=(ingest.BLOB_PATH_PREFIX,))

    @app.exception_handler(ShipwayError)
    async def _shipway_error(_request: Request, exc: ShipwayError) -> JSONResponse:
        return envelope(exc.http_status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg")}
            for err in exc.errors()
        ]
        return envelope(400, "invalid_input", "The request has invalid parameters.", details)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Still logged with its traceback by the server; the caller gets the envelope, not a page.
        return envelope(500, "internal", "The server failed on this request; its log has the details.")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = (
            f"No endpoint at {request.url.path}; see /docs for the API."
            if exc.status_code == 404
            else str(exc.detail)
        )
        return envelope(exc.status_code, code, message, headers=exc.headers)

    # SQLite answers a metadata read in well under a millisecond, less than handing it to a worker
    # thread costs; a networked database may take longer, so its reads leave the event loop.
    inline = store.dialect == "sqlite"

    async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs) if inline else await run_in_threadpool(fn, *args, **kwargs)

    async def authenticated(request: Request) -> Actor:
        if insecure_local:
            return local_actor()
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated(
                "This endpoint needs a token: send `Authorization: Bearer <token>` "
                "(create one with `shipway token create`)."
            )
        # Cached for a few seconds per token, so most requests never reach the database here. A miss
        # reads the token row and, at most once a minute per token, writes its last use: on SQLite
        # that short write waits only for another writer's transaction, so it stays on the loop too.
        return await call(identity.authenticate_cached, secret.strip(), store=store)

    def need(role: str, *, per_model: bool = False) -> Callable[..., Any]:
        async def check(request: Request) -> Actor:
            actor = await authenticated(request)
            identity.require(role, request.path_params.get("name") if per_model else None, actor=actor)
            return actor

        check.required_role = (role, per_model)  # type: ignore[attr-defined]  # for the REST reference
        if insecure_local:
            check.__name__ = f"need_{role}"
            return check  # no token: the document declares no security scheme, which is the truth
        return _TokenCheck(check)

    viewer, admin = need("viewer"), need("admin")
    model_viewer, model_contributor = need("viewer", per_model=True), need("contributor", per_model=True)
    model_approver = need("approver", per_model=True)

    @app.get("/health", tags=["operations"], summary="Liveness and store health")
    async def health() -> s.Health:
        def check() -> dict[str, Any]:
            with store.read() as conn:
                conn.execute(schema.experiments.select().limit(1)).all()
            return {"status": "ok", "version": shipway.__version__}

        return s.Health(**await call(check), schema_revision=await call(current_revision, store.engine))

    @app.get("/api/v1/server", tags=["operations"], summary="Where the server keeps its data")
    async def server_info(_: Actor = Depends(admin)) -> dict[str, Any]:
        return {
            "store": store.describe(),
            "artifacts": store.settings.artifact_uri,
            "authentication": not insecure_local,
        }

    @app.get("/api/v1/whoami", tags=["identity"], summary="The identity a token stands for")
    async def whoami(actor: Actor = Depends(viewer)) -> dict[str, Any]:
        with acting_as(actor):
            return await call(governance.whoami)

    @app.get("/api/v1/experiments", tags=["tracking"], summary="List experiments, newest first")
    async def experiments(
        limit: Limit = DEFAULT_PAGE, page_token: PageToken = None, _: Actor = Depends(viewer)
    ) -> s.ExperimentPage:
        found = await call(list_experiments, store=store)
        page, token = _page(found, lambda e: (-e.created_at, e.name), (int, str), limit, page_token)
        out = [{"id": e.id, "name": e.name, "runs": e.runs, "created_at": iso(e.created_at)} for e in page]
        return s.ExperimentPage.model_validate({"experiments": out, "next_page_token": token})

    @app.get(
        "/api/v1/experiments/{experiment}/runs",
        tags=["tracking"],
        summary="Search runs",
        response_model=s.RunPage,
    )
    async def runs(
        experiment: str,
        filter: str | None = Query(None, description="e.g. metrics.auc > 0.8 and params.depth = 6"),
        order_by: str | None = Query(None, description="e.g. metrics.auc desc"),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        page_token: PageToken = None,
        _: Actor = Depends(viewer),
    ) -> dict[str, Any]:
        page = await call(
            search_runs,
            experiment,
            filter=filter,
            order_by=order_by,
            limit=limit,
            page_token=page_token,
            store=store,
        )
        return {"runs": [r.to_dict() for r in page], "next_page_token": page.next_page_token}

    @app.get("/api/v1/runs/{run_id}", tags=["tracking"], summary="One run")
    async def run(run_id: str, _: Actor = Depends(viewer)) -> dict[str, Any]:
        return (await call(get_run, run_id, store=store)).to_dict()

    @app.get("/api/v1/runs/{run_id}/metrics/{key:path}", tags=["tracking"], summary="Metric history")
    async def history(run_id: str, key: str, _: Actor = Depends(viewer)) -> dict[str, Any]:
        points = await call(metric_history, run_id, key, store=store)
        return {
            "run_id": run_id,
            "key": key,
            "points": [
                {"step": p.step, "timestamp": p.timestamp, "value": None if math.isnan(p.value) else p.value}
                for p in points
            ],
        }

    @app.get("/api/v1/models", tags=["registry"], summary="List registered models, by name")
    async def models(
        limit: Limit = DEFAULT_PAGE, page_token: PageToken = None, actor: Actor = Depends(viewer)
    ) -> s.ModelPage:
        from shipway.registry import list_models

        found = [m for m in await call(list_models, store=store) if actor.can("viewer", m.name)]
        page, token = _page(found, lambda m: (m.name,), (str,), limit, page_token)
        out = [
            {
                "name": m.name,
                "versions": m.versions,
                "latest": m.latest,
                "aliases": m.aliases,
                "created_at": iso(m.created_at),
            }
            for m in page
        ]
        return s.ModelPage.model_validate({"models": out, "next_page_token": token})

    @app.get("/api/v1/models/{name}/versions", tags=["registry"], summary="Versions of a model, newest first")
    async def model_versions(
        name: str, limit: Limit = DEFAULT_PAGE, page_token: PageToken = None, _: Actor = Depends(model_viewer)
    ) -> s.VersionPage:
        from shipway.registry import list_versions

        found = await call(list_versions, name, store=store)
        page, token = _page(found, lambda v: (-v.version,), (int,), limit, page_token)
        return s.VersionPage.model_validate(
            {"versions": [_version_json(v) for v in page], "next_page_token": token}
        )

    @app.get("/api/v1/models/{name}/versions/{version}", tags=["registry"], summary="One version")
    async def model_version(name: str, version: Version, _: Actor = Depends(model_viewer)) -> s.VersionOut:
        from shipway.registry import get_version

        return s.VersionOut.model_validate(_version_json(await call(get_version, name, version, store=store)))

    @app.get("/api/v1/models/{name}/aliases/{alias}", tags=["registry"], summary="The version an alias names")
    async def model_alias(name: str, alias: str, _: Actor = Depends(model_viewer)) -> s.VersionOut:
        from shipway.registry import get_version

        found = await call(get_version, name, alias=alias, store=store)
        return s.VersionOut.model_validate(_version_json(found))

    # -- registry writes ---------------------------------------------------------------------

    @app.put("/api/v1/models/{name}/aliases/{alias}", tags=["registry"], summary="Point a plain alias")
    def put_alias(
        name: str, alias: str, body: s.AliasBody, actor: Actor = Depends(model_contributor)
    ) -> s.VersionOut:
        from shipway.registry import get_version, set_alias

        with acting_as(actor):
            set_alias(name, alias, body.version, store=store)
        return s.VersionOut.model_validate(_version_json(get_version(name, alias=alias, store=store)))

    @app.delete("/api/v1/models/{name}/aliases/{alias}", tags=["registry"], summary="Remove a plain alias")
    def delete_alias(name: str, alias: str, actor: Actor = Depends(model_contributor)) -> dict[str, Any]:
        from shipway.registry import delete_alias as _delete

        with acting_as(actor):
            _delete(name, alias, store=store)
        return {"deleted": alias}

    @app.patch("/api/v1/models/{name}/versions/{version}", tags=["registry"], summary="Edit a version's text")
    def edit_version(
        name: str, version: Version, body: s.VersionEdit, actor: Actor = Depends(model_contributor)
    ) -> s.VersionOut:
        from shipway.registry import update_version

        with acting_as(actor):
            edited = update_version(
                name, version, description=body.description, tags=body.tags, card=body.card, store=store
            )
        return s.VersionOut.model_validate(_version_json(edited))

    # -- governance --------------------------------------------------------------------------

    @app.post(
        "/api/v1/models/{name}/versions/{version}/promote",
        tags=["governance"],
        summary="Promote",
        responses={422: {**ERROR, "description": "A gate did not pass; details hold the report"}},
    )
    def promote(
        name: str, version: Version, body: s.PromoteBody, actor: Actor = Depends(model_contributor)
    ) -> s.RequestOut:
        with acting_as(actor):
            found = governance.promote(name, version, body.to, store=store)
        return s.RequestOut.model_validate(found.to_dict())

    @app.post("/api/v1/models/{name}/versions/{version}/approve", tags=["governance"], summary="Approve")
    def approve(
        name: str, version: Version, body: s.ApproveBody, actor: Actor = Depends(model_approver)
    ) -> s.RequestOut:
        with acting_as(actor):
            found = governance.approve(name, version, body.to, comment=body.comment, store=store)
        return s.RequestOut.model_validate(found.to_dict())

    @app.post("/api/v1/models/{name}/versions/{version}/reject", tags=["governance"], summary="Reject")
    def reject(
        name: str, version: Version, body: s.RejectBody, actor: Actor = Depends(model_approver)
    ) -> s.RequestOut:
        with acting_as(actor):
            found = governance.reject(name, version, body.to, reason=body.reason, store=store)
        return s.RequestOut.model_validate(found.to_dict())

    @app.get("/api/v1/requests", tags=["governance"], summary="Promotion requests, newest first")
    async def requests(
        model: str | None = Query(None, max_length=256),
        status: str | None = Query(None, max_length=16),
        limit: Limit = DEFAULT_PAGE,
        page_token: PageToken = None,
        actor: Actor = Depends(viewer),
    ) -> s.RequestPage:
        found = await call(
            governance.list_requests,
            model=model,
            status=status,
            limit=limit,
            page_token=page_token,
            store=store,
        )
        # A page may hold fewer than `limit` requests when the token may not see some models.
        visible = [r.to_dict() for r in found if actor.can("viewer", r.model)]
        return s.RequestPage.model_validate({"requests": visible, "next_page_token": found.next_page_token})

    @app.get("/api/v1/requests/{request_id}", tags=["governance"], summary="One promotion request")
    async def request(request_id: str, actor: Actor = Depends(viewer)) -> s.RequestOut:
        found = await call(governance.get_request, request_id, store=store)
        identity.require("viewer", found.model, actor=actor)
        return s.RequestOut.model_validate(found.to_dict())

    @app.get("/api/v1/policy", tags=["governance"], summary="The policy in force")
    async def policy(_: Actor = Depends(viewer)) -> dict[str, Any]:
        current = await call(governance.current_policy, store=store)
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
    def put_policy(body: s.PolicyBody, actor: Actor = Depends(admin)) -> dict[str, Any]:
        with acting_as(actor):
            applied = governance.apply_policy(body.source, store=store)
        return {"version": applied.version, "digest": applied.digest}

    @app.get("/api/v1/audit", tags=["audit"], summary="Audit entries, oldest first (keyset pages)")
    async def audit_entries(
        after_seq: int = Query(0, ge=0, le=s.INT64),
        limit: int = Query(1000, ge=1, le=10_000),
        subject: str | None = Query(None, max_length=512),
        _: Actor = Depends(admin),
    ) -> s.AuditPage:
        found = await call(
            governance.audit.entries, after_seq=after_seq, limit=limit, subject=subject, store=store
        )
        last = found[-1].seq if len(found) == limit else None
        return s.AuditPage.model_validate({"entries": [e.to_dict() for e in found], "next_after_seq": last})

    @app.get("/api/v1/audit/verify", tags=["audit"], summary="Recompute the audit chain")
    def audit_verify(_: Actor = Depends(admin)) -> dict[str, Any]:
        return governance.audit.verify(store=store).to_dict()

    # -- identities and tokens ----------------------------------------------------------------

    @app.post(
        "/api/v1/tokens",
        tags=["identity"],
        summary="Create a token (shown once)",
        status_code=201,
        responses={404: {**ERROR, "description": "No such principal"}},
    )
    def create_token(body: s.TokenBody, actor: Actor = Depends(viewer)) -> s.NewToken:
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
        return s.NewToken.model_validate({"token": secret, **info.to_dict()})

    @app.get(
        "/api/v1/tokens",
        tags=["identity"],
        summary="Your tokens (admins: anyone's), oldest first",
        responses={404: {**ERROR, "description": "No such principal"}},
    )
    async def tokens(
        principal: str | None = Query(None, max_length=128),
        limit: Limit = DEFAULT_PAGE,
        page_token: PageToken = None,
        actor: Actor = Depends(viewer),
    ) -> s.TokenPage:
        with acting_as(actor):
            found = await call(governance.list_tokens, principal, store=store)
        page, token = _page(found, lambda t: (t.created_at, t.id), (int, str), limit, page_token)
        return s.TokenPage.model_validate({"tokens": [t.to_dict() for t in page], "next_page_token": token})

    @app.delete("/api/v1/tokens/{token_id}", tags=["identity"], summary="Revoke a token")
    def revoke(token_id: str, actor: Actor = Depends(viewer)) -> s.TokenOut:
        with acting_as(actor):
            return s.TokenOut.model_validate(governance.revoke_token(token_id, store=store).to_dict())

    @app.get("/api/v1/principals", tags=["identity"], summary="Users and service accounts, by name")
    async def principals(
        limit: Limit = DEFAULT_PAGE, page_token: PageToken = None, actor: Actor = Depends(admin)
    ) -> s.PrincipalPage:
        with acting_as(actor):
            found = await call(governance.list_principals, store=store)
        page, token = _page(found, lambda p: (p.name,), (str,), limit, page_token)
        out = [p.to_dict() for p in page]
        return s.PrincipalPage.model_validate({"principals": out, "next_page_token": token})

    @app.post(
        "/api/v1/principals", tags=["identity"], summary="Add a user or service account", status_code=201
    )
    def add_principal(body: s.PrincipalBody, actor: Actor = Depends(admin)) -> s.PrincipalOut:
        with acting_as(actor):
            added = governance.add_principal(body.name, body.role, kind=body.kind, store=store)
        return s.PrincipalOut.model_validate(added.to_dict())

    @app.post("/api/v1/principals/{principal}/grants", tags=["identity"], summary="Set a role")
    def grant(principal: str, body: s.GrantBody, actor: Actor = Depends(admin)) -> s.PrincipalOut:
        with acting_as(actor):
            granted = governance.grant(principal, body.role, model=body.model, store=store)
        return s.PrincipalOut.model_validate(granted.to_dict())

    app.include_router(ingest.build_router(store, need))
    app.include_router(monitoring.build_router(store, need))
    document_errors(app)
    return app


class _TokenCheck(HTTPBearer):
    """A route's whole authorization as one dependency, documented as the bearer security scheme.

    Each dependency level FastAPI resolves costs tens of microseconds a request, so the token check
    and the role check are one call rather than a chain of three.
    """

    def __init__(self, check: Callable[[Request], Awaitable[Actor]]) -> None:
        super().__init__(
            auto_error=False, scheme_name="bearerAuth", description="A token from `shipway token create`"
        )
        self.check = check

    async def __call__(self, request: Request) -> Actor:  # type: ignore[override]
        return await self.check(request)


def app_from_environment() -> FastAPI:
    """The app for one ``shipway up --workers N`` worker: the store the settings name, its own pool.

    Each worker process keeps its own few-second token cache, so a revocation made through one
    worker reaches the others within that time.
    """
    from shipway.core.config import Settings

    return create_app(Store(Settings.resolve()), insecure_local=os.environ.get(INSECURE_LOCAL_ENV) == "1")


def _version_json(v: Any) -> dict[str, Any]:
    # A shallow copy: dataclasses.asdict deep-copies every nested dict, a tenth of a read's time.
    data = {f.name: getattr(v, f.name) for f in fields(v)}
    data.update(uri=v.uri, created_at=iso(v.created_at), archived_at=iso(v.archived_at), signed=v.signed)
    return data
