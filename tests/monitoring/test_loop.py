"""The monitor end to end: a real server's traffic counters fire an alert that rolls a rollout back.

A server follows the deployments of ``prod`` (``DeploymentSync``) and counts its requests per
minute (``TrafficRecorder``); the rollout controller does not run, so only the alert's action can
end the rollout. The candidate raises on every row marked 1, which the test sends on every fifth
request, so it fails about a fifth of what it answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
from servers import ThreadedServer

import shipway
from shipway import governance
from shipway.governance import audit
from shipway.monitoring.alerts import add_rule, list_alerts
from shipway.monitoring.loop import Monitor
from shipway.monitoring.traffic import window_totals
from shipway.rollout import RolloutConfig, deploy, get_deployment
from shipway.serving import DeploymentSync, ServingApp
from shipway.serving.traffic import TrafficRecorder
from shipway.store import Store, get_store

EXAMPLE = pd.DataFrame({"x": np.linspace(-2, 2, 20), "marker": np.zeros(20, dtype=np.int64)})


def _model(fails: bool):  # type: ignore[no-untyped-def]
    def stable(frame: pd.DataFrame) -> np.ndarray:
        return (frame["x"].to_numpy() > 0).astype(np.int64)

    def failing(frame: pd.DataFrame) -> np.ndarray:
        if (frame["marker"].to_numpy() == 1).any():
            raise ValueError("cannot score a marked row")
        return (frame["x"].to_numpy() > 0).astype(np.int64)

    return failing if fails else stable


def _release(store: Store, fails: bool) -> None:
    version = shipway.register_model(_model(fails), name="churn", input_example=EXAMPLE, store=store)
    assert governance.promote("churn", version.version, "prod", store=store).status == "completed"


@pytest.fixture
def server() -> Iterator[tuple[str, TrafficRecorder]]:
    store = get_store()
    _release(store, fails=False)
    deploy("churn", "prod", store=store)
    _release(store, fails=True)
    config = RolloutConfig(steps=(50, 100), step_duration_ms=3_600_000, min_requests=10_000)
    assert deploy("churn", "prod", config=config, store=store).candidate_version == 2
    app = ServingApp(store=store)
    recorder = TrafficRecorder(store, environment="prod", worker="w1", interval=0.1)
    app.listeners.append(recorder)
    sync = DeploymentSync(app, "prod", store=store, trust=True, interval=0.1)
    app.on_close.extend([sync.stop, recorder.stop])
    sync.sync()
    sync.start()
    recorder.start()
    server = ThreadedServer(app)
    yield server.url, recorder
    server.stop()


def _send(client: httpx.Client, n: int) -> list[tuple[int, str]]:
    answers = []
    for i in range(n):
        row = {"x": round(float(np.sin(i)), 3), "marker": int(i % 5 == 0)}
        r = client.post("/v1/models/churn/predict", json={"records": [row]})
        answers.append((r.status_code, r.headers.get("shipway-model-version", "")))
    return answers


def test_an_error_rate_alert_rolls_the_rollout_back(server: tuple[str, TrafficRecorder]) -> None:
    url, recorder = server
    store = get_store()
    add_rule("churn", "error_rate", above=0.01, window="1m", actions=["rollback"], store=store)
    monitor = Monitor(store)
    with httpx.Client(base_url=url, timeout=30) as client:
        answers = _send(client, 200)
        assert {v for _, v in answers} == {"1", "2"}, "the canary splits traffic"
        failed = sum(status == 500 for status, _ in answers)
        assert failed and all(v == "2" for status, v in answers if status == 500)
        recorder.flush()
        totals = window_totals(store, "churn", {"1m": 60_000}, environment="prod")["1m"]
        assert (totals.requests, totals.errors) == (200, failed), "every answer counted, 5xx as errors"

        (fired,) = monitor.evaluate_once()
        assert (fired.rule, fired.after, fired.act) == ("churn-error_rate-above-0.01", "firing", True)
        assert monitor.drain(30)
        d = get_deployment("churn", "prod", store=store)
        assert (d.status, d.stable_version, d.candidate_version) == ("idle", 1, None)
        aborted = audit.entries(action="rollout.aborted", store=store)[-1]
        assert aborted.actor == "shipway-monitor" and "churn-error_rate-above-0.01" in str(aborted.payload)
        (outcome,) = audit.entries(action="alert.action", store=store)
        assert outcome.payload["ok"] is True and "serves v1 again" in outcome.payload["message"]

        deadline = time.monotonic() + 10  # the server follows within its sync interval
        while time.monotonic() < deadline and {v for _, v in _send(client, 5)} != {"1"}:
            time.sleep(0.1)
        after = _send(client, 50)
        assert after == [(200, "1")] * 50, "all traffic back on the stable version, none failing"
    assert monitor.evaluate_once() == [], (
        "still firing (the window holds the failures): told once, acted once"
    )
    assert list_alerts(state="firing", store=store)[0].rule == "churn-error_rate-above-0.01"
