"""Authentication and authorization over real HTTP: the role x endpoint matrix, property-level checks.

The server is uvicorn on a loopback port, serving the test's store (SQLite or PostgreSQL).
"""

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from servers import free_port
from sklearn.dummy import DummyClassifier

import shipway
from shipway import governance
from shipway.core.actor import acting_as
from shipway.governance import identity
from shipway.registry import generate_keypair, get_version, integrity
from shipway.server import create_app
from shipway.store import Store
from shipway.tracking.runs import create_run

POLICY = """
environments: [staging, prod]
models:
  default:
    prod:
      approvals: {count: 5, role: approver, distinct_from: [author, requester]}
"""

ROLES = ["viewer", "contributor", "approver", "admin"]
PEOPLE = {"viewer": "vic", "contributor": "cora", "approver": "abe", "admin": "ada"}


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[dict[str, Any]]:
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="churn")
    governance.apply_policy(POLICY, store=store)
    tokens, actors = {}, {}
    for role, name in PEOPLE.items():
        governance.add_principal(name, role, store=store)
        _, tokens[role] = governance.create_token(name, store=store)
        actors[role] = identity.authenticate(tokens[role], store=store)
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
        yield {"client": client, "tokens": tokens, "actors": actors, "store": store, "tmp": tmp_path}
    server.should_exit = True
    thread.join(timeout=10)


