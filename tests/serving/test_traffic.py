"""Traffic counters over real HTTP: they count what /metrics counts, minute by minute, in the store."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

import shipway
from shipway.core.latency import LATENCY_BUCKETS, bucket_label
from shipway.monitoring.traffic import window_totals
from shipway.serving import Arm, ServingApp
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
    recorder = TrafficRecorder(store, worker="w1", interval=3600)
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
    totals = window_totals(store, "churn", {"5m": 300_000})["5m"]
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
    assert window_totals(store, "churn", {"5m": 300_000})["5m"].requests == 85
