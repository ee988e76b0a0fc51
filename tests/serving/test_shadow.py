"""Shadow copies over real HTTP: the caller gets the answering arm's answer, whatever the shadow does."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import shipway
from shipway.serving import Arm, ServingApp, ServingConfig, agreement


def test_agreement_compares_row_by_row() -> None:
    assert agreement(np.array([1, 0, 1]), np.array([1, 1, 1])) == (2, 3)
    assert agreement(np.array([0.5, 1.0]), np.array([0.5 + 1e-9, 2.0])) == (1, 2)
    assert agreement(np.array(["a", "b"]), np.array(["a", "b"])) == (2, 2)
    assert agreement(np.array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 5]])) == (1, 2)
    assert agreement(pd.DataFrame({"p": [1, 2]}), np.array([[1], [2]])) == (2, 2)
    assert agreement(np.array([1, 2, 3]), np.array([1, 2])) == (0, 3), "a shape mismatch agrees nowhere"


@pytest.fixture
def shadowed(churn_data, classifier, start_server):  # type: ignore[no-untyped-def]
    frame, _ = churn_data

    def picky(rows: pd.DataFrame) -> np.ndarray:
        if (rows["tenure"] % 10 == 7).any():
            raise ValueError("tenures ending in 7 are not supported")
        return (rows["tenure"] < 20).astype(np.int64).to_numpy()

    shipway.register_model(classifier, name="churn", input_example=frame.head(50))
    shipway.register_model(picky, name="churn", input_example=frame[frame["tenure"] % 10 != 7].head(50))

    def start(**config: object):  # type: ignore[no-untyped-def]
        app = ServingApp(ServingConfig(**config))  # type: ignore[arg-type]
        events: list = []
        app.listeners.append(events.append)
        running = start_server(app)
        stable = app.load("churn", "models:/churn/1")
        shadow = app.load("churn", "models:/churn/2", trust=True)
        app.route("churn", Arm(stable, 100), Arm(shadow, 0, "candidate", mirror=100))
        return running, events

    return start


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_caller_gets_stable_and_a_failing_shadow_fails_nothing(shadowed, churn_data, classifier) -> None:  # type: ignore[no-untyped-def]
    running, events = shadowed()
    frame = churn_data[0].iloc[:60]
    for i in range(len(frame)):
        row = frame.iloc[[i]]
        response = running.client.post("/v1/models/churn/predict", json={"records": row.to_dict("records")})
        assert response.status_code == 200, response.text
        assert (response.headers["shipway-model-version"], response.headers["shipway-arm"]) == ("1", "stable")
        assert response.json()["predictions"] == classifier.predict(row).tolist()
    deadline = time.monotonic() + 10
    while sum(e.mirrored for e in events) < len(frame) and time.monotonic() < deadline:
        time.sleep(0.02)
    copies = [e for e in events if e.mirrored]
    answered = [e for e in events if not e.mirrored]
    assert len(answered) == len(copies) == len(frame)
    failed = [e for e in copies if e.error is not None]
    sevens = int((frame["tenure"] % 10 == 7).sum())
    assert (
        sevens and len(failed) == sevens and {(e.status, e.error) for e in failed} == {(500, "model_error")}
    )
    assert all(e.version == "2" and e.arm == "candidate" for e in copies)
    agreed = sum(e.agreement[0] for e in copies if e.agreement)
    compared = sum(e.agreement[1] for e in copies if e.agreement)
    assert compared == len(frame) - sevens and 0 < agreed <= compared
    text = running.client.get("/metrics").text
    assert (
        _metric(text, "shipway_serving_shadow_requests_total", model="churn", version="2", result="failed")
        == sevens
    )
    assert (
        _metric(text, "shipway_serving_shadow_rows_total", model="churn", version="2", agreement="agreed")
        == agreed
    )
    assert (
        _metric(
            text, "shipway_serving_errors_total", model="churn", version="2", arm="shadow", code="model_error"
        )
        == sevens
    )


def test_copies_beyond_the_limit_are_dropped_not_queued(shadowed, churn_data) -> None:  # type: ignore[no-untyped-def]
    running, events = shadowed(max_shadow_in_flight=0)
    records = churn_data[0].iloc[:3].to_dict("records")
    for _ in range(5):
        assert running.client.post("/v1/models/churn/predict", json={"records": records}).status_code == 200
    assert not any(e.mirrored for e in events)
    text = running.client.get("/metrics").text
    assert (
        _metric(text, "shipway_serving_shadow_requests_total", model="churn", version="2", result="dropped")
        == 5
    )
