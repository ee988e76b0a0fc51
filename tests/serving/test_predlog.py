"""The prediction log: rows written by real servers, PII kept out of every byte, read back by time."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from servers import S3Server, free_port

import shipway
from shipway.core.errors import IntegrityError, InvalidInput
from shipway.registry import Signature, infer_signature
from shipway.serving import (
    Arm,
    PredictionEvent,
    PredictionLog,
    ServingApp,
    Target,
    iter_prediction_batches,
    read_predictions,
)
from shipway.serving import predlog as predlog_module
from shipway.store import get_store, reset_default_store


def _wait(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _event(request_id: str, **fields: object) -> PredictionEvent:
    values: dict[str, object] = {
        "endpoint": "churn",
        "version": "1",
        "arm": "stable",
        "request_id": request_id,
        "columns": {"tenure": np.array([3, 40]), "charges": np.array([80.5, 55.0])},
        "predictions": np.array([1, 0]),
        "seconds": 0.002,
        **fields,
    }
    return PredictionEvent(**values)  # type: ignore[arg-type]


def _artifact_files() -> list[Path]:
    root = get_store().blobs.backend.root  # type: ignore[attr-defined]
    return sorted(p for p in (root / "predictions").rglob("*") if p.is_file())


# -- the signature's PII marks -----------------------------------------------------------------


def test_pii_is_marked_in_the_signature_and_only_serialised_when_set(churn_data) -> None:  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    plain = infer_signature(frame)
    assert all("pii" not in c for c in plain.to_dict()["inputs"]), "old signatures and digests unchanged"
    marked = infer_signature(frame.assign(email="a@b.c"), pii=["email"])
    assert [c.name for c in marked.inputs if c.pii] == ["email"]
    assert Signature.from_dict(marked.to_dict()) == marked
    with pytest.raises(InvalidInput, match=r"\['emial'\]"):
        infer_signature(frame, pii=["emial"])


def test_register_model_marks_pii_and_refuses_names_it_cannot_mark(churn_data, classifier) -> None:  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    version = shipway.register_model(classifier, name="churn", input_example=frame.head(20), pii=["plan"])
    assert [c.name for c in version.model_signature.inputs if c.pii] == ["plan"]
    with pytest.raises(InvalidInput, match="phone"):
        shipway.register_model(classifier, name="churn", input_example=frame.head(20), pii=["phone"])
    with pytest.raises(InvalidInput, match="input_example"):
        shipway.register_model(classifier, name="churn", pii=["plan"])


# -- request ids -------------------------------------------------------------------------------


def test_every_prediction_answer_carries_a_request_id(churn, start_server) -> None:  # type: ignore[no-untyped-def]
    app = ServingApp()
    app.deploy("churn", "models:/churn@prod")
    client = start_server(app).client
    record = {"tenure": 3, "charges": 80.5, "plan": "basic"}
    v2 = {
        "inputs": [
            {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [3]},
            {"name": "charges", "shape": [1], "datatype": "FP64", "data": [80.5]},
            {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["basic"]},
        ]
    }
    made = client.post("/v1/models/churn/predict", json={"records": [record]}).headers["shipway-request-id"]
    again = client.post("/v2/models/churn/infer", json=v2).headers["shipway-request-id"]
    assert len(made) == len(again) == 32 and made != again, "made up: uuid4 hex"
    assert (
        client.post("/v2/models/churn/infer", json={**v2, "id": "r-7"}).headers["shipway-request-id"] == "r-7"
    )
    given = {"x-request-id": "trace-1"}
    answer = client.post("/v1/models/churn/predict", json={"records": [record]}, headers=given)
    assert answer.headers["shipway-request-id"] == "trace-1"
    refused = client.post("/v1/models/churn/predict", json={"records": [{"tenure": "soon"}]}, headers=given)
    assert (refused.status_code, refused.headers["shipway-request-id"]) == (422, "trace-1")
    unknown = client.post("/v1/models/nope/predict", json={"records": [record]}, headers=given)
    assert (unknown.status_code, unknown.headers["shipway-request-id"]) == (404, "trace-1")
    odd = client.post("/v2/models/churn/infer", json={**v2, "id": "line\nbreak é"})
    assert odd.status_code == 200 and odd.headers["shipway-request-id"] == "line%0Abreak%20%C3%A9"
    assert odd.json()["id"] == "line\nbreak é"


# -- what a file holds -------------------------------------------------------------------------


def test_each_input_row_is_a_row_with_the_request_metadata(
    churn, start_server, classifier, churn_data
) -> None:  # type: ignore[no-untyped-def]
    app = ServingApp()
    plog = PredictionLog(flush_seconds=60)
    app.listeners.append(plog)
    app.deploy("churn", "models:/churn@prod")
    client = start_server(app).client
    rows = churn_data[0].head(3)
    before = datetime.now(UTC)
    ok = client.post("/v1/models/churn/predict", json={"records": rows.to_dict("records")})
    bad = client.post("/v1/models/churn/predict", json={"records": [{"tenure": "soon", "charges": 1.0}]})
    assert (ok.status_code, bad.status_code) == (200, 422)
    assert plog.flush() == 1
    table = read_predictions("churn")
    assert table.schema.names == [
        *predlog_module.METADATA.names,
        "tenure",
        "charges",
        "plan",
        "prediction",
    ]
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("row").type == pa.int32() and table.schema.field("status").type == pa.int16()
    got = table.to_pandas()
    answered = got[got["status"] == 200]
    assert list(answered["request_id"]) == [ok.headers["shipway-request-id"]] * 3
    assert list(answered["row"]) == [0, 1, 2]
    assert list(answered["prediction"]) == classifier.predict(rows).tolist()
    assert list(answered["tenure"]) == rows["tenure"].tolist()
    assert list(answered["plan"]) == rows["plan"].tolist()
    assert set(answered["model"]) == {"churn"} and set(answered["version"]) == {"1"}
    assert set(answered["arm"]) == {"stable"} and answered["error"].isna().all()
    assert (answered["latency_ms"] > 0).all() and not answered["mirrored"].any()
    assert answered["rollout_id"].isna().all()
    assert (got["time"] >= pd.Timestamp(before)).all()
    refused = got[got["status"] == 422].iloc[0]
    assert (
        refused["error"] == "signature_mismatch"
        and refused["request_id"] == bad.headers["shipway-request-id"]
    )
    assert pd.isna(refused["tenure"]) and refused["charges"] == 1.0 and pd.isna(refused["prediction"])


def test_pii_and_sticky_fields_never_reach_any_file_byte(churn_data, start_server) -> None:  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    example = frame.head(20).assign(
        email=[f"person{i}@example.com" for i in range(20)], note=[f"note {i}" for i in range(20)]
    )

    def model(rows: pd.DataFrame) -> np.ndarray:
        return (rows["tenure"] < 20).astype(np.int64).to_numpy()

    shipway.register_model(model, name="churn", input_example=example, pii=["email"])
    app = ServingApp()
    plog = PredictionLog(flush_seconds=60, compression="none")  # plain bytes, so a value would show
    app.listeners.append(plog)
    app.route("churn", Arm(app.load("churn", "models:/churn/1", trust=True)), sticky_field="customer_id")
    client = start_server(app).client
    record = {"tenure": 3, "charges": 80.5, "plan": "pro", "note": "visible-note-value"}
    for i in range(5):
        secret = {"email": f"secret-{i}@pii.example", "customer_id": f"cust-hidden-{i}"}
        answer = client.post("/v1/models/churn/predict", json={"records": [{**record, **secret}]})
        assert answer.status_code == 200, answer.text
    refused = {**record, "email": "refused@pii.example", "tenure": "soon"}
    assert client.post("/v1/models/churn/predict", json={"records": [refused]}).status_code == 422
    plog.flush()
    files = _artifact_files()
    assert files
    content = b"".join(p.read_bytes() for p in files)
    assert b"visible-note-value" in content, "the check can see a logged value"
    assert b"pii.example" not in content and b"cust-hidden" not in content
    table = read_predictions("churn")
    assert "email" not in table.schema.names and "customer_id" not in table.schema.names
    assert table.num_rows == 6


def test_waiting_rows_hold_no_view_of_the_request_body(churn_data, start_server) -> None:  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    example = frame.head(20).assign(phone=np.arange(20, dtype=np.int64) + 5550000)

    def model(rows: pd.DataFrame) -> np.ndarray:
        return (rows["tenure"] < 20).astype(np.int64).to_numpy()

    shipway.register_model(model, name="churn", input_example=example, pii=["phone"])
    app = ServingApp()
    plog = PredictionLog(flush_seconds=60)
    app.listeners.append(plog)
    app.deploy("churn", "models:/churn/1", trust=True)
    client = start_server(app).client
    tensors = [
        ("tenure", "INT64", np.array([3, 40], dtype="<i8").tobytes()),
        ("charges", "FP64", np.array([80.5, 55.0], dtype="<f8").tobytes()),
        ("plan", "BYTES", b"".join(len(v).to_bytes(4, "little") + v for v in (b"basic", b"pro"))),
        ("phone", "INT64", np.array([5551234, 5556789], dtype="<i8").tobytes()),
    ]
    inputs = [
        {"name": n, "shape": [2], "datatype": d, "parameters": {"binary_data_size": len(b)}}
        for n, d, b in tensors
    ]
    header = orjson.dumps({"inputs": inputs})
    answer = client.post(
        "/v2/models/churn/infer",
        content=header + b"".join(b for _, _, b in tensors),
        headers={"inference-header-content-length": str(len(header))},
    )
    assert answer.status_code == 200, answer.text
    (group,) = plog._groups.values()  # what waits for the flush
    kept = [a for values in group.features.values() for a in values]
    assert sorted(group.features) == ["charges", "plan", "tenure"] and len(kept) == 3
    for array in kept:  # each owns its values: none keeps the body (and the phone numbers) alive
        owner = array
        while owner.base is not None:
            owner = owner.base
            assert isinstance(owner, np.ndarray) and owner.nbytes == array.nbytes, type(owner)
    plog.flush()
    assert read_predictions("churn")["tenure"].to_pylist() == [3, 40]


def test_a_feature_named_like_a_metadata_column_keeps_its_name(start_server) -> None:  # type: ignore[no-untyped-def]
    example = pd.DataFrame({"time": [1.0, 2.0, 3.0], "prediction": [0.5, 0.1, 0.2], "_time": [1, 2, 3]})

    def model(rows: pd.DataFrame) -> np.ndarray:
        return (rows["time"] * 10).to_numpy()

    shipway.register_model(model, name="clock", input_example=example)
    app = ServingApp()
    plog = PredictionLog(flush_seconds=60)
    app.listeners.append(plog)
    app.deploy("clock", "models:/clock/1", trust=True)
    client = start_server(app).client
    record = {"time": 4.0, "prediction": 0.3, "_time": 7}
    assert client.post("/v1/models/clock/predict", json={"records": [record]}).status_code == 200
    plog.flush()
    since = datetime.now(UTC) - timedelta(minutes=5)
    table = read_predictions("clock", since=since)
    assert table.num_rows == 1
    names = table.schema.names
    assert {"time", "prediction", "_time", "__time", "_prediction"} <= set(names)
    row = table.to_pylist()[0]
    assert (row["time"], row["prediction"], row["_time"], row["_prediction"]) == (4.0, 0.3, 7, 40.0)
    assert isinstance(row["__time"], datetime)
    assert read_predictions("clock", until=since).num_rows == 0
    # Asked for by name, metadata columns are the metadata, wherever the file put them.
    (picked,) = read_predictions("clock", columns=["time", "prediction", "status"]).to_pylist()
    assert isinstance(picked["time"], datetime) and picked["prediction"] == 40.0 and picked["status"] == 200


def test_shadow_copies_and_failures_are_logged_as_mirrored(churn_data, classifier, start_server) -> None:  # type: ignore[no-untyped-def]
    frame, _ = churn_data

    def picky(rows: pd.DataFrame) -> np.ndarray:
        if (rows["tenure"] % 10 == 7).any():
            raise ValueError("tenures ending in 7 are not supported")
        return (rows["tenure"] < 20).astype(np.int64).to_numpy()

    shipway.register_model(classifier, name="churn", input_example=frame.head(50))
    shipway.register_model(picky, name="churn", input_example=frame[frame["tenure"] % 10 != 7].head(50))
    app = ServingApp()
    plog = PredictionLog(flush_seconds=60)
    app.listeners.append(plog)
    stable, shadow = app.load("churn", "models:/churn/1"), app.load("churn", "models:/churn/2", trust=True)
    app.route("churn", Arm(stable, 100), Arm(shadow, 0, "candidate", mirror=100))
    client = start_server(app).client
    rows = frame.iloc[:20]
    ids = []
    for i in range(len(rows)):
        answer = client.post("/v1/models/churn/predict", json={"records": rows.iloc[[i]].to_dict("records")})
        ids.append(answer.headers["shipway-request-id"])
    _wait(lambda: app.mirror.in_flight == 0)
    plog.flush()
    answered = read_predictions("churn").to_pandas()
    assert sorted(answered["request_id"]) == sorted(ids) and not answered["mirrored"].any()
    both = read_predictions("churn", include_mirrored=True).to_pandas()
    copies = both[both["mirrored"]]
    assert sorted(copies["request_id"]) == sorted(ids), "a copy keeps its request's id"
    assert set(copies["version"]) == {"2"} and set(copies["arm"]) == {"candidate"}
    sevens = copies[copies["tenure"] % 10 == 7]
    assert len(sevens) and set(zip(sevens["status"], sevens["error"], strict=True)) == {(500, "model_error")}
    assert read_predictions("churn", version=2, include_mirrored=True).num_rows == len(ids)
    assert read_predictions("churn", version="1", include_mirrored=True).num_rows == len(ids)


def test_matrix_columns_frame_outputs_and_unsigned_versions_are_logged() -> None:
    plog = PredictionLog()
    signed = infer_signature(pd.DataFrame({"tenure": [1.0, 2.0], "charges": [1.5, 2.5]}))
    matrix = np.arange(6.0).reshape(3, 2)  # a V2 [rows, columns] input: each column a strided view
    for request_id in ("m1", "m2"):
        columns = {"tenure": matrix[:, 0], "charges": matrix[:, 1]}
        frame = pd.DataFrame({"label": ["a", "b", "c"], "score": [0.1, 0.2, 0.3]})
        plog(_event(request_id, columns=columns, predictions=frame, signature=signed))
    plog(_event("u1", endpoint="free", columns={"a": np.array([1, 2])}))
    plog(
        _event(
            "u2", endpoint="free", columns={"a": np.array([3, 4]), "b": np.array(["x", "y"], dtype=object)}
        )
    )
    plog.flush()
    got = read_predictions("churn").to_pandas()
    assert list(got["tenure"]) == [0.0, 2.0, 4.0] * 2 and list(got["charges"]) == [1.0, 3.0, 5.0] * 2
    assert list(got["prediction.label"]) == ["a", "b", "c"] * 2 and list(got["prediction.score"])[:3] == [
        0.1,
        0.2,
        0.3,
    ]
    free = read_predictions("free").to_pandas()
    assert (
        list(free["a"]) == [1, 2, 3, 4] and list(free["b"])[2:] == ["x", "y"] and free["b"][:2].isna().all()
    )
    assert list(free["prediction"]) == [1, 0, 1, 0]


# -- sampling, bounds, flushing ----------------------------------------------------------------


def test_sampling_follows_the_request_id() -> None:
    plog = PredictionLog(sample=0.25, max_rows=100_000)
    ids = [f"{i:032x}" for i in range(4000)]
    for request_id in ids:
        plog(_event(request_id))
        plog(_event(request_id, mirrored=True, arm="candidate", version="2"))
    plog.flush()
    table = read_predictions("churn", include_mirrored=True, columns=["request_id", "mirrored"])
    logged = table.to_pandas().groupby("request_id")["mirrored"].agg(["count", "sum"])
    assert 0.2 < len(logged) / len(ids) < 0.3
    assert (logged["count"] == 4).all() and (logged["sum"] == 2).all(), "a request and its copy, or neither"
    again = PredictionLog(sample=0.25)  # another worker picks the same requests
    for request_id in ids[:400]:
        again(_event(request_id, endpoint="other"))
    again.flush()
    picked = set(read_predictions("other")["request_id"].to_pylist())
    assert picked and picked == set(logged.index) & set(ids[:400])
    with pytest.raises(InvalidInput, match="--no-prediction-log"):
        PredictionLog(sample=0)


def test_a_full_buffer_drops_and_counts_instead_of_growing(caplog: pytest.LogCaptureFixture) -> None:
    plog = PredictionLog(flush_rows=4, max_rows=6)
    for i in range(5):
        plog(_event(f"r{i}"))  # two rows each
    assert plog.dropped == 4
    with caplog.at_level(logging.WARNING, logger="shipway.serving"):
        assert plog.flush() == 1
    assert "dropped 4 row(s)" in caplog.text
    assert read_predictions("churn").num_rows == 6


def test_the_thread_flushes_on_time_and_on_rows_and_stop_flushes_the_rest() -> None:
    plog = PredictionLog(flush_rows=1000, flush_seconds=0.1).start()
    plog(_event("timed"))
    _wait(lambda: plog.written == 2)
    full = PredictionLog(flush_rows=4, flush_seconds=3600).start()
    full(_event("a"))
    full(_event("b"))
    _wait(lambda: full.written == 4)
    full(_event("c"))
    full.stop()
    plog.stop()
    ids = sorted(set(read_predictions("churn")["request_id"].to_pylist()))
    assert ids == ["a", "b", "c", "timed"]


def _artifacts_unreachable() -> tuple[Path, Path]:
    """Make the local artifact store refuse writes: its folder becomes a file."""
    artifacts = Path(get_store().blobs.uri)
    artifacts.mkdir(parents=True, exist_ok=True)
    away = artifacts.with_name("artifacts-away")
    artifacts.rename(away)
    artifacts.write_text("not a folder")
    return artifacts, away


def test_stop_retries_a_write_the_store_refused_then_says_what_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    artifacts, away = _artifacts_unreachable()
    plog = PredictionLog(flush_seconds=3600).start()
    plog(_event("late"))

    def back() -> None:
        time.sleep(0.7)
        artifacts.unlink()
        away.rename(artifacts)

    threading.Thread(target=back, daemon=True).start()
    plog.stop()  # the first write fails; a retry after the store is back succeeds
    assert plog.dropped == 0 and read_predictions("churn")["request_id"].to_pylist() == ["late"] * 2

    artifacts, away = _artifacts_unreachable()
    gone = PredictionLog(flush_seconds=3600).start()
    gone(_event("lost"))
    with caplog.at_level(logging.ERROR, logger="shipway.serving"):
        gone.stop()
    assert gone.dropped == 2 and "2 row(s) could not be stored before shutdown" in caplog.text


# -- reading -----------------------------------------------------------------------------------


def test_reading_prunes_hours_by_key_and_rows_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    plog = PredictionLog()
    start = datetime(2025, 3, 1, 22, 30, tzinfo=UTC)
    for hours in range(5):  # 22:30, 23:30, 00:30, 01:30, 02:30 across midnight
        at = start + timedelta(hours=hours)
        monkeypatch.setattr(predlog_module, "_now_us", lambda at=at: int(at.timestamp() * 1e6))
        plog(_event(f"h{hours}"))
    plog.flush()
    files = _artifact_files()
    assert len(files) == 5
    assert sorted({p.parent.parent.name for p in files}) == ["date=2025-03-01", "date=2025-03-02"]

    def ids(**window: datetime) -> list[str]:
        return sorted(set(read_predictions("churn", **window)["request_id"].to_pylist()))

    assert ids(since=datetime(2025, 3, 1, 23, 30), until=datetime(2025, 3, 2, 1, 30)) == ["h1", "h2"]
    assert ids(since=datetime(2025, 3, 2, 0, 31)) == ["h3", "h4"]
    # A file outside the range is never fetched: spoil the first one and read around it.
    files[0].write_bytes(b"not parquet")
    assert ids(since=datetime(2025, 3, 1, 23)) == ["h1", "h2", "h3", "h4"]
    with pytest.raises(IntegrityError, match="not a readable parquet file"):
        read_predictions("churn")
    with pytest.raises(InvalidInput, match="before until"):
        read_predictions("churn", since=datetime(2025, 3, 2), until=datetime(2025, 3, 1))
    with pytest.raises(InvalidInput, match="datetime"):
        read_predictions("churn", since="yesterday")  # type: ignore[arg-type]
    assert read_predictions("nobody").num_rows == 0


def test_versions_with_different_columns_read_as_one_table() -> None:
    plog = PredictionLog()
    first = infer_signature(pd.DataFrame({"tenure": [1, 2], "charges": [1.5, 2.5]}))
    second = infer_signature(pd.DataFrame({"tenure": [1.5, 2.5], "plan": ["a", "b"]}))
    plog(_event("one", signature=first))
    columns = {"tenure": np.array([1.5]), "plan": np.array(["pro"], dtype=object)}
    plog(_event("two", version="2", signature=second, columns=columns, predictions=np.array([[0.2, 0.8]])))
    plog.flush()
    batches = list(iter_prediction_batches("churn"))
    assert sorted(b.num_rows for b in batches) == [1, 2]
    assert {tuple(b.schema.names[11:]) for b in batches} == {
        ("tenure", "charges", "prediction"),
        ("tenure", "plan", "prediction.0", "prediction.1"),
    }
    table = read_predictions("churn")
    assert table.schema.field("tenure").type == pa.float64(), "int64 in v1, float64 in v2: the wider"
    rows = {(r["request_id"], r["row"]): r for r in table.to_pylist()}
    assert rows["one", 1]["charges"] == 55.0 and rows["one", 1]["plan"] is None
    assert rows["two", 0]["plan"] == "pro" and rows["two", 0]["prediction.1"] == 0.8
    assert read_predictions("churn", version=2).num_rows == 1
    picked = read_predictions("churn", columns=["request_id", "plan", "nothing"])
    assert picked.schema.names == ["request_id", "plan", "nothing"] and picked.num_rows == 3


def test_files_go_to_an_s3_artifact_store(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.create_bucket("predlog")
    monkeypatch.setenv("SHIPWAY_ARTIFACT_URI", "s3://predlog/team")
    monkeypatch.setenv("SHIPWAY_S3_ENDPOINT_URL", s3.endpoint)
    reset_default_store()
    plog = PredictionLog(get_store())
    plog(_event("s3-1"))
    assert plog.flush() == 1
    (key,) = list(get_store().blobs.backend.list("predictions/"))
    assert key.startswith("predictions/churn/date=") and key.endswith("-v1.parquet")
    table = read_predictions("churn", since=datetime.now(UTC) - timedelta(hours=1))
    assert table["request_id"].to_pylist() == ["s3-1", "s3-1"]


# -- a worker killed mid-flight ----------------------------------------------------------------

_SERVER = """
import sys
import uvicorn
from shipway.serving import PredictionLog, ServingApp

