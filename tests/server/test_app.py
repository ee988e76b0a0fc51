"""`shipway server` as a real server on loopback, queried over HTTP."""

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from servers import free_port, wait_for_port

import shipway
from shipway.store import Store
from shipway.store.schema import SCHEMA_REVISION


@pytest.fixture
def server(store: Store) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipway", "server", "--insecure-local", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert f"listening on http://127.0.0.1:{port}" in out
    assert "Traceback" not in err


@pytest.fixture
def run_id(store: Store) -> str:
    with shipway.start_run(experiment="churn", name="base") as run:
        run.log_params({"depth": 6})
        for step in range(3):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.log_metric("auc", 0.9)
        run.log_metric("nan", float("nan"))
    return run.id


def test_health_and_tracking_data_as_json(server: str, run_id: str) -> None:
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["schema_revision"] == SCHEMA_REVISION
    exps = httpx.get(f"{server}/api/v1/experiments").json()["experiments"]
    assert [(e["name"], e["runs"]) for e in exps] == [("churn", 1)]
    runs = httpx.get(
        f"{server}/api/v1/experiments/churn/runs",
        params={"filter": "metrics.auc > 0.8 and params.depth = 6", "order_by": "metrics.auc desc"},
    ).json()
    assert [r["id"] for r in runs["runs"]] == [run_id] and runs["next_page_token"] is None
    run = httpx.get(f"{server}/api/v1/runs/{run_id}").json()
    assert run["status"] == "FINISHED" and run["metrics"]["nan"] is None and run["params"] == {"depth": "6"}
    history = httpx.get(f"{server}/api/v1/runs/{run_id}/metrics/loss").json()
    assert [p["step"] for p in history["points"]] == [0, 1, 2]
    assert httpx.get(f"{server}/openapi.json").json()["info"]["title"] == "Shipway"


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/v1/runs/" + "0" * 32, {}, 404, "not_found"),
        ("/api/v1/experiments/nope/runs", {}, 404, "not_found"),
        ("/api/v1/experiments/churn/runs", {"filter": "metrics.auc >"}, 400, "invalid_input"),
        ("/api/v1/experiments/churn/runs", {"limit": "lots"}, 400, "invalid_input"),
        ("/api/v1/experiments/churn/runs", {"limit": "0"}, 400, "invalid_input"),
        ("/no/such/endpoint", {}, 404, "not_found"),
    ],
)
def test_errors_use_one_json_envelope(
    server: str, run_id: str, path: str, params: dict, status: int, code: str
) -> None:
    response = httpx.get(server + path, params=params)
    assert response.status_code == status
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]


def test_the_api_is_read_only(server: str, run_id: str) -> None:
    response = httpx.delete(f"{server}/api/v1/runs/{run_id}")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_registry_is_readable_over_http(server: str, store: Store) -> None:
    pytest.importorskip("sklearn")
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])
    shipway.register_model(model, name="churn")
    shipway.set_alias("churn", "staging", 1)
    models = httpx.get(f"{server}/api/v1/models").json()["models"]
    assert [(m["name"], m["latest"], m["aliases"]) for m in models] == [("churn", 1, {"staging": 1})]
    version = httpx.get(f"{server}/api/v1/models/churn/aliases/staging").json()
    assert version["uri"] == "models:/churn/1" and version["flavor"] == "sklearn"
    assert httpx.get(f"{server}/api/v1/models/churn/versions").json()["versions"][0]["version"] == 1
    missing = httpx.get(f"{server}/api/v1/models/churn/versions/7")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
