"""Adaptive batching over real HTTP: concurrent rows share a predict call and get the unbatched answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

import shipway
from shipway.serving import BatchConfig, ServingApp, ServingConfig


def _batch_stats(client: httpx.Client) -> tuple[float, float]:
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name.startswith("shipway_serving_batch_size_rows")
    }
    return samples["shipway_serving_batch_size_rows_count"], samples["shipway_serving_batch_size_rows_sum"]


@pytest.fixture
def regression(churn_data, regressor, start_server):  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    shipway.register_model(regressor, name="charges", input_example=frame.head(50))
    app = ServingApp(ServingConfig(batch=BatchConfig(max_batch_size=64, max_wait_ms=150)))
    running = start_server(app)
    app.deploy("charges", "models:/charges/1")
    return running


def test_concurrent_rows_are_batched_and_match_unbatched_predictions(
    regression, churn_data, regressor
) -> None:  # type: ignore[no-untyped-def]
    frame = churn_data[0].iloc[:48]
    expected = regressor.predict(frame)  # in process, all rows at once
    one_by_one = [regressor.predict(frame.iloc[[i]])[0] for i in range(len(frame))]
    np.testing.assert_array_equal(expected, one_by_one)  # the model itself is row-independent
    count_before, rows_before = _batch_stats(regression.client)
    start = threading.Barrier(len(frame))

    def ask(i: int) -> float:
        with httpx.Client(base_url=regression.url, timeout=30) as client:
            start.wait()
            response = client.post(
                "/v1/models/charges/predict", json={"records": frame.iloc[[i]].to_dict("records")}
            )
            assert response.status_code == 200, response.text
            return response.json()["predictions"][0]

    with ThreadPoolExecutor(len(frame)) as pool:
        answers = list(pool.map(ask, range(len(frame))))
    assert answers == expected.tolist()  # exactly, row for row
    count, rows = _batch_stats(regression.client)
    calls, batched_rows = count - count_before, rows - rows_before
    assert batched_rows == len(frame)
    assert calls < len(frame) / 2, f"{len(frame)} concurrent rows took {calls} predict calls"


def test_a_bad_request_in_a_batch_fails_alone(regression, churn_data, regressor) -> None:  # type: ignore[no-untyped-def]
    frame = churn_data[0].iloc[:8]
    bodies = [{"records": frame.iloc[[i]].to_dict("records")} for i in range(len(frame))]
    bodies[3] = {"records": [{"tenure": "abc", "charges": 1.0, "plan": "pro"}]}
    bodies[5] = {"records": [{"tenure": 1, "charges": 1.0}]}
    start = threading.Barrier(len(bodies))

    def ask(body: dict) -> httpx.Response:
        with httpx.Client(base_url=regression.url, timeout=30) as client:
            start.wait()
            return client.post("/v1/models/charges/predict", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(ask, bodies))
    assert [r.status_code for r in responses] == [200, 200, 200, 422, 200, 422, 200, 200]
    assert "'tenure' has non-numeric values" in responses[3].json()["error"]
    assert "'charges' is missing" not in responses[3].json()["error"]  # each request's own problems
    assert "'plan' is missing" in responses[5].json()["error"]
    for i in (0, 1, 2, 4, 6, 7):
        assert responses[i].json()["predictions"] == regressor.predict(frame.iloc[[i]]).tolist()


def test_a_full_queue_answers_503_with_retry_after(churn, start_server) -> None:  # type: ignore[no-untyped-def]
    # One request waits up to 1.5 s for its batch to fill; the queue holds only that one.
    app = ServingApp(ServingConfig(batch=BatchConfig(max_batch_size=64, max_wait_ms=1500, max_queue=1)))
    running = start_server(app)
    app.deploy("churn", "models:/churn@prod")
    row = {"records": [{"tenure": 3, "charges": 80.5, "plan": "pro"}]}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(running.client.post, "/v1/models/churn/predict", json=row)
        deadline = time.monotonic() + 10
        while running.app.router.table.endpoints["churn"].arms[0].host.queue_depth == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with httpx.Client(base_url=running.url, timeout=30) as other:
            shed = other.post("/v1/models/churn/predict", json=row)
        assert shed.status_code == 503
        assert shed.json()["code"] == "overloaded"
        assert int(shed.headers["retry-after"]) >= 1
        assert shed.headers["shipway-model-version"] == "1"
        assert first.result().status_code == 200


def test_large_requests_run_alone_and_slow_models_run_off_the_event_loop(churn_data, start_server) -> None:  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier

    frame, y = churn_data
    numeric = frame[["tenure", "charges"]]
    slow = RandomForestClassifier(n_estimators=300, random_state=0).fit(numeric, y)
    shipway.register_model(slow, name="forest", input_example=numeric.head(20))
    # Any model counts as slow with a 0 ms threshold, so its predictions run on the predict thread.
    app = ServingApp(ServingConfig(batch=BatchConfig(max_batch_size=8, inline_below_ms=0)))
    running = start_server(app)
    app.deploy("forest", "models:/forest/1")
    big = numeric.iloc[:50]
    response = running.client.post("/v1/models/forest/predict", json={"records": big.to_dict("records")})
    assert response.json()["predictions"] == slow.predict(big).tolist()
    assert running.client.get("/v2/health/live").status_code == 200
    count, rows = _batch_stats(running.client)
    assert rows == 50 + 0 and count == 1  # one oversized request, one call, not split


def test_batch_config_is_checked() -> None:
    with pytest.raises(shipway.InvalidInput, match="--max-batch-size"):
        BatchConfig(max_batch_size=0)
    with pytest.raises(shipway.InvalidInput, match="--max-queue"):
        BatchConfig(max_queue=0)
    with pytest.raises(shipway.InvalidInput, match="--max-wait-ms"):
        BatchConfig(max_wait_ms=-1)


def test_fast_path_hands_the_model_what_validate_would(churn_data) -> None:  # type: ignore[no-untyped-def]
    from shipway.registry import infer_signature, validate
    from shipway.serving.host import _already_valid

    frame, _ = churn_data
    example = frame.assign(flag=frame["tenure"] > 30, note=frame["plan"] + "!")
    signature = infer_signature(example.head(80))
    check = _already_valid(signature)
    rows = example.iloc[:5]
    columns = {c: rows[c].to_numpy(object if rows[c].dtype.kind not in "biuf" else None) for c in rows}
    fast = check(columns)
    assert fast is not None
    pd.testing.assert_frame_equal(pd.DataFrame(fast), validate(pd.DataFrame(columns), signature))
    widened = check({**columns, "charges": np.array([70, 71, 72, 73, 74])})
    assert widened is not None and widened["charges"].dtype == np.float64
    # Anything validate would cast or refuse goes to validate.
    assert check({**columns, "plan": np.array(["gold"] * 5, dtype=object)}) is None
    assert check({**columns, "charges": np.array([np.nan] * 5)}) is None
    assert check({**columns, "tenure": np.array([1.0] * 5)}) is None
    assert check({k: v for k, v in columns.items() if k != "plan"}) is None