app = ServingApp()
log = PredictionLog(flush_seconds=0.05, flush_rows=20).start()
app.listeners.append(log)
app.on_close.append(log.stop)
app.deploy("churn", "models:/churn@prod")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_a_killed_worker_keeps_every_flushed_request_and_no_partial_file(churn) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SERVER), str(port)], env=os.environ.copy()
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/models/churn/predict"
        with httpx.Client(timeout=10) as client:
            _wait(lambda: _answers(client, port), 60)
            record = {"tenure": 3, "charges": 80.5, "plan": "basic"}
            first = [f"before-{i}" for i in range(30)]
            for request_id in first:
                answer = client.post(url, json={"records": [record]}, headers={"x-request-id": request_id})
                assert answer.headers["shipway-request-id"] == request_id
            _wait(lambda: set(first) <= set(read_predictions("churn")["request_id"].to_pylist()))
            sent: list[str] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=5) as c:
                    while not stop.is_set():
                        rid = f"during-{len(sent)}"
                        sent.append(rid)
                        try:
                            c.post(url, json={"records": [record] * 5}, headers={"x-request-id": rid})
                        except httpx.HTTPError:
                            return

            loader = threading.Thread(target=load)
            loader.start()
            time.sleep(0.6)  # several flushes under load, then killed without warning
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            stop.set()
            loader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    files = [p for p in _artifact_files() if not p.name.startswith(".tmp-")]
    for path in files:
        pq.read_table(path)  # each visible file is whole
    logged = read_predictions("churn")["request_id"].to_pylist()
    assert set(first) <= set(logged)
    assert set(logged) <= set(first) | set(sent)
    assert any(r.startswith("during-") for r in logged), "flushes under load were kept"


