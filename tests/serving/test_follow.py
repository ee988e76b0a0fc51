"""Named models follow their aliases: a moved alias switches the endpoint with no failed request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pandas as pd

import shipway
from shipway.registry import delete_alias
from shipway.serving import ServingApp, Target, TargetSync
from shipway.store import get_store

ROW = {"records": [{"tenure": 3, "charges": 80.5, "plan": "pro"}]}


def _until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_a_moved_alias_switches_the_endpoint_under_load_with_no_failed_request(  # type: ignore[no-untyped-def]
    churn, churn_data, regressor, start_server
) -> None:
    frame, _ = churn_data
    shipway.register_model(regressor, name="churn", input_example=frame.head(50))  # version 2
    store = get_store()
    app = ServingApp(store=store)
    follower = TargetSync(
        app,
        [Target("churn", "models:/churn@prod"), Target("pinned", "models:/churn/1")],
        store=store,
        interval=0.05,
    )
    app.on_close.append(follower.stop)
    server = start_server(app)
    follower.start()
    _until(follower.loaded.is_set, 60, "the first load")
    assert server.client.post("/v1/models/churn/predict", json=ROW).headers["shipway-model-version"] == "1"

    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/v1/models/churn/predict", json=ROW)
                statuses.append(r.status_code)
                versions.add(r.headers["shipway-model-version"])

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(10):
            target = 2 if n % 2 == 0 else 1
            shipway.set_alias("churn", "prod", target)
            _until(
                lambda target=target: (
                    server.client.post("/v1/models/churn/predict", json=ROW).headers["shipway-model-version"]
                    == str(target)
                ),
                30,
                f"prod to move to version {target}",
            )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert statuses and set(statuses) == {200}, pd.Series(statuses).value_counts().to_dict()
    assert versions == {"1", "2"}
    # A pinned version never moves.
    assert server.client.post("/v1/models/pinned/predict", json=ROW).headers["shipway-model-version"] == "1"

    # An alias removed while serving: the endpoint keeps answering with what it had, and says so once.
    errors: list[str] = []
    follower.on_error = lambda endpoint, uri, exc: errors.append(f"{endpoint} {uri}")
    delete_alias("churn", "prod")
    _until(lambda: errors, 10, "the missing alias to be reported")
    time.sleep(0.2)
    assert errors == ["churn models:/churn@prod"]
    assert server.client.post("/v1/models/churn/predict", json=ROW).status_code == 200


def test_a_pinned_version_that_failed_to_load_is_retried(churn, start_server) -> None:  # type: ignore[no-untyped-def]
    store = get_store()
    artifacts = Path(store.blobs.uri)
    hidden = artifacts.with_name("artifacts-away")
    artifacts.rename(hidden)  # the artifact store is unreachable when the server starts
    app = ServingApp(store=store)
    follower = TargetSync(
        app, [Target("churn", "models:/churn/1")], store=store, interval=0.05, retry_after=0.2
    )
    app.on_close.append(follower.stop)
    server = start_server(app)
    errors: list[str] = []
    follower.on_error = lambda endpoint, uri, exc: errors.append(uri)
    follower.start()
    _until(follower.loaded.is_set, 60, "the first try")
    assert server.client.post("/v1/models/churn/predict", json=ROW).status_code == 503
    hidden.rename(artifacts)  # it is back
    _until(lambda: server.client.post("/v1/models/churn/predict", json=ROW).status_code == 200, 30, "a retry")
    assert errors and errors[0] == "models:/churn/1"
