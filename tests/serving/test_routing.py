"""The endpoint table: atomic swaps under load drop nothing; arm choice by weight and by sticky key."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

import shipway
from shipway.serving import Arm, Endpoint, Router, ServingApp, stable_fraction


@pytest.fixture
def two_versions(churn_data, classifier, regressor, start_server):  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    shipway.register_model(classifier, name="churn", input_example=frame.head(50))
    shipway.register_model(regressor, name="churn", input_example=frame.head(50))
    app = ServingApp()
    running = start_server(app)
    one, two = app.load("churn", "models:/churn/1"), app.load("churn", "models:/churn/2")
    app.route("churn", Arm(one))
    return running, one, two


def test_swapping_versions_under_load_fails_no_request(
    two_versions, churn_data, classifier, regressor
) -> None:  # type: ignore[no-untyped-def]
    running, one, two = two_versions
    row = churn_data[0].iloc[[7]]
    expected = {"1": classifier.predict(row).tolist(), "2": regressor.predict(row).tolist()}
    body = {"records": row.to_dict("records")}
    stop = threading.Event()
    results: list[tuple[int, str | None, dict]] = []
    lock = threading.Lock()

    def load() -> None:
        seen = []
        with httpx.Client(base_url=running.url, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v1/models/churn/predict", json=body)
                seen.append(
                    (response.status_code, response.headers.get("shipway-model-version"), response.json())
                )
        with lock:
            results.extend(seen)

    senders = [threading.Thread(target=load) for _ in range(6)]
    for t in senders:
        t.start()
    time.sleep(0.2)
    for i in range(100):
        running.app.route("churn", Arm(two if i % 2 == 0 else one))
        time.sleep(0.01)
    time.sleep(0.2)
    stop.set()
    for t in senders:
        t.join(30)

    failed = [r for r in results if r[0] != 200]
    assert failed == [], failed[:5]
    assert len(results) > 100
    versions = Counter(version for _, version, _ in results)
    assert set(versions) == {"1", "2"}, versions
    for _, version, payload in results:
        # Header, body and predictions all come from the one version that answered.
        assert payload["model_version"] == version
        assert payload["predictions"] == expected[version]
    assert running.app.router.table.generation >= 101


def test_a_host_serves_only_the_endpoint_it_was_loaded_for(two_versions) -> None:  # type: ignore[no-untyped-def]
    running, one, _ = two_versions
    with pytest.raises(shipway.InvalidInput, match="loaded for 'churn'"):
        running.app.route("fraud", Arm(one))


def test_version_paths_reach_any_routed_arm(two_versions) -> None:  # type: ignore[no-untyped-def]
    running, one, two = two_versions
    running.app.route("churn", Arm(one, 0.9), Arm(two, 0.1, "candidate"))
    client = running.client
    assert client.get("/v2/models/churn").json()["versions"] == ["1", "2"]
    assert client.get("/v2/models/churn/versions/2/ready").status_code == 200
    row = {"records": [{"tenure": 3, "charges": 80.5, "plan": "pro"}]}
    pinned = client.post("/v1/models/churn/versions/2/predict", json=row)
    assert pinned.headers["shipway-model-version"] == "2"


def test_sticky_key_keeps_each_caller_on_one_arm(two_versions) -> None:  # type: ignore[no-untyped-def]
    running, one, two = two_versions
    running.app.route("churn", Arm(two, 0.5, "b"), Arm(one, 0.5, "a"), sticky_header="X-Customer")
    row = {"records": [{"tenure": 3, "charges": 80.5, "plan": "pro"}]}
    answered = {}
    for customer in [f"c{i}" for i in range(40)]:
        for _ in range(3):
            response = running.client.post(
                "/v1/models/churn/predict", json=row, headers={"x-customer": customer}
            )
            answered.setdefault(customer, set()).add(response.headers["shipway-model-version"])
    assert all(len(v) == 1 for v in answered.values())
    assert {v for (v,) in answered.values()} == {"1", "2"}


def test_sticky_field_decides_the_arm_and_never_reaches_the_model(two_versions, churn_data) -> None:  # type: ignore[no-untyped-def]
    running, one, two = two_versions
    running.app.route(
        "churn",
        Arm(one, 50),
        Arm(two, 50, "candidate"),
        sticky_header="customer_id",
        sticky_field="customer_id",
    )
    client = running.client
    row = {"tenure": 3, "charges": 80.5, "plan": "pro"}
    seen: dict[int, set[tuple[str, str]]] = {}
    for customer in range(30):
        by_field = client.post(
            "/v1/models/churn/predict", json={"records": [{**row, "customer_id": customer}]}
        )
        by_header = client.post(
            "/v1/models/churn/predict", json={"records": [row]}, headers={"customer_id": str(customer)}
        )
        v2 = client.post(
            "/v2/models/churn/infer",
            json={
                "inputs": [
                    {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [3]},
                    {"name": "charges", "shape": [1], "datatype": "FP64", "data": [80.5]},
                    {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
                    {"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [customer]},
                ]
            },
        )
        for r in (by_field, by_header, v2):
            assert r.status_code == 200, r.text  # customer_id is not a model input: it was removed
            seen.setdefault(customer, set()).add(
                (r.headers["shipway-arm"], r.headers["shipway-model-version"])
            )
    assert all(len(arms) == 1 for arms in seen.values()), seen
    assert {a for (a,) in seen.values()} == {("stable", "1"), ("candidate", "2")}
    # Without a key, a request draws an arm; a pinned version says so.
    assert client.post("/v1/models/churn/predict", json={"records": [row]}).status_code == 200
    pinned = client.post("/v1/models/churn/versions/2/predict", json={"records": [row]})
    assert (pinned.headers["shipway-arm"], pinned.headers["shipway-model-version"]) == ("pinned", "2")


def test_metrics_count_each_arm_apart(two_versions) -> None:  # type: ignore[no-untyped-def]
    running, one, two = two_versions
    running.app.route("churn", Arm(one, 0), Arm(two, 100, "candidate"))
    row = {"records": [{"tenure": 3, "charges": 80.5, "plan": "pro"}]}
    for _ in range(3):
        assert running.client.post("/v1/models/churn/predict", json=row).headers["shipway-arm"] == "candidate"
    text = running.client.get("/metrics").text
    assert 'shipway_serving_requests_total{arm="candidate",model="churn",version="2"} 3.0' in text
    assert 'arm="stable",model="churn",version="1"} ' not in text.split("shipway_serving_requests_total")[1]


class _Stub:
    def __init__(self, label: str) -> None:
        self.label = label


def _endpoint(*weights: float, sticky: str | None = None) -> Endpoint:
    arms = tuple(Arm(_Stub(str(i)), w) for i, w in enumerate(weights))  # type: ignore[arg-type]
    return Endpoint("churn", arms, sticky)


def test_weights_split_traffic_and_zero_weight_gets_none() -> None:
    endpoint = _endpoint(1, 3, 0)
    draws = iter(i / 1000 for i in range(1000))
    picks = Counter(endpoint.choose(draw=lambda: next(draws)).host.label for _ in range(1000))
    assert picks == {"0": 250, "1": 750}


def test_sticky_assignment_is_stable_and_monotone_as_weights_grow() -> None:
    keys = [f"customer-{i}" for i in range(2000)]
    at = {w: {k: _endpoint(w, 100 - w).choose(k).host.label for k in keys} for w in (5, 25, 50)}
    assert at[5] == {k: _endpoint(5, 95).choose(k).host.label for k in keys}  # same key, same arm
    share = sum(v == "0" for v in at[25].values()) / len(keys)
    assert 0.22 < share < 0.28
    for small, large in [(5, 25), (25, 50)]:
        # Keys in the first arm stay there when its weight grows.
        assert all(at[large][k] == "0" for k, v in at[small].items() if v == "0")


def test_stable_fraction_is_the_same_in_another_process() -> None:
    code = "from shipway.serving import stable_fraction; print(repr(stable_fraction('churn', 'customer-7')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == stable_fraction("churn", "customer-7")
    assert stable_fraction("churn", "customer-7") != stable_fraction("other", "customer-7")


def test_router_swaps_are_atomic_and_counted() -> None:
    router = Router()
    assert router.table.endpoints == {}
    router.mark_unready("churn", "loading")
    before = router.table
    assert not before.endpoints["churn"].ready and before.endpoints["churn"].problem == "loading"
    router.route("churn", Arm(_Stub("1")))  # type: ignore[arg-type]
    router.mark_unready("churn", "ignored: it already answers")
    assert router.table.endpoints["churn"].ready
    assert before.endpoints["churn"].problem == "loading"  # an old snapshot never changes
    assert router.table.generation == before.generation + 2
    router.remove("churn")
    assert "churn" not in router.table.endpoints
    with pytest.raises(shipway.InvalidInput):
        _endpoint(0, 0)
    with pytest.raises(shipway.InvalidInput):
        _endpoint(-1, 2)
    with pytest.raises(shipway.InvalidInput, match="Mirror"):
        Endpoint("churn", (Arm(_Stub("1")), Arm(_Stub("2"), 0, "candidate", mirror=150)))  # type: ignore[arg-type]


def test_shadow_arms_take_no_traffic_of_their_own() -> None:
    stable, shadow = Arm(_Stub("1")), Arm(_Stub("2"), 0, "candidate", mirror=25)  # type: ignore[arg-type]
    endpoint = Endpoint("churn", (stable, shadow), "x-customer")
    assert endpoint.shadows == (shadow,)
    assert {endpoint.choose(f"c{i}").label for i in range(500)} == {"stable"}
    assert {endpoint.choose(draw=lambda: 0.0).label, endpoint.choose(draw=lambda: 0.999).label} == {"stable"}
    switched = Endpoint("churn", (Arm(_Stub("1"), 0), Arm(_Stub("2"), 100, "candidate")))  # type: ignore[arg-type]
    assert {switched.choose(draw=lambda: 0.0).label, switched.choose(f"c{1}").label} == {"candidate"}
