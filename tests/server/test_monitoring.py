"""Alerts and SLOs over real HTTP: what each role sees and may do, and answers that leak no secret."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from servers import free_port
from sklearn.dummy import DummyClassifier

import shipway
from shipway import governance
from shipway.monitoring import Monitor, add_rule, set_slo
from shipway.monitoring.traffic import MINUTE_MS, Counts, record_traffic
from shipway.server import create_app
from shipway.store import Store


@pytest.fixture
def api(store: Store) -> Iterator[dict[str, Any]]:
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for name in ("churn", "fraud"):
        shipway.register_model(model, name=name, store=store)
    tokens = {}
    for person, role in (("vic", "viewer"), ("cora", "contributor")):
        governance.add_principal(person, role, store=store)
        _, tokens[role] = governance.create_token(person, store=store)
    _, tokens["fraud-only"] = governance.create_token("cora", models=["fraud"], store=store)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield {"client": client, "store": store, "tokens": tokens}
    server.should_exit = True
    thread.join(timeout=10)


def _as(ctx: dict[str, Any], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx['tokens'][who]}"}


def test_alerts_are_listed_per_model_the_token_may_read_and_acked_by_contributors(
    api: dict[str, Any],
) -> None:
    store, client = api["store"], api["client"]
    for model in ("churn", "fraud"):
        add_rule(model, "requests", below=1, window="5m", store=store)
    Monitor(store).evaluate_once()
    listed = client.get("/api/v1/alerts", headers=_as(api, "viewer")).json()
    assert sorted(a["model"] for a in listed["alerts"]) == ["churn", "fraud"]
    assert all(a["state"] == "firing" and a["since"].endswith("Z") for a in listed["alerts"])
    scoped = client.get("/api/v1/alerts", headers=_as(api, "fraud-only")).json()
    assert [a["model"] for a in scoped["alerts"]] == ["fraud"]
    churn = next(a for a in listed["alerts"] if a["model"] == "churn")
    fraud = next(a for a in listed["alerts"] if a["model"] == "fraud")

    refused = client.post(f"/api/v1/alerts/{churn['id']}/ack", headers=_as(api, "viewer"))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    elsewhere = client.post(f"/api/v1/alerts/{churn['id'][:8]}/ack", headers=_as(api, "fraud-only"))
    assert elsewhere.status_code == 403
    acked = client.post(f"/api/v1/alerts/{fraud['id'][:8]}/ack", headers=_as(api, "fraud-only"))
    assert acked.status_code == 200 and acked.json()["acked_by"] == "cora"
    assert client.post("/api/v1/alerts/abcdef0123/ack", headers=_as(api, "contributor")).status_code == 404
    assert client.post("/api/v1/alerts/not-hex/ack", headers=_as(api, "contributor")).status_code == 400

    record_traffic(
        store,
        "w1",
        {("churn", "1", int(time.time() * 1000) // MINUTE_MS * MINUTE_MS): Counts(5, 0)},
        environment="prod",
    )
    Monitor(store).evaluate_once()
    resolved = client.get("/api/v1/alerts?state=resolved", headers=_as(api, "viewer")).json()["alerts"]
    assert [a["id"] for a in resolved] == [churn["id"]]
    late = client.post(f"/api/v1/alerts/{churn['id']}/ack", headers=_as(api, "contributor"))
    assert late.status_code == 409 and "resolved" in late.json()["error"]["message"]
    page = client.get("/api/v1/alerts?limit=1", headers=_as(api, "viewer")).json()
    assert len(page["alerts"]) == 1 and page["next_page_token"]
    rest = client.get(
        f"/api/v1/alerts?limit=1&page_token={page['next_page_token']}", headers=_as(api, "viewer")
    )
    assert (
        rest.json()["alerts"][0]["id"] != page["alerts"][0]["id"] and rest.json()["next_page_token"] is None
    )
    bad = client.get("/api/v1/alerts?page_token=garbage", headers=_as(api, "viewer"))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"


def test_an_slo_is_read_with_its_budget_and_burn_rates_but_not_its_webhooks(api: dict[str, Any]) -> None:
    store, client = api["store"], api["client"]
    missing = client.get("/api/v1/slos/churn", headers=_as(api, "viewer"))
    assert missing.status_code == 404 and "shipway slo set churn" in missing.json()["error"]["message"]
    set_slo("churn", availability=99.9, webhooks=["https://hooks.example.com/T000/B000/secret"], store=store)
    slo = client.get("/api/v1/slos/churn", headers=_as(api, "viewer")).json()
    assert slo["availability"] == pytest.approx(0.999) and slo["webhooks"] == 1
    assert "secret" not in str(slo)
    (objective,) = slo["objectives"]
    assert objective["objective"] == "availability" and objective["budget_left"] is None
    assert set(objective["burn_rates"]) == {"5m", "30m", "1h", "6h", "3d"}
    assert client.get("/api/v1/slos/churn", headers=_as(api, "fraud-only")).status_code == 403
