"""Traffic counters over real HTTP: they count what /metrics counts, minute by minute, in the store,
each in the environment its server serves."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

import shipway
from shipway.core.latency import LATENCY_BUCKETS, bucket_label
from shipway.monitoring.alerts import add_rule
from shipway.monitoring.loop import Monitor
from shipway.monitoring.slo import set_slo, slo_status
from shipway.monitoring.traffic import window_totals
from shipway.rollout import RolloutConfig, deploy, get_deployment
from shipway.serving import Arm, ServingApp
from shipway.serving.serve import ServePlan, build_app, parse_target
from shipway.serving.traffic import TrafficRecorder
from shipway.store import get_store


def _samples(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_the_counters_agree_with_metrics_and_leave_out_shadow_copies(
    churn_data, classifier, start_server
) -> None:  # type: ignore[no-untyped-def]
    frame, _ = churn_data

    def picky(rows: pd.DataFrame) -> np.ndarray:
        if (rows["tenure"] % 10 == 7).any():
            raise ValueError("tenures ending in 7 are not supported")
        return (rows["tenure"] < 20).astype(np.int64).to_numpy()

    shipway.register_model(picky, name="churn", input_example=frame[frame["tenure"] % 10 != 7].head(50))
    shipway.register_model(classifier, name="churn", input_example=frame.head(50))
    store = get_store()
    app = ServingApp(store=store)
    recorder = TrafficRecorder(store, environment="prod", worker="w1", interval=3600)
    app.listeners.append(recorder)
    running = start_server(app)
    stable = app.load("churn", "models:/churn/1", trust=True)
    shadow = app.load("churn", "models:/churn/2")
    app.route("churn", Arm(stable, 100), Arm(shadow, 0, "candidate", mirror=100))

    rows = frame.iloc[:80]
    for i in range(len(rows)):
        running.client.post("/v1/models/churn/predict", json={"records": rows.iloc[[i]].to_dict("records")})
    for _ in range(5):  # the caller's mistakes: answered (4xx), not errors
        assert (
            running.client.post("/v1/models/churn/predict", json={"records": [{"tenure": "x"}]}).status_code
            == 422
        )
    recorder.stop()

    sevens = int((rows["tenure"] % 10 == 7).sum())
    totals = window_totals(store, "churn", {"5m": 300_000}, environment="prod")["5m"]
    assert sevens and (totals.requests, totals.errors) == (85, sevens)
    text = running.client.get("/metrics").text
    answered = {"model": "churn", "version": "1", "arm": "stable"}
    assert _samples(text, "shipway_serving_requests_total", **answered) == 85
    assert (
        sum(
            _samples(text, "shipway_serving_errors_total", **answered, code=code)
            for code in ("model_error", "overloaded")
        )
        == sevens
    )
    for i, bound in enumerate(LATENCY_BUCKETS):
        expected = _samples(
            text, "shipway_serving_request_duration_seconds_bucket", **answered, le=bucket_label(bound)
        )
        assert totals.latency[i] == expected, f"le={bucket_label(bound)}"
    # The shadow's copies are on /metrics under arm="shadow", and in no counter of ours.
    assert _samples(text, "shipway_serving_requests_total", model="churn", arm="shadow") > 0
    assert window_totals(store, "churn", {"5m": 300_000}, environment="prod")["5m"].requests == 85


def test_a_staging_server_fires_no_prod_rule_and_spends_no_prod_budget(
    churn_data, classifier, start_server
) -> None:  # type: ignore[no-untyped-def]
    frame, _ = churn_data

    def broken(rows: pd.DataFrame) -> np.ndarray:
        if (rows["tenure"] >= 1000).any():
            raise ValueError("this canary fails on long tenures, which the test sends")
        return (rows["tenure"] < 20).astype(np.int64).to_numpy()

    store = get_store()
    shipway.register_model(classifier, name="churn", input_example=frame.head(50))
    shipway.register_model(broken, name="churn", input_example=frame.head(50))
    for environment in ("prod", "staging"):
        shipway.set_alias("churn", environment, 1)
        deploy("churn", environment, store=store)
    shipway.set_alias("churn", "staging", 2)  # a failing canary, in staging only
    canary = RolloutConfig(steps=(50, 100), step_duration_ms=3_600_000, min_requests=10_000)
    assert deploy("churn", "staging", config=canary, store=store).candidate_version == 2
    add_rule("churn", "error_rate", above=0.05, window="5m", actions=["rollback"], name="prod", store=store)
    set_slo("churn", availability=99.9, store=store)  # prod's

    # `shipway serve --env staging`, with its own traffic counters.
    plan = ServePlan(environment="staging", trust=True, sync_interval=0.1, log_sample=None)
    app = build_app(plan, store=store)
    running = start_server(app)
    record = frame.head(1).assign(tenure=1000).to_dict("records")
    deadline = time.monotonic() + 60
    while running.client.post("/v1/models/churn/predict", json={"records": record}).status_code not in (
        200,
        500,
    ):
        assert time.monotonic() < deadline, "staging never served churn"
        time.sleep(0.05)
    statuses = [
        running.client.post("/v1/models/churn/predict", json={"records": record}).status_code
        for _ in range(60)
    ]
    assert statuses.count(500) > 10, "the canary answers about half and fails every time"
    (recorder,) = [listener for listener in app.listeners if isinstance(listener, TrafficRecorder)]
    recorder.flush()

    staging = window_totals(store, "churn", {"5m": 300_000}, environment="staging")["5m"]
    assert staging.requests >= 60 and staging.errors >= statuses.count(500)
    assert window_totals(store, "churn", {"5m": 300_000}, environment="prod")["5m"].requests == 0
    monitor = Monitor(store)
    assert monitor.evaluate_once() == [], "prod's rule and SLO see none of staging's failures"
    assert get_deployment("churn", "staging", store=store).candidate_version == 2, "nothing rolled back"
    prod = slo_status("churn", store=store)["objectives"][0]
    assert (prod["requests_30d"], prod["budget_left"]) == (0, None)
    # The same rule and SLO made for staging do see them.
    add_rule(
        "churn", "error_rate", above=0.05, window="5m", environment="staging", name="staging", store=store
    )
    set_slo("churn", availability=99.9, environment="staging", store=store)
    fired = {(t.rule, t.after) for t in monitor.evaluate_once()}
    assert fired == {
        ("staging", "firing"),
        ("slo:availability:page", "firing"),
        ("slo:availability:ticket", "firing"),
    }

    # `shipway serve churn@staging`: named targets count in their alias.
    named = build_app(ServePlan(targets=(parse_target("churn@staging"),), log_sample=None), store=store)
    (recorder,) = [listener for listener in named.listeners if isinstance(listener, TrafficRecorder)]
    named.close()
    assert recorder.environment_of("churn") == "staging"