def _pending_prod(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    # A fresh pending request, made by the contributor, so approvers are neither author nor requester.
    with acting_as(ctx["actors"]["contributor"]):
        governance.promote("churn", 1, "prod", store=ctx["store"])
    return {}


def _alias(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    shipway.set_alias("churn", "temp", 1)
    return {}


def _own_token(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    actor = ctx["actors"].get(role)
    if actor is None:
        return {"token_id": "0" * 32}
    with acting_as(actor):
        info, _ = governance.create_token(store=ctx["store"])
    return {"token_id": info.id}


def _request_id(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    with acting_as(ctx["actors"]["contributor"]):
        request = governance.promote("churn", 1, "prod", store=ctx["store"])
    return {"request_id": request.id}


def _own_run(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    # Runs take writes from whoever started them (and admins): each caller writes to its own.
    actor = ctx["actors"].get(role, ctx["actors"]["contributor"])
    with acting_as(actor):
        run_id, _ = create_run(ctx["store"], "matrix", None, actor.name)
    return {"run_id": run_id}


def _blob(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    data = uuid.uuid4().bytes
    return {"digest": hashlib.sha256(data).hexdigest(), "_content": data}


def _artifacts(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    blob = ctx["store"].blobs.put_bytes(b"artifact")
    entry = {"path": "notes.txt", "digest": blob.digest, "size": blob.size}
    return {**_own_run(ctx, role), "_body": {"entries": [entry]}}


def _dataset(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    path = Path(ctx["tmp"]) / f"{uuid.uuid4().hex}.parquet"
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(path, index=False)
    return {"_body": {"name": "uploaded", "digest": ctx["store"].blobs.put_file(path).digest}}


def _new_version(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    first = get_version("churn", 1, store=ctx["store"])
    fields = ("flavor", "format", "flavor_meta", "manifest", "schema")
    return {"_body": {k: getattr(first, k) for k in fields}}


def _signature(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    first = get_version("churn", 1, store=ctx["store"])
    private, public = generate_keypair(Path(ctx["tmp"]) / uuid.uuid4().hex)
    signature, _ = integrity.sign(first.payload(), private)
    return {"_body": {"signature": signature, "public_key": public.read_text()}}


def _file(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    return {"path": sorted(get_version("churn", 1, store=ctx["store"]).manifest)[0]}


def _someone(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    name = f"u-{uuid.uuid4().hex[:8]}"
    governance.add_principal(name, store=ctx["store"])
    return {"principal": name}


def _firing_alert(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    # A rule that fires on no traffic; acknowledging its alert again changes nothing.
    from shipway.monitoring import Monitor, add_rule, list_alerts, list_rules

    if not list_rules(store=ctx["store"]):
        add_rule("churn", "requests", below=1, window="5m", store=ctx["store"])
        Monitor(ctx["store"]).evaluate_once()
    return {"alert_id": list_alerts(state="firing", store=ctx["store"])[0].id}


def _slo(ctx: dict[str, Any], role: str) -> dict[str, Any]:
    from shipway.monitoring import set_slo

    set_slo("churn", availability=99.9, store=ctx["store"])
    return {}


# (method, route, least role or "public", request body or a maker of one, setup before each call;
# a setup may also return the body, as "_body" (JSON) or "_content" (bytes))
MATRIX: list[tuple[str, str, str, Any, Callable[..., dict[str, Any]] | None]] = [
    ("GET", "/health", "public", None, None),
    ("GET", "/openapi.json", "public", None, None),
    ("GET", "/docs", "public", None, None),
    ("GET", "/docs/oauth2-redirect", "public", None, None),
    ("GET", "/redoc", "public", None, None),
    ("GET", "/api/v1/server", "admin", None, None),
    ("GET", "/api/v1/whoami", "viewer", None, None),
    ("GET", "/api/v1/experiments", "viewer", None, None),
    ("GET", "/api/v1/experiments/{experiment}/runs", "viewer", None, None),
    ("GET", "/api/v1/runs/{run_id}", "viewer", None, None),
    ("GET", "/api/v1/runs/{run_id}/metrics/{key:path}", "viewer", None, None),
    ("GET", "/api/v1/models", "viewer", None, None),
    ("GET", "/api/v1/models/{name}/versions", "viewer", None, None),
    ("GET", "/api/v1/models/{name}/versions/{version}", "viewer", None, None),
    ("GET", "/api/v1/models/{name}/aliases/{alias}", "viewer", None, None),
    ("PUT", "/api/v1/models/{name}/aliases/{alias}", "contributor", {"version": 1}, None),
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}", "contributor", None, _alias),
    ("PATCH", "/api/v1/models/{name}/versions/{version}", "contributor", {"description": "d"}, None),
    ("POST", "/api/v1/models/{name}/versions/{version}/promote", "contributor", {"to": "staging"}, None),
    ("POST", "/api/v1/models/{name}/versions/{version}/approve", "approver", {"to": "prod"}, _pending_prod),
    (
        "POST",
        "/api/v1/models/{name}/versions/{version}/reject",
        "approver",
        {"to": "prod", "reason": "no"},
        _pending_prod,
    ),
    ("GET", "/api/v1/requests", "viewer", None, None),
    ("GET", "/api/v1/requests/{request_id}", "viewer", None, _request_id),
    ("GET", "/api/v1/policy", "viewer", None, None),
    ("PUT", "/api/v1/policy", "admin", {"source": POLICY}, None),
    ("GET", "/api/v1/audit", "admin", None, None),
    ("GET", "/api/v1/audit/verify", "admin", None, None),
    ("POST", "/api/v1/tokens", "viewer", {"description": "matrix"}, None),
    ("GET", "/api/v1/tokens", "viewer", None, None),
    ("DELETE", "/api/v1/tokens/{token_id}", "viewer", None, _own_token),
    ("GET", "/api/v1/principals", "admin", None, None),
    ("POST", "/api/v1/principals", "admin", lambda: {"name": f"u-{uuid.uuid4().hex[:8]}"}, None),
    ("POST", "/api/v1/principals/{principal}/grants", "admin", {"role": "viewer", "model": "churn"}, None),
    # What the SDK's remote mode writes through.
    ("PUT", "/api/v1/blobs/{digest}", "contributor", None, _blob),
    ("POST", "/api/v1/runs", "contributor", {"experiment": "matrix"}, None),
    ("GET", "/api/v1/runs", "viewer", None, None),
    ("POST", "/api/v1/runs/{run_id}/log", "contributor", {"metrics": [["m", 1.0, 0, 1]]}, _own_run),
    ("POST", "/api/v1/runs/{run_id}/artifacts", "contributor", None, _artifacts),
    ("GET", "/api/v1/runs/{run_id}/artifacts/{path:path}", "viewer", None, None),
    ("POST", "/api/v1/datasets", "contributor", None, _dataset),
    ("GET", "/api/v1/datasets/{dataset}/versions/{version}", "viewer", None, None),
    ("GET", "/api/v1/datasets/{dataset}/versions/{version}/data", "viewer", None, None),
    ("POST", "/api/v1/models/{name}/versions", "contributor", None, _new_version),
    ("POST", "/api/v1/models/{name}/versions/{version}/signature", "contributor", None, _signature),
    ("GET", "/api/v1/models/{name}/versions/{version}/files/{path:path}", "viewer", None, _file),
    ("GET", "/api/v1/audit/head", "admin", None, None),
    ("POST", "/api/v1/principals/{principal}/disable", "admin", None, _someone),
    # Alerts and SLOs: viewers read, contributors on the alert's model acknowledge.
    ("GET", "/api/v1/alerts", "viewer", None, None),
    ("POST", "/api/v1/alerts/{alert_id}/ack", "contributor", None, _firing_alert),
    ("GET", "/api/v1/slos/{name}", "viewer", None, _slo),
]


def test_every_route_is_in_the_matrix(api: dict[str, Any]) -> None:
    # The OpenAPI document lists every route, including those of included routers; the
    # documentation pages themselves are not in it.
    app = create_app(api["store"])
    app_routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method.upper() != "HEAD"
    }
    app_routes |= {
        (m, r.path)
        for r in app.routes
        if getattr(r, "path", "").startswith(("/docs", "/redoc", "/openapi"))
        for m in r.methods - {"HEAD"}
    }
    assert app_routes == {(m, path.replace(":path", "")) for m, path, *_ in MATRIX}


def test_role_by_endpoint_matrix(api: dict[str, Any]) -> None:
    client: httpx.Client = api["client"]
    notes = Path(api["tmp"]) / "a.txt"
    notes.write_text("hello")
    with shipway.start_run(experiment="churn") as run:
        run.log_metric("loss", 0.5)
        run.log_artifact(notes)
    shipway.log_dataset(pd.DataFrame({"x": [1.0]}), name="matrix-ds")
    shipway.set_alias("churn", "champion", 1)
    values = {
        "experiment": "churn",
        "run_id": run.id,
        "key": "loss",
        "name": "churn",
        "version": "1",
        "alias": "champion",
        "principal": "vic",
        "path": "a.txt",
        "dataset": "matrix-ds",
        "digest": "0" * 64,
        "alert_id": "0" * 32,
    }
    failures = []
    callers = ["anonymous", "bad-token", *ROLES]
    for method, route, least, body, setup in MATRIX:
        for caller in callers:
            extra = setup(api, caller) if setup and (caller in ROLES) else {}
            if setup is _own_token and caller not in ROLES:
                extra = {"token_id": "0" * 32}
            if setup is _request_id and caller not in ROLES:
                extra = _request_id(api, "contributor")
            path_values = {**values, **extra}
            if route.endswith("aliases/{alias}") and method == "DELETE":
                path_values["alias"] = "temp"
            payload = body() if callable(body) else body
            payload = path_values.pop("_body", payload)
            content = path_values.pop("_content", None)
            path = route.replace(":path}", "}").format(**path_values)
            headers = {}
            if caller == "bad-token":
                headers["Authorization"] = "Bearer " + identity.new_token_secret()
            elif caller in ROLES:
                headers["Authorization"] = "Bearer " + api["tokens"][caller]
            if content is not None:
                response = client.request(method, path, content=content, headers=headers)
            else:
                response = client.request(method, path, json=payload, headers=headers)
            if least == "public":
                expected = "2xx"
            elif caller in ("anonymous", "bad-token"):
                expected = "401"
            elif ROLES.index(caller) < ROLES.index(least):
                expected = "403"
            else:
                expected = "2xx"
            got = "2xx" if 200 <= response.status_code < 300 else str(response.status_code)
            if got != expected:
                failures.append(
                    f"{method} {route} as {caller}: {response.status_code} (want {expected}) "
                    f"{response.text[:200]}"
                )
            elif got != "2xx" and response.headers.get("content-type", "").startswith("application/json"):
                assert set(response.json()["error"]) == {"code", "message", "details"}
    assert not failures, "\n".join(failures)


def test_clients_cannot_set_server_owned_fields(api: dict[str, Any]) -> None:
    client: httpx.Client = api["client"]
    admin = {"Authorization": "Bearer " + api["tokens"]["admin"]}
    for method, path, body in [
        ("PATCH", "/api/v1/models/churn/versions/1", {"created_by": "mallory"}),
        ("PATCH", "/api/v1/models/churn/versions/1", {"status": "ARCHIVED"}),
        ("POST", "/api/v1/models/churn/versions/1/promote", {"to": "staging", "status": "completed"}),
        ("POST", "/api/v1/models/churn/versions/1/approve", {"to": "prod", "approver": "bob"}),
        ("POST", "/api/v1/tokens", {"principal_id": "x"}),
    ]:
        response = client.request(method, path, json=body, headers=admin)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_input"
    version = client.get("/api/v1/models/churn/versions/1", headers=admin).json()
    assert version["status"] == "READY" and version["created_by"] != "mallory"


def test_a_model_scoped_token_sees_only_its_models(api: dict[str, Any]) -> None:
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="fraud")
    _, secret = governance.create_token("ada", models=["fraud"], store=api["store"])
    headers = {"Authorization": f"Bearer {secret}"}
    client: httpx.Client = api["client"]
    assert [m["name"] for m in client.get("/api/v1/models", headers=headers).json()["models"]] == ["fraud"]
    denied = client.get("/api/v1/models/churn/versions", headers=headers)
    assert denied.status_code == 403 and "does not cover model 'churn'" in denied.json()["error"]["message"]
    assert client.get("/api/v1/models/fraud/versions", headers=headers).status_code == 200


def test_oversized_and_malformed_bodies_are_refused_cleanly(api: dict[str, Any]) -> None:
    client: httpx.Client = api["client"]
    admin = {"Authorization": "Bearer " + api["tokens"]["admin"], "Content-Type": "application/json"}
    big = client.put("/api/v1/policy", content=b"x" * (2 << 20), headers=admin)
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    truncated = client.put("/api/v1/policy", content=b'{"source": "environ', headers=admin)
    assert truncated.status_code == 400 and truncated.json()["error"]["code"] == "invalid_input"
    bad_policy = client.put("/api/v1/policy", json={"source": "environments: []"}, headers=admin)
    assert bad_policy.status_code == 400 and "environments" in bad_policy.json()["error"]["message"]


def test_promotion_and_four_eyes_work_over_http(api: dict[str, Any]) -> None:
    client: httpx.Client = api["client"]

    def as_(role: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + api["tokens"][role]}

    request = client.post(
        "/api/v1/models/churn/versions/1/promote", json={"to": "prod"}, headers=as_("contributor")
    )
    assert request.status_code == 200 and request.json()["status"] == "pending"
    assert request.json()["requested_by"] == "cora"
    own = client.post("/api/v1/models/churn/versions/1/approve", json={"to": "prod"}, headers=as_("admin"))
    assert own.status_code == 200 and own.json()["approvals"][0]["approver"] == "ada"
    governance.add_principal("cora2", "approver", store=api["store"])
    with acting_as(api["actors"]["admin"]):
        governance.grant("cora", "approver", store=api["store"])
    refused = client.post(
        "/api/v1/models/churn/versions/1/approve", json={"to": "prod"}, headers=as_("contributor")
    )
    assert refused.status_code == 403 and "other than the requester" in refused.json()["error"]["message"]
    entries = client.get("/api/v1/audit", headers=as_("admin")).json()["entries"]
    assert [e["actor"] for e in entries if e["action"] == "promotion.approved"] == ["ada"]
    assert client.get("/api/v1/audit/verify", headers=as_("admin")).json()["ok"] is True
