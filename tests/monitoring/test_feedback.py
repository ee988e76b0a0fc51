"""Feedback: labels recorded from Python, files, the CLI and the serving endpoint, read back deduplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import shipway
from shipway.monitoring import FeedbackReceipt, record_feedback
from shipway.monitoring.feedback import read_labels
from shipway.store import get_store


def _labels() -> list[dict[str, object]]:
    return [{"request_id": f"r{i}", "row": i % 2, "label": i % 3 == 0} for i in range(6)]


def test_labels_are_stored_as_parquet_under_the_day_they_arrived(churn) -> None:  # type: ignore[no-untyped-def]
    receipt = record_feedback("churn", _labels())
    assert isinstance(receipt, FeedbackReceipt) and receipt.labels == 6
    assert receipt.key.startswith(f"feedback/churn/date={receipt.received:%Y-%m-%d}/")
    assert receipt.key.endswith(".parquet")
    assert get_store().blobs.backend.exists(receipt.key)
    got = read_labels("churn", store=get_store())
    table = got.table.sort_by([("request_id", "ascending")])
    assert table.column("request_id").to_pylist() == [f"r{i}" for i in range(6)]
    assert table.column("row").to_pylist() == [0, 1, 0, 1, 0, 1]
    assert table.column("label").to_pylist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # booleans as numbers
    assert table.schema.field("row").type == pa.int64()


def test_every_input_form_gives_the_same_labels(churn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame({"request_id": ["a", "b"], "label": ["yes", "no"]})  # row defaults to 0
    frame.to_parquet(tmp_path / "labels.parquet")
    frame.to_csv(tmp_path / "labels.csv", index=False)
    forms = [
        frame,
        frame.to_dict("records"),
        {"request_id": ["a", "b"], "label": ["yes", "no"]},
        pa.Table.from_pandas(frame),
        tmp_path / "labels.parquet",
        str(tmp_path / "labels.csv"),
    ]
    for form in forms:
        assert record_feedback("churn", form).labels == 2
    got = read_labels("churn", store=get_store())
    assert got.received == 12 and got.duplicates == 10
    assert sorted(zip(got.table["request_id"].to_pylist(), got.table["label"].to_pylist(), strict=True)) == [
        ("a", "yes"),
        ("b", "no"),
    ]


def test_csv_request_ids_stay_text(churn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "labels.csv").write_text("request_id,row,label\n00123,0,1\n00124,2,0\n")
    record_feedback("churn", tmp_path / "labels.csv")
    got = read_labels("churn", store=get_store()).table.sort_by("request_id")
    assert got["request_id"].to_pylist() == ["00123", "00124"] and got["row"].to_pylist() == [0, 2]


def test_the_last_label_received_for_a_key_wins(churn) -> None:  # type: ignore[no-untyped-def]
    record_feedback("churn", [{"request_id": "r1", "label": 0}, {"request_id": "r1", "label": 1}])
    record_feedback("churn", [{"request_id": "r2", "label": 1}])
    record_feedback("churn", [{"request_id": "r2", "label": 0}])  # a correction, sent later
    got = read_labels("churn", store=get_store())
    assert dict(zip(got.table["request_id"].to_pylist(), got.table["label"].to_pylist(), strict=True)) == {
        "r1": 1.0,
        "r2": 0.0,
    }
    assert got.received == 4 and got.duplicates == 2


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([{"request_id": "a"}], "no label column"),
        ([{"label": 1}], "no request_id column"),
        ([{"request_id": "a", "label": 1, "score": 0.3}], "unexpected column.*'score'"),
        ([{"request_id": "", "label": 1}], r"request_id is empty in 1 label\(s\), at rows 0"),
        ([{"request_id": "a", "label": 1}, {"request_id": None, "label": 0}], "at rows 1"),
        ([{"request_id": "a", "row": -1, "label": 1}], "row is not a whole number from 0 to"),
        ([{"request_id": "a", "row": 1.5, "label": 1}], "row is not a whole number"),
        ([{"request_id": "a", "label": None}], "label is missing"),
        ([{"request_id": "a", "label": float("nan")}], "label is missing or not finite"),
        ([{"request_id": "a", "label": 10**400}], r"label is a number too large .* at rows 0"),
        ([{"request_id": "a", "row": 10**400, "label": 1}], r"row is a number too large"),
        ([{"request_id": "a", "row": 1e300, "label": 1}], r"row is not a whole number from 0 to 2147483647"),
        ([{"request_id": "a", "row": float("inf"), "label": 1}], "row is not a whole number from 0"),
        ([{"request_id": True, "label": 1}], "request_id is not text or a whole number"),
        (
            [{"request_id": "a", "label": 1}, {"request_id": "b", "label": "yes"}],
            "'label' mixes number and text",
        ),
        ([], "no labels"),
        (["a"], r"labels\[0\] is not an object"),
        (42, "labels must be a DataFrame"),
    ],
)
def test_bad_labels_are_refused_naming_the_problem(churn, labels, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(shipway.InvalidInput, match=message):
        record_feedback("churn", labels)
    assert not list(get_store().blobs.backend.list("feedback/"))


def test_numeric_request_ids_are_their_decimal_text(churn) -> None:  # type: ignore[no-untyped-def]
    record_feedback("churn", [{"request_id": 12345, "label": 1}, {"request_id": 10**30, "label": 0}])
    record_feedback("churn", pd.DataFrame({"request_id": [7, 8], "label": [1, 0]}))
    record_feedback("churn", {"request_id": [9.0], "label": [1]})  # an integer column pandas made floats
    got = read_labels("churn", store=get_store()).table.sort_by("request_id")
    assert got["request_id"].to_pylist() == ["1" + "0" * 30, "12345", "7", "8", "9"]


def test_labels_belong_to_a_registered_model(churn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(shipway.NotFound, match="No model named 'nope'"):
        record_feedback("nope", _labels())
    with pytest.raises(shipway.InvalidInput, match="name the model"):
        record_feedback("churn@prod", _labels())


def test_the_serving_endpoint_records_labels_and_refuses_bad_ones(churn, serve) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"), max_body_bytes=4096)
    ok = served.client.post("/v2/models/churn/feedback", json={"labels": _labels()})
    assert ok.status_code == 200, ok.text
    assert ok.json()["labels"] == 6 and ok.json()["model"] == "churn"
    assert read_labels("churn", store=get_store()).table.num_rows == 6

    bad = served.client.post(
        "/v2/models/churn/feedback", json={"labels": [{"request_id": "a", "label": None}]}
    )
    assert bad.status_code == 422
    body = bad.json()
    assert body["code"] == "invalid_labels" and "label is missing" in body["error"]
    assert body["details"] == [{"field": "label", "rows": [0], "problem": "is missing or not finite"}]

    garbled = served.client.post("/v2/models/churn/feedback", content=b"{not json")
    assert garbled.status_code == 400 and garbled.json()["code"] == "malformed_json"
    shapeless = served.client.post("/v2/models/churn/feedback", json=[{"request_id": "a"}])
    assert shapeless.status_code == 400 and shapeless.json()["details"][0]["field"] == "labels"
    unknown = served.client.post("/v2/models/nope/feedback", json={"labels": _labels()})
    assert unknown.status_code == 404 and unknown.json()["code"] == "model_not_found"
    huge = served.client.post("/v2/models/churn/feedback", json={"labels": _labels() * 200})
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
    wrong_method = served.client.get("/v2/models/churn/feedback")
    assert wrong_method.status_code == 405
    for label in ('"label": 1' + "0" * 400, '"row": 1e300, "label": 1', '"row": Infinity, "label": 1'):
        body = '{"labels": [{"request_id": "a", ' + label + "}]}"
        odd = served.client.post("/v2/models/churn/feedback", content=body.encode())
        assert odd.status_code == 422 and odd.json()["details"][0]["rows"] == [0], odd.text
    assert read_labels("churn", store=get_store()).table.num_rows == 6  # nothing more was stored
    numeric = served.client.post(
        "/v2/models/churn/feedback", json={"labels": [{"request_id": 12345, "label": 1}]}
    )
    assert numeric.status_code == 200, numeric.text


def test_cli_records_a_labels_file(churn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pd.DataFrame({"request_id": ["a", "b", "c"], "row": [0, 0, 1], "label": [1, 0, 1]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    run = [sys.executable, "-m", "shipway", "feedback", "churn"]
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [*run, "--file", str(tmp_path / "labels.csv")], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "Recorded 3 label(s) for churn" in out.stdout
    as_json = subprocess.run(
        [*run, "--file", str(tmp_path / "labels.csv"), "--json"], capture_output=True, text=True, env=env
    )
    assert json.loads(as_json.stdout)["labels"] == 3
    missing = subprocess.run(
        [*run, "--file", str(tmp_path / "nope.csv")], capture_output=True, text=True, env=env
    )
    assert (
        missing.returncode == 2 and "No labels file" in missing.stderr and "Traceback" not in missing.stderr
    )
    # Labels are written to the store itself: a CLI pointed at a server says so, and stores nothing.
    remote = subprocess.run(
        [*run, "--file", str(tmp_path / "labels.csv")],
        capture_output=True,
        text=True,
        env={**env, "SHIPWAY_URI": "http://127.0.0.1:9"},
    )
    assert remote.returncode == 2 and "works on the store directly" in remote.stderr
    assert "Traceback" not in remote.stderr


def test_the_serving_endpoint_takes_labels_only_for_what_it_serves_and_not_too_many(churn, serve) -> None:  # type: ignore[no-untyped-def]
    from shipway.monitoring.feedback import MAX_HTTP_LABELS

    idle = serve()  # serves nothing: churn is registered, but not routed here
    elsewhere = idle.client.post("/v2/models/churn/feedback", json={"labels": _labels()})
    assert elsewhere.status_code == 404 and elsewhere.json()["code"] == "model_not_found"
    served = serve(("churn", "models:/churn@prod"))
    labels = [{"request_id": "r", "label": 1}] * (MAX_HTTP_LABELS + 1)
    many = served.client.post("/v2/models/churn/feedback", json={"labels": labels})
    assert many.status_code == 413 and many.json()["code"] == "too_many_labels", many.text
    assert "shipway feedback" in many.json()["error"]
    assert not list(get_store().blobs.backend.list("feedback/"))
    assert served.client.post("/v2/models/churn/feedback", json={"labels": labels[1:]}).status_code == 200