def _answers(client: httpx.Client, port: int) -> bool:
    try:
        return client.get(f"http://127.0.0.1:{port}/v2/models/churn/ready").status_code == 200
    except httpx.HTTPError:
        return False


# -- shipway serve -----------------------------------------------------------------------------


def test_shipway_serve_logs_by_default_and_writes_the_rest_when_stopped(churn) -> None:  # type: ignore[no-untyped-def]
    shipway_cli = [sys.executable, "-m", "shipway", "serve", "churn@prod"]
    refused = subprocess.run([*shipway_cli, "--log-sample", "2"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--log-sample" in refused.stderr and "Traceback" not in refused.stderr
    port = free_port()
    proc = subprocess.Popen([*shipway_cli, "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        with httpx.Client(timeout=10) as client:
            _wait(lambda: _answers(client, port), 60)
            url = f"http://127.0.0.1:{port}/v1/models/churn/predict"
            record = {"tenure": 3, "charges": 80.5, "plan": "basic"}
            ids = [
                client.post(url, json={"records": [record]}).headers["shipway-request-id"] for _ in range(3)
            ]
        proc.send_signal(signal.SIGTERM)  # well before the 10 s flush: stopping writes them
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert sorted(read_predictions("churn")["request_id"].to_pylist()) == sorted(ids)


def test_no_prediction_log_adds_no_listener(churn) -> None:  # type: ignore[no-untyped-def]
    from shipway.serving.serve import ServePlan, build_app

    targets = (Target("churn", "models:/churn@prod"),)
    for sample, expected in ((None, 0), (0.5, 1)):
        app = build_app(ServePlan(targets=targets, log_sample=sample), store=get_store())
        try:
            assert sum(isinstance(x, PredictionLog) for x in app.listeners) == expected
        finally:
            app.close()
