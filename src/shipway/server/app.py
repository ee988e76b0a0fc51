"""The control-plane HTTP API. For now: health, and tracking data read-only as JSON."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import shipway
from shipway.core.clock import iso
from shipway.core.errors import ShipwayError
from shipway.store import Store, current_revision, schema
from shipway.tracking import get_run, list_experiments, metric_history, search_runs
from shipway.tracking.search import MAX_LIMIT


def _envelope(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, "details": details}}
    )


def create_app(store: Store) -> FastAPI:
    """The ASGI app serving ``store``."""
    app = FastAPI(
        title="Shipway",
        version=shipway.__version__,
        description="Shipway control-plane API: tracking data, read-only for now.",
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

    @app.get("/health", tags=["operations"], summary="Liveness and store health")
    def health() -> dict[str, Any]:
        with store.read() as conn:
            conn.execute(schema.experiments.select().limit(1)).all()
        return {
            "status": "ok",
            "version": shipway.__version__,
            "store": store.describe(),
            "schema_revision": current_revision(store.engine),
            "artifacts": store.settings.artifact_uri,
        }

    @app.get("/api/v1/experiments", tags=["tracking"], summary="List experiments")
    def experiments() -> dict[str, Any]:
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
    ) -> dict[str, Any]:
        page = search_runs(
            experiment, filter=filter, order_by=order_by, limit=limit, page_token=page_token, store=store
        )
        return {"runs": [r.to_dict() for r in page], "next_page_token": page.next_page_token}

    @app.get("/api/v1/runs/{run_id}", tags=["tracking"], summary="One run")
    def run(run_id: str) -> dict[str, Any]:
        return get_run(run_id, store=store).to_dict()

    @app.get("/api/v1/runs/{run_id}/metrics/{key:path}", tags=["tracking"], summary="Metric history")
    def history(run_id: str, key: str) -> dict[str, Any]:
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
    def models() -> dict[str, Any]:
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
            ]
        }

    @app.get("/api/v1/models/{name}/versions", tags=["registry"], summary="Versions of a model")
    def model_versions(name: str) -> dict[str, Any]:
        from shipway.registry import list_versions

        return {"versions": [_version_json(v) for v in list_versions(name, store=store)]}

    @app.get("/api/v1/models/{name}/versions/{version}", tags=["registry"], summary="One version")
    def model_version(name: str, version: int) -> dict[str, Any]:
        from shipway.registry import get_version

        return _version_json(get_version(name, version, store=store))

    @app.get("/api/v1/models/{name}/aliases/{alias}", tags=["registry"], summary="The version an alias names")
    def model_alias(name: str, alias: str) -> dict[str, Any]:
        from shipway.registry import get_version

        return _version_json(get_version(name, alias=alias, store=store))

    return app


def _version_json(v: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(v)
    data.update(uri=v.uri, created_at=iso(v.created_at), archived_at=iso(v.archived_at), signed=v.signed)
    return data
