"""What clients get wrong: each case is a 4xx with a stable code and a string error, never a 500."""

from __future__ import annotations

import gzip
import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROW = {"tenure": 3, "charges": 80.5, "plan": "pro"}


@pytest.fixture
def served(churn, start_server):  # type: ignore[no-untyped-def]
    running = start_server(max_body_bytes=64 * 1024)
    running.app.deploy("churn", "models:/churn@prod")
    return running


def _v2(*inputs: dict) -> dict:
    return {"inputs": list(inputs)}


def _col(name: str, datatype: str, data: list, shape: list | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


GOOD_V2 = [_col("tenure", "INT64", [3]), _col("charges", "FP64", [80.5]), _col("plan", "BYTES", ["pro"])]

CASES = [
    # (id, path, body bytes, status, code)
    ("truncated json", "v1", b'{"records": [{"tenure": 3, "cha', 400, "malformed_json"),
    ("not utf-8", "v1", b'{"records": ["\xff\xfe"]}', 400, "malformed_json"),
    ("empty body", "v2", b"", 400, "malformed_json"),
    ("json array", "v1", b"[1, 2]", 400, "malformed_request"),
    ("no records key", "v1", json.dumps({"rows": [ROW]}).encode(), 400, "malformed_request"),
    ("records not a list", "v1", json.dumps({"records": ROW}).encode(), 400, "malformed_request"),
    ("record not an object", "v1", json.dumps({"records": [ROW, 5]}).encode(), 400, "malformed_request"),
    ("empty records", "v1", json.dumps({"records": []}).encode(), 400, "empty_batch"),
    ("empty data", "v1", json.dumps({"columns": ["tenure"], "data": []}).encode(), 400, "empty_batch"),
    (
        "ragged data",
        "v1",
        json.dumps({"columns": ["tenure", "plan"], "data": [[1]]}).encode(),
        400,
        "malformed_request",
    ),
    (
        "duplicate columns",
        "v1",
        json.dumps({"columns": ["a", "a"], "data": [[1, 2]]}).encode(),
        400,
        "malformed_request",
    ),
    (
        "wrong type",
        "v1",
        json.dumps({"records": [{**ROW, "tenure": "long"}]}).encode(),
        422,
        "signature_mismatch",
    ),
    (
        "fractional integer",
        "v1",
        json.dumps({"records": [{**ROW, "tenure": 2.5}]}).encode(),
        422,
        "signature_mismatch",
    ),
    (
        "unknown category",
        "v1",
        json.dumps({"records": [{**ROW, "plan": "gold"}]}).encode(),
        422,
        "signature_mismatch",
    ),
    (
        "missing column",
        "v1",
        json.dumps({"records": [{"tenure": 3, "plan": "pro"}]}).encode(),
        422,
        "signature_mismatch",
    ),
    ("extra column", "v1", json.dumps({"records": [{**ROW, "x": 1}]}).encode(), 422, "signature_mismatch"),
    (
        "null not allowed",
        "v1",
        json.dumps({"records": [{**ROW, "charges": None}]}).encode(),
        422,
        "signature_mismatch",
    ),
    (
        "NaN not allowed",
        "v1",
        b'{"records": [{"tenure": 3, "charges": NaN, "plan": "pro"}]}',
        422,
        "signature_mismatch",
    ),
    (
        "Infinity",
        "v1",
        b'{"records": [{"tenure": 3, "charges": Infinity, "plan": "pro"}]}',
        422,
        "non_finite_value",
    ),
    (
        "huge number",
        "v1",
        b'{"records": [{"tenure": 3, "charges": 1e999, "plan": "pro"}]}',
        422,
        "non_finite_value",
    ),
    (
        "nested value",
        "v1",
        json.dumps({"records": [{**ROW, "plan": ["pro"]}]}).encode(),
        422,
        "signature_mismatch",
    ),
    (
        "object value",
        "v1",
        json.dumps({"records": [{**ROW, "charges": {"a": 1}}]}).encode(),
        422,
        "signature_mismatch",
    ),
    ("deep nesting", "v1", b"[" * 20_000 + b"]" * 20_000, 400, "malformed_json"),
    ("v2 no inputs", "v2", json.dumps({"inputs": []}).encode(), 400, "malformed_request"),
    (
        "v2 bad datatype",
        "v2",
        json.dumps(_v2(_col("tenure", "INT128", [3]))).encode(),
        400,
        "malformed_request",
    ),
    ("v2 bad shape", "v2", json.dumps(_v2({**GOOD_V2[0], "shape": [-1]})).encode(), 400, "malformed_request"),
    (
        "v2 element count",
        "v2",
        json.dumps(_v2(_col("tenure", "INT64", [3, 4], [3]))).encode(),
        400,
        "invalid_tensor",
    ),
    (
        "v2 ragged",
        "v2",
        json.dumps(_v2(_col("tenure", "INT64", [[1], [2, 3]], [2, 1]))).encode(),
        400,
        "invalid_tensor",
    ),
    (
        "v2 text as FP64",
        "v2",
        json.dumps(_v2(_col("charges", "FP64", ["a"]))).encode(),
        400,
        "invalid_tensor",
    ),
    (
        "v2 float as INT64",
        "v2",
        json.dumps(_v2(_col("tenure", "INT64", [1.5]))).encode(),
        400,
        "invalid_tensor",
    ),
    (
        "v2 INT8 overflow",
        "v2",
        json.dumps(_v2(_col("tenure", "INT8", [300]))).encode(),
        400,
        "invalid_tensor",
    ),
    ("v2 number as BYTES", "v2", json.dumps(_v2(_col("plan", "BYTES", [5]))).encode(), 400, "invalid_tensor"),
    ("v2 empty batch", "v2", json.dumps(_v2(_col("tenure", "INT64", [], [0]))).encode(), 400, "empty_batch"),
    (
        "v2 unequal rows",
        "v2",
        json.dumps(_v2(GOOD_V2[0], _col("plan", "BYTES", ["a", "b"]))).encode(),
        400,
        "malformed_request",
    ),
    (
        "v2 3-D",
        "v2",
        json.dumps(_v2(_col("x", "FP64", [1.0], [1, 1, 1]))).encode(),
        422,
        "signature_mismatch",
    ),
    (
        "v2 2-D wrong width",
        "v2",
        json.dumps(_v2(_col("x", "FP64", [1.0, 2.0], [1, 2]))).encode(),
        422,
        "signature_mismatch",
    ),
    ("v2 missing column", "v2", json.dumps(_v2(*GOOD_V2[:2])).encode(), 422, "signature_mismatch"),
    (
        "v2 unknown output",
        "v2",
        json.dumps({"inputs": GOOD_V2, "outputs": [{"name": "proba"}]}).encode(),
        400,
        "malformed_request",
    ),
    ("v2 id not text", "v2", json.dumps({"id": 5, "inputs": GOOD_V2}).encode(), 400, "malformed_request"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_requests(served, path, body, status, code) -> None:  # type: ignore[no-untyped-def]
    url = "/v1/models/churn/predict" if path == "v1" else "/v2/models/churn/infer"
    response = served.client.post(url, content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    error = response.json()
    assert isinstance(error["error"], str) and error["error"]
    assert isinstance(error["details"], list)
    assert response.headers["shipway-model-version"] == "1"


def test_signature_errors_name_each_field(served) -> None:  # type: ignore[no-untyped-def]
    body = {"records": [{"tenure": "x", "charges": 1.0, "plan": "gold"}]}
    error = served.client.post("/v1/models/churn/predict", json=body).json()
    assert {d["field"] for d in error["details"]} == {"tenure", "plan"}
    assert all(d["problem"] for d in error["details"])


def test_binary_tensor_sizes_are_checked(served) -> None:  # type: ignore[no-untyped-def]
    head = json.dumps(
        {
            "inputs": [
                {"name": "tenure", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}
            ]
        }
    ).encode()
    for tail, header in [
        (b"\x00" * 8, len(head)),
        (b"\x00" * 24, len(head)),
        (b"\x00" * 16, len(head) + 999),
    ]:
        response = served.client.post(
            "/v2/models/churn/infer",
            content=head + tail,
            headers={"inference-header-content-length": str(header)},
        )
        assert response.status_code == 400, response.text


def test_oversized_body_is_413(served) -> None:  # type: ignore[no-untyped-def]
    big = json.dumps({"records": [ROW] * 5000}).encode()  # ~200 KB against a 64 KiB limit
    response = served.client.post("/v1/models/churn/predict", content=big)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    # Without a Content-Length (chunked), it stops reading at the limit.
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
    assert served.client.post("/v1/models/churn/predict", content=chunks).status_code == 413
    # A gzip body is measured after inflating.
    zipped = gzip.compress(big)
    assert len(zipped) < 64 * 1024
    response = served.client.post(
        "/v1/models/churn/predict", content=zipped, headers={"content-encoding": "gzip"}
    )
    assert response.status_code == 413
    ok = served.client.post(
        "/v1/models/churn/predict",
        content=gzip.compress(json.dumps({"records": [ROW]}).encode()),
        headers={"content-encoding": "gzip"},
    )
    assert ok.status_code == 200
    unsupported = served.client.post(
        "/v1/models/churn/predict", content=b"{}", headers={"content-encoding": "br"}
    )
    assert unsupported.status_code == 415


def test_ten_megabyte_payload_against_the_default_limit(churn, start_server) -> None:  # type: ignore[no-untyped-def]
    running = start_server()  # 8 MiB default
    running.app.deploy("churn", "models:/churn@prod")
    body = b'{"records": [' + b",".join([json.dumps(ROW).encode()] * 260_000) + b"]}"
    assert len(body) > 10_000_000
    response = running.client.post("/v1/models/churn/predict", content=body)
    assert response.status_code == 413


def test_declared_oversized_body_is_refused_before_it_is_sent(served) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/churn/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000000\r\n\r\n{"records": ['
        )
        started = time.monotonic()
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - started < 5


def test_unknown_model_version_path_and_method(served) -> None:  # type: ignore[no-untyped-def]
    client = served.client
    unknown = client.post("/v2/models/nope/infer", json={"inputs": GOOD_V2})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "model_not_found")
    version = client.post("/v2/models/churn/versions/9/infer", json={"inputs": GOOD_V2})
    assert (version.status_code, version.json()["code"]) == (404, "version_not_found")
    assert client.get("/v2/models/churn/versions/9").status_code == 404
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/nothing/here").status_code == 404
    assert client.get("/v2/models/churn/explain").status_code == 404
    wrong = client.get("/v2/models/churn/infer")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert client.post("/v2/health/ready").status_code == 405


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
V1_BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {
            "records": st.lists(
                st.dictionaries(st.sampled_from(["tenure", "charges", "plan", "x"]), JSON_VALUES), max_size=3
            )
        }
    ),
    st.fixed_dictionaries({"columns": JSON_VALUES, "data": JSON_VALUES}),
)
TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["tenure", "charges", "plan", "input-0"]) | st.text(max_size=5),
        "datatype": st.sampled_from(["BOOL", "INT8", "INT64", "UINT8", "FP16", "FP32", "FP64", "BYTES", "X"]),
        "shape": st.lists(st.integers(-1, 3), max_size=3),
        "data": JSON_VALUES,
    }
)
V2_BODIES = st.one_of(JSON_VALUES, st.fixed_dictionaries({"inputs": st.lists(TENSOR, max_size=3)}))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(v1=V1_BODIES, v2=V2_BODIES)
def test_nothing_a_client_sends_gets_a_500(served, v1, v2) -> None:  # type: ignore[no-untyped-def]
    for url, body in [("/v1/models/churn/predict", v1), ("/v2/models/churn/infer", v2)]:
        response = served.client.post(url, content=json.dumps(body).encode())
        assert response.status_code < 500, (body, response.text)
        if response.status_code != 200:
            assert isinstance(response.json()["error"], str)
