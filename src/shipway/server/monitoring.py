"""Alerts and SLOs over the control-plane API.

    GET  /api/v1/alerts                 alerts, newest first (viewer; only models the token may read)
    POST /api/v1/alerts/{alert_id}/ack  acknowledge one (contributor on the alert's model)
    GET  /api/v1/slos/{name}            a model's SLO, error budget left and burn rates (viewer on it)

Rules, SLOs and silences are set with the library or the CLI where the store is (contributor on
the model); the server's monitor evaluates them. Webhook URLs are never returned: they are often
secrets (a Slack incoming webhook is one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from shipway.core.actor import Actor, acting_as
from shipway.core.clock import iso
from shipway.monitoring.alerts import STATES, Alert, ack_alert, list_alerts
from shipway.monitoring.slo import slo_status
from shipway.store import Store

__all__ = ["build_router"]

AlertId = Path(pattern="^[0-9a-f]{6,32}$", description="An alert's id, or a unique prefix of 6+ characters")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class AlertOut(_Out):
    id: str
    rule: str
    model: str
    severity: str
    state: str
    value: float | None
    summary: str
    since: str
    started_at: str
    fired_at: str | None
    resolved_at: str | None
    acked_at: str | None
    acked_by: str | None
    silenced: bool


class AlertPage(_Out):
    alerts: list[AlertOut]
    next_page_token: str | None


class SloObjective(_Out):
    objective: str
    target: float
    description: str
    requests_30d: int
    bad_30d: int
    budget: float
    budget_left: float | None
    burn_rates: dict[str, float | None]
    page: bool
    ticket: bool


class SloOut(_Out):
    model: str
    environment: str
    availability: float | None
    latency_ms: float | None
    latency_share: float | None
    webhooks: int
    updated_at: str
    updated_by: str
    at: str
    objectives: list[SloObjective]


def _alert(a: Alert) -> dict[str, Any]:
    data = a.to_dict()
    for key in ("since", "started_at", "fired_at", "resolved_at", "acked_at"):
        data[key] = iso(data[key])
    data.pop("updated_at")
    return data


def build_router(store: Store, need: Callable[..., Any]) -> APIRouter:
    """The monitoring routes, authorized by the app's ``need(role, per_model=...)``."""
    router = APIRouter(tags=["monitoring"])
    viewer, model_viewer = need("viewer"), need("viewer", per_model=True)

    async def contributor_on_its_model(actor: Actor = Depends(viewer)) -> Actor:
        return actor  # ack_alert checks the role, on the model of the alert the path names

    contributor_on_its_model.required_role = ("contributor", True)  # type: ignore[attr-defined]

    @router.get("/api/v1/alerts", summary="Alerts, newest first")
    async def alerts(
        state: str | None = Query(None, pattern="^(" + "|".join(STATES) + ")$"),
        model: str | None = Query(None, max_length=256),
        limit: int = Query(100, ge=1, le=1000),
        page_token: str | None = Query(None, max_length=2048),
        actor: Actor = Depends(viewer),
    ) -> AlertPage:
        found = await run_in_threadpool(
            list_alerts, state=state, model=model, limit=limit, page_token=page_token, store=store
        )
        # A page may hold fewer than `limit` alerts when the token may not see some models.
        visible = [_alert(a) for a in found if actor.can("viewer", a.model)]
        return AlertPage.model_validate({"alerts": visible, "next_page_token": found.next_page_token})

    @router.post("/api/v1/alerts/{alert_id}/ack", summary="Acknowledge an alert")
    def ack(alert_id: str = AlertId, actor: Actor = Depends(contributor_on_its_model)) -> AlertOut:
        with acting_as(actor):
            return AlertOut.model_validate(_alert(ack_alert(alert_id, store=store)))

    @router.get("/api/v1/slos/{name}", summary="A model's SLO, error budget and burn rates")
    async def slo(name: str, _: Actor = Depends(model_viewer)) -> SloOut:
        data = await run_in_threadpool(slo_status, name, store=store)
        data.update(webhooks=len(data["webhooks"]), updated_at=iso(data["updated_at"]), at=iso(data["at"]))
        return SloOut.model_validate(data)

    return router
