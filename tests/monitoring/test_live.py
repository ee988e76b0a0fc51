"""live_drift and arm_drift on prediction logs written by real servers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import shipway
from shipway.data import get_dataset
from shipway.monitoring import LiveDriftReport, drift, live_drift
from shipway.serving import PredictionEvent, PredictionLog, read_predictions
from shipway.store import get_store


def test_live_drift_flags_the_shifted_feature_against_the_stored_training_profile(
    customers, churn, serve
) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    served.predict(customers(1_500, 1, shift=0.5))
    served.flush()
    # The reference is the profile stored when the version registered: the raw data is not needed.
    store = get_store()
    store.blobs.delete(get_dataset("churn-train").blob_digest)

    report = live_drift("churn@prod", window="1h")
    assert isinstance(report, LiveDriftReport)
    assert report.drifted_columns == ["charges"]
    assert [c.feature for c in report.columns] == ["tenure", "charges", "plan"]
    assert report.rows == 1_500 and report.versions == ["1"]
    assert report["charges"].method == "ks" and report["charges"].p_value < 1e-6  # 1,500 values: a test
    assert report.reference_source == "training dataset 'churn-train' version 1"
    assert report.quality_issues == []
    assert report.prediction is None  # nothing was logged in the hour before
    assert any("no baseline" in note for note in report.notes)


def test_live_drift_equals_drift_on_the_whole_window_read_at_once(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    for seed in range(3):  # three files, profiled batch by batch and merged
        served.predict(customers(700, 10 + seed, shift=0.2 * seed))
        served.flush()
    report = live_drift("churn/1", window="15m")
    logged = read_predictions("churn", since=datetime.now(UTC) - timedelta(minutes=15))
    assert logged.num_rows == 2_100
    whole = drift(report.reference, logged.select(["tenure", "charges", "plan"]).to_pandas())
    for mine, theirs in zip(report.columns, whole.columns, strict=True):
        assert mine.feature == theirs.feature and mine.method == theirs.method
        assert mine.statistic == pytest.approx(theirs.statistic, rel=1e-9, abs=1e-12)
        assert mine.drifted == theirs.drifted
    assert np.array_equal(report.current["tenure"].counts, whole.current["tenure"].counts)


def test_data_quality_counts_refused_requests_out_of_range_values_and_missing_values(
    customers, churn, serve
) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    frame = customers(1_200, 2)
    frame.loc[:29, "charges"] = 500.0  # 2.5% of values far above the training maximum
    served.predict(frame)
    assert served.send([{"tenure": 3, "charges": 80.0, "plan": "gold"}] * 3).status_code == 422
    missing = [{"tenure": 3, "charges": None, "plan": "basic"}] * 100
    assert served.send(missing).status_code == 422  # the signature allows no missing charges
    served.flush()

    report = live_drift("churn@prod", window="1h")
    assert report.statuses == {"200": 1_200, "422": 103}
    assert report.rows == 1_200  # drift is of the answered rows only
    flagged = {(c.feature, c.check): c for c in report.quality_issues}
    assert set(flagged) == {
        ("charges", "out_of_range"),
        ("plan", "unseen_categories"),
        ("charges", "missing_rate"),
    }
    assert flagged["charges", "out_of_range"].rows == 30
    assert "above its maximum" in flagged["charges", "out_of_range"].detail
    assert (
        flagged["plan", "unseen_categories"].rows == 3
        and "'gold'" in flagged["plan", "unseen_categories"].detail
    )
    assert flagged["charges", "missing_rate"].value == pytest.approx(100 / 1_303)
    passed = {(c.feature, c.check) for c in report.data_quality if not c.flagged}
    assert ("tenure", "out_of_range") in passed and ("tenure", "missing_rate") in passed
    frame = report.quality_frame()
    assert list(frame.columns[:6]) == ["feature", "check", "value", "reference", "threshold", "flagged"]


def test_schema_violations_a_missing_feature_and_a_feature_logged_with_another_type(customers, churn) -> None:  # type: ignore[no-untyped-def]
    log = PredictionLog(flush_seconds=3600)
    rows = 50
    rng = np.random.default_rng(3)
    # Version 1 as a client of an older schema would have it logged: no signature on the event, so the
    # log keeps the columns as sent: plan as integer codes, and no tenure at all.
    log(
        PredictionEvent(
            "churn",
            "1",
            "stable",
            "r-1",
            {"charges": rng.normal(70, 20, rows), "plan": rng.integers(0, 3, rows)},
            np.zeros(rows, dtype=np.int64),
            0.001,
        )
    )
    log.flush()
    report = live_drift("churn/1", window="1h")
    flagged = {(c.feature, c.check): c for c in report.quality_issues}
    assert flagged["tenure", "missing_column"].rows == rows
    assert flagged["plan", "type_mismatch"].rows == rows
    assert "int64" in flagged["plan", "type_mismatch"].detail
    assert [c.feature for c in report.columns] == ["charges"]  # only what could be compared


def test_prediction_drift_compares_the_window_with_the_one_before(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    began = datetime.now(UTC)
    served.predict(customers(1_200, 4))
    split = datetime.now(UTC)
    time.sleep(0.05)
    high = customers(1_200, 5).assign(tenure=lambda f: f["tenure"] % 10)  # short tenures: churners
    served.predict(high)
    served.flush()
    length = (datetime.now(UTC) - split) + (split - began) + timedelta(milliseconds=10)
    until = split + length
    time.sleep(max((until - datetime.now(UTC)).total_seconds(), 0))

    report = live_drift("churn@prod", window=length, until=until)
    assert report.rows == 1_200
    assert report.prediction is not None and report.prediction_drifted == ["prediction"]
    assert report.prediction.reference.rows == 1_200  # the baseline: the window before
    assert "window before" in report.prediction_baseline
    assert "tenure" in report.drifted_columns


def test_clear_errors_for_unknown_models_empty_windows_and_versions_without_a_reference(
    churn, fitted, training, serve
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(shipway.NotFound, match="No model named 'nope'"):
        live_drift("nope@prod")
    with pytest.raises(shipway.NotFound, match="has no alias 'staging'"):
        live_drift("churn@staging")
    with pytest.raises(shipway.NotFound, match=r"No predictions of 'churn' \(version 1\).*--window"):
        live_drift("churn@prod", window="15m")
    with pytest.raises(shipway.InvalidInput, match="15m, 1h, 24h or 7d"):
        live_drift("churn@prod", window="an hour")
    frame, _ = training
    shipway.register_model(fitted, "churn", input_example=frame.head(20))  # no run: no training data
    served = serve(("churn", "models:/churn/2"))
    served.predict(frame.head(100))
    served.flush()
    with pytest.raises(shipway.NotFound, match=r"models:/churn/2 has no reference profile.*role='train'"):
        live_drift("churn/2")
    # A reference can be given instead.
    given = live_drift("churn/2", reference=frame)
    assert given.reference_source == "the reference given" and given.drifted_columns == []


def test_every_versions_predictions_under_the_model_name(customers, churn, fitted, training, serve) -> None:  # type: ignore[no-untyped-def]
    frame, y = training
    with shipway.start_run(experiment="churn") as run:
        run.log_dataset(frame.assign(churned=y), name="churn-train", role="train", target="churned")
    shipway.register_model(fitted, "churn", run=run, input_example=frame.head(50))
    served = serve(("churn", "models:/churn/1"))
    served.predict(customers(300, 6))
    served.app.deploy("churn", "models:/churn/2")
    served.predict(customers(300, 7))
    served.flush()
    both = live_drift("churn", window="1h")
    assert both.versions == ["1", "2"] and both.rows == 600
    assert live_drift("churn", version=2, window="1h").rows == 300


def test_the_report_serialises_to_json_ready_data(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    import json

    served = serve(("churn", "models:/churn@prod"))
    served.predict(customers(200, 1))
    served.flush()
    data = live_drift("churn@prod").to_dict()
    assert data["model"] == "churn" and data["window"]["window"] == "1h"
    assert {c["feature"] for c in data["columns"]} == {"tenure", "charges", "plan"}
    json.dumps(data)
    assert isinstance(pd.DataFrame(data["data_quality"]), pd.DataFrame)
