"""The inference endpoints over real HTTP: the Triton/KServe V2 client, plain JSON, health and metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

import shipway
from shipway.serving import ServingApp


@pytest.fixture
def served(churn, start_server):  # type: ignore[no-untyped-def]
    running = start_server()
    running.app.deploy("churn", "models:/churn@prod")
    return running


@pytest.fixture
def client(served):  # type: ignore[no-untyped-def]
    c = triton.InferenceServerClient(url=f"127.0.0.1:{served.port}")
    yield c
    c.close()


def _inputs(frame, binary: bool) -> list[triton.InferInput]:  # type: ignore[no-untyped-def]
    n = len(frame)
    tenure = triton.InferInput("tenure", [n], "INT64")
    tenure.set_data_from_numpy(frame["tenure"].to_numpy(np.int64), binary_data=binary)
    charges = triton.InferInput("charges", [n], "FP64")
    charges.set_data_from_numpy(frame["charges"].to_numpy(np.float64), binary_data=binary)
    plan = triton.InferInput("plan", [n], "BYTES")
    plan.set_data_from_numpy(frame["plan"].to_numpy(object), binary_data=binary)
    return [tenure, charges, plan]


def test_health_and_metadata_through_the_triton_client(client, churn_data) -> None:  # type: ignore[no-untyped-def]
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("churn")
    assert client.is_model_ready("churn", "1")
    assert not client.is_model_ready("churn", "7")
    meta = client.get_model_metadata("churn")
    assert meta["name"] == "churn" and meta["versions"] == ["1"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [
        {"name": "tenure", "datatype": "INT64", "shape": [-1]},
        {"name": "charges", "datatype": "FP64", "shape": [-1]},
        {"name": "plan", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert client.get_model_metadata("churn", "1")["versions"] == ["1"]
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_through_the_triton_client(client, churn_data, classifier, binary) -> None:  # type: ignore[no-untyped-def]
    frame = churn_data[0].iloc[:25]
    outputs = None if binary else [triton.InferRequestedOutput("predict", binary_data=False)]
    result = client.infer("churn", _inputs(frame, binary), request_id="req-42", outputs=outputs)
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == "churn" and response["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("predict"), classifier.predict(frame))
    pinned = client.infer("churn", _inputs(frame, binary), model_version="1")
    np.testing.assert_array_equal(pinned.as_numpy("predict"), classifier.predict(frame))


def test_triton_client_sees_errors_as_text(client, churn_data) -> None:  # type: ignore[no-untyped-def]
    frame = churn_data[0].iloc[:2].assign(plan=["basic", "gold"])
    with pytest.raises(InferenceServerException) as caught:
        client.infer("churn", _inputs(frame, True))
    assert caught.value.status() == "422"
    assert "unknown categories ['gold']" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", _inputs(frame, True))
    assert caught.value.status() == "404" and "No model is served as 'nope'" in caught.value.message()


def test_single_two_dimensional_input_follows_signature_order(served, churn_data, classifier) -> None:  # type: ignore[no-untyped-def]
    frame = churn_data[0].iloc[:3]
    rows = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    body = {"id": "x", "inputs": [{"name": "input-0", "shape": [3, 3], "datatype": "BYTES", "data": rows}]}
    response = served.client.post("/v2/models/churn/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["name"] == "predict" and out["shape"] == [3] and out["datatype"] == "INT64"
    assert out["data"] == classifier.predict(frame).tolist()
    assert response.headers["shipway-model-version"] == "1"


def test_plain_json_records_and_columns(served, churn_data, classifier) -> None:  # type: ignore[no-untyped-def]
    frame = churn_data[0].iloc[:5]
    expected = classifier.predict(frame).tolist()
    by_records = served.client.post("/v1/models/churn/predict", json={"records": frame.to_dict("records")})
    assert by_records.status_code == 200, by_records.text
    assert by_records.json() == {"predictions": expected, "model_name": "churn", "model_version": "1"}
    assert by_records.headers["shipway-model-version"] == "1"
    split = frame.to_dict("split")
    by_columns = served.client.post(
        "/v1/models/churn/predict", json={"columns": split["columns"], "data": split["data"]}
    )
    assert by_columns.json()["predictions"] == expected
    pinned = served.client.post(
        "/v1/models/churn/versions/1/predict", json={"records": frame.to_dict("records")}
    )
    assert pinned.json()["predictions"] == expected
    # Integers for a float column are widened, as the registry's validate does.
    widened = served.client.post(
        "/v1/models/churn/predict", json={"records": [{"tenure": 3, "charges": 80, "plan": "pro"}]}
    )
    assert widened.status_code == 200


def test_endpoint_answers_503_until_its_version_is_warm(churn, start_server) -> None:  # type: ignore[no-untyped-def]
    running = start_server()
    client = running.client
    assert client.get("/v2/health/live").status_code == 200
    running.app.router.mark_unready("churn", "models:/churn@prod is loading.")
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json()["waiting"] == {"churn": "models:/churn@prod is loading."}
    assert client.get("/v2/models/churn/ready").status_code == 503
    early = client.post("/v1/models/churn/predict", json={"records": [{"tenure": 1}]})
    assert early.status_code == 503
    assert early.json()["code"] == "model_not_ready" and "is loading" in early.json()["error"]
    assert client.get("/v2/models/churn").status_code == 503
    running.app.deploy("churn", "models:/churn@prod")
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}


def test_background_deploy_becomes_ready(churn, start_server) -> None:  # type: ignore[no-untyped-def]
    app = ServingApp()
    ready = []
    thread = app.deploy_in_background([("churn", "models:/churn/1")], on_ready=ready.append)
    running = start_server(app)
    thread.join(60)
    assert [h.label for h in ready] == ["1"]
    assert running.client.get("/v2/health/ready").status_code == 200


def test_a_version_that_fails_to_load_keeps_answering_503_with_why(start_server) -> None:  # type: ignore[no-untyped-def]
    # A python-function model holds code: loading it without trust is refused, so it never serves.
    shipway.register_model(lambda frame: [0] * len(frame), name="fn")
    app = ServingApp()
    errors = []
    app.deploy_in_background([("fn", "models:/fn/1")], on_error=lambda e, u, exc: errors.append(exc)).join(60)
    assert len(errors) == 1
    running = start_server(app)
    response = running.client.post("/v1/models/fn/predict", json={"records": [{"x": 1}]})
    assert response.status_code == 503
    assert "could not be loaded" in response.json()["error"]
    assert running.client.get("/v2/health/ready").status_code == 503


def test_prometheus_metrics(served, churn_data) -> None:  # type: ignore[no-untyped-def]
    frame = churn_data[0].iloc[:4]
    client = served.client
    for _ in range(3):
        assert client.post("/v1/models/churn/predict", json={"records": frame.to_dict("records")}).is_success
    assert client.post("/v1/models/churn/predict", content=b"{").status_code == 400
    assert client.post("/v1/models/nope/predict", json={}).status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    churn1 = (("model", "churn"), ("version", "1"))
    stable = (("arm", "stable"), *churn1)
    assert samples[("shipway_serving_requests_total", stable)] == 4
    assert (
        samples[("shipway_serving_errors_total", (("arm", "stable"), ("code", "malformed_json"), *churn1))]
        == 1
    )
    unknown = (("arm", ""), ("code", "model_not_found"), ("model", ""), ("version", ""))
    assert samples[("shipway_serving_errors_total", unknown)] == 1
    assert samples[("shipway_serving_request_duration_seconds_count", stable)] == 4
    assert samples[("shipway_serving_batch_size_rows_sum", churn1)] >= 12
    assert samples[("shipway_serving_predict_duration_seconds_count", churn1)] >= 3
    assert samples[("shipway_serving_queue_depth", churn1)] == 0
    assert samples[("shipway_serving_model_load_seconds", churn1)] > 0
    assert samples[("shipway_serving_model_ready", churn1)] == 1


def test_listeners_receive_each_prediction_request_answered_or_not(served, churn_data) -> None:  # type: ignore[no-untyped-def]
    events = []
    served.app.listeners.append(events.append)
    frame = churn_data[0].iloc[:2]
    answered = served.client.post("/v1/models/churn/predict", json={"records": frame.to_dict("records")})
    assert answered.headers["shipway-arm"] == "stable"
    refused = served.client.post("/v1/models/churn/predict", json={"records": []})
    assert refused.status_code == 400 and refused.headers["shipway-arm"] == "stable"
    first, second = events
    assert (first.endpoint, first.version, first.arm, first.error, first.status) == (
        "churn",
        "1",
        "stable",
        None,
        200,
    )
    assert list(first.columns) == ["tenure", "charges", "plan"] and len(first.predictions) == 2
    assert not first.mirrored and first.rollout is None
    assert (second.error, second.status, second.predictions) == ("empty_batch", 400, None)


def test_array_models_take_one_two_dimensional_tensor(start_server) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    model = LinearRegression().fit(X, X @ [1.0, 2.0, 3.0, 4.0])
    shipway.register_model(model, name="linear", input_example=X[:10])  # a NumPy example: no names
    running = start_server()
    running.app.deploy("linear", "models:/linear/1")
    meta = running.client.get("/v2/models/linear").json()
    assert [i["name"] for i in meta["inputs"]] == ["0", "1", "2", "3"]
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    client = triton.InferenceServerClient(url=f"127.0.0.1:{running.port}")
    rows = triton.InferInput("input-0", [5, 4], "FP32")
    rows.set_data_from_numpy(X[:5].astype(np.float32))
    result = client.infer("linear", [rows])
    np.testing.assert_allclose(result.as_numpy("predict"), model.predict(X[:5].astype(np.float32)))
    client.close()


def test_a_version_without_signature_takes_named_columns(start_server) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.0]})
    model = LinearRegression().fit(frame, [1.0, 2.0, 3.0])
    shipway.register_model(model, name="bare")  # no input_example: nothing to check against
    running = start_server()
    running.app.deploy("bare", "models:/bare/1")
    assert running.client.get("/v2/models/bare").json()["inputs"] == []
    response = running.client.post("/v1/models/bare/predict", json={"records": frame.to_dict("records")})
    assert response.json()["predictions"] == pytest.approx(model.predict(frame).tolist())


def test_numeric_models_get_one_array_and_answer_as_with_a_frame(start_server) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"]).assign(
        n=rng.integers(0, 9, 300)
    )
    model = LogisticRegression().fit(frame, (frame["a"] + frame["n"] > 4).astype(int))
    shipway.register_model(model, name="numeric", input_example=frame.head(20))
    running = start_server()
    host = running.app.deploy("numeric", "models:/numeric/1")
    assert host._as_array, "an estimator fitted on the signature's numeric columns gets an array"
    rows = frame.iloc[:50]
    response = running.client.post("/v1/models/numeric/predict", json={"records": rows.to_dict("records")})
    assert response.json()["predictions"] == model.predict(rows).tolist()
    # Columns sent in another order are put in the model's order.
    shuffled = rows[["n", "d", "c", "b", "a"]]
    again = running.client.post("/v1/models/numeric/predict", json={"records": shuffled.to_dict("records")})
    assert again.json()["predictions"] == model.predict(rows).tolist()


def test_pipelines_that_select_columns_by_name_keep_the_frame(served) -> None:  # type: ignore[no-untyped-def]
    (arm,) = served.app.router.table.endpoints["churn"].arms
    assert not arm.host._as_array
