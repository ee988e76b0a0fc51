"""Live quality: labels joined to logged predictions, checked against scikit-learn's metrics."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

import shipway
from shipway.monitoring import QualityReport, live_quality, record_feedback
from shipway.serving import Arm, PredictionEvent, PredictionLog, read_predictions


def _logged(model: str = "churn") -> pd.DataFrame:
    table = read_predictions(model, since=datetime.now(UTC) - timedelta(hours=1))
    return table.to_pandas()


def test_classification_metrics_with_late_partial_and_corrected_labels(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    frame = customers(600, 11)
    ids = served.predict(frame)  # six requests of 100 rows
    served.flush()
    until = datetime.now(UTC) + timedelta(seconds=1)
    logged = _logged()
    truth = ((frame["tenure"] < 25) & (frame["charges"] > 55)).astype(int).to_numpy()  # not the model's rule

    # Labels for four of the six requests (partial), all sent after the window ended (late); the
    # first request's labels are sent wrong, then corrected: the correction counts, once.
    def labels(k: int, flip: bool = False) -> list[dict[str, object]]:
        return [
            {"request_id": ids[k], "row": r, "label": int(truth[k * 100 + r]) ^ int(flip)} for r in range(100)
        ]

    record_feedback("churn", labels(0, flip=True))
    record_feedback("churn", [*labels(0), *labels(1), *labels(2)])
    record_feedback("churn", labels(4))

    report = live_quality("churn@prod", window="1h", until=until)
    assert isinstance(report, QualityReport) and report.task == "classification"
    assert report.metrics == ["accuracy", "f1"]
    assert any("AUC is left out" in n for n in report.notes)
    assert any("100 label(s) were sent again" in n for n in report.notes)
    o = report.overall
    assert (o.predictions, o.labelled) == (600, 400) and o.coverage == pytest.approx(400 / 600)

    labelled = logged[logged["request_id"].isin([ids[k] for k in (0, 1, 2, 4)])]
    y_pred = labelled["prediction"].to_numpy()
    y_true = truth[
        [ids.index(rid) * 100 + row for rid, row in zip(labelled["request_id"], labelled["row"], strict=True)]
    ]
    assert o.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    assert o.metrics["f1"] == pytest.approx(skm.f1_score(y_true, y_pred), abs=1e-12)
    assert [(r.key, r.labelled) for r in report.group("arm")] == [("stable", 400)]
    assert [(r.key, r.predictions) for r in report.group("version")] == [("1", 600)]
    assert sum(r.labelled for r in report.group("time")) == 400
    frame_out = report.to_frame()
    assert list(frame_out.columns) == [
        "group",
        "key",
        "predictions",
        "labelled",
        "coverage",
        "accuracy",
        "f1",
    ]


def test_regression_metrics_from_the_signature_output(customers, training, serve) -> None:  # type: ignore[no-untyped-def]
    from sklearn.ensemble import GradientBoostingRegressor

    frame, _ = training
    numeric = frame[["tenure", "charges"]]
    model = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(numeric, frame["charges"] * 0.1)
    shipway.register_model(model, "spend", input_example=numeric.head(20))
    served = serve(("spend", "models:/spend/1"))
    current = customers(300, 12)[["tenure", "charges"]]
    ids = served.predict(current, model="spend", rows=50)
    served.flush()
    truth = current["charges"].to_numpy() * 0.1 + 1.0
    record_feedback(
        "spend",
        [{"request_id": ids[i // 50], "row": i % 50, "label": float(truth[i])} for i in range(300)],
    )
    report = live_quality("spend/1", window="1h")
    assert report.task == "regression" and report.metrics == ["rmse", "mae"]
    logged = _logged("spend")
    order = [ids.index(rid) * 50 + row for rid, row in zip(logged["request_id"], logged["row"], strict=True)]
    pred, true = logged["prediction"].to_numpy(), truth[order]
    o = report.overall
    assert o.labelled == 300
    assert o.metrics["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(true, pred)), rel=1e-12)
    assert o.metrics["mae"] == pytest.approx(skm.mean_absolute_error(true, pred), rel=1e-12)


def _event(
    request_id: str, arm: str, version: str, rows: int, seed: int
) -> tuple[PredictionEvent, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, rows)
    proba = np.clip(truth * 0.35 + rng.uniform(0, 0.65, rows), 0, 1)
    outputs = pd.DataFrame({"label": (proba > 0.5).astype(np.int64), "proba": proba})
    columns = {
        "tenure": rng.integers(0, 72, rows),
        "charges": rng.normal(70, 20, rows),
        "plan": np.array(["basic"] * rows, dtype=object),
    }
    return PredictionEvent("churn", version, arm, request_id, columns, outputs, 0.001), truth


def test_auc_per_arm_when_the_model_logs_a_score(churn) -> None:  # type: ignore[no-untyped-def]
    log = PredictionLog(flush_seconds=3600)
    truths, outputs = {}, {}
    for i, (arm, version) in enumerate([("stable", "1"), ("candidate", "1"), ("stable", "1")]):
        event, truth = _event(f"q{i}", arm, version, 200, i)
        log(event)
        truths[f"q{i}"], outputs[f"q{i}"] = truth, event.predictions
    log.flush()
    for rid, truth in truths.items():
        record_feedback(
            "churn", [{"request_id": rid, "row": r, "label": int(t)} for r, t in enumerate(truth)]
        )

    report = live_quality("churn", window="15m")
    assert report.metrics == ["accuracy", "f1", "auc"]
    assert (report.prediction, report.score) == ("prediction.label", "prediction.proba")
    y = np.concatenate([truths[k] for k in ("q0", "q1", "q2")])
    scores = np.concatenate([outputs[k]["proba"] for k in ("q0", "q1", "q2")])
    labels = np.concatenate([outputs[k]["label"] for k in ("q0", "q1", "q2")])
    assert report.overall.metrics["auc"] == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)
    assert report.overall.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, labels), abs=1e-12)
    arms = {r.key: r for r in report.group("arm")}
    assert (arms["stable"].labelled, arms["candidate"].labelled) == (400, 200)
    candidate = slice(200, 400)
    assert arms["candidate"].metrics["auc"] == pytest.approx(
        skm.roc_auc_score(y[candidate], scores[candidate])
    )


def test_a_reused_request_id_counts_its_label_once(churn) -> None:  # type: ignore[no-untyped-def]
    log = PredictionLog(flush_seconds=3600)
    for seed in (1, 2):  # a client sent two requests with the same V2 id
        event, _ = _event("same", "stable", "1", 10, seed)
        log(event)
    log.flush()
    record_feedback("churn", [{"request_id": "same", "row": r, "label": 1} for r in range(10)])
    report = live_quality("churn/1", window="15m", prediction="prediction.label", score="prediction.proba")
    assert report.overall.predictions == 20 and report.labelled == 10
    assert any("reused a request id" in n for n in report.notes)


def test_no_labels_yet_and_no_predictions(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(shipway.NotFound, match="No predictions of 'churn'"):
        live_quality("churn@prod")
    served = serve(("churn", "models:/churn@prod"))
    served.predict(customers(100, 1))
    served.flush()
    report = live_quality("churn@prod", window="24h")
    assert report.labelled == 0 and report.overall.predictions == 100
    assert report.overall.metrics == {"accuracy": None, "f1": None}
    assert any("No labels have arrived" in n for n in report.notes)
    assert len(report.group("time")) in (24, 25)  # hourly buckets on the clock, the empty ones too
    with pytest.raises(shipway.InvalidInput, match="task must be"):
        live_quality("churn@prod", task="ranking")
    with pytest.raises(shipway.InvalidInput, match=r"no column 'prediction\.score'"):
        live_quality("churn@prod", score="prediction.score")


def test_arms_of_a_rollout_are_scored_apart(customers, churn, fitted, training, serve) -> None:  # type: ignore[no-untyped-def]
    frame, _ = training
    shipway.register_model(fitted, "churn", input_example=frame.head(50))
    served = serve()
    stable, candidate = (
        served.app.load("churn", "models:/churn/1"),
        served.app.load("churn", "models:/churn/2"),
    )
    served.app.route("churn", Arm(stable, 100, "stable"), Arm(candidate, 0, "candidate"))
    first = customers(200, 21)
    a = served.predict(first)
    served.app.route("churn", Arm(stable, 0, "stable"), Arm(candidate, 100, "candidate"))
    second = customers(100, 22)
    b = served.predict(second)
    served.flush()
    for ids, part in ((a, first), (b, second)):
        truth = ((part["tenure"] < 20) & (part["charges"] > 60)).astype(int).to_numpy()
        record_feedback(
            "churn",
            [{"request_id": ids[i // 100], "row": i % 100, "label": int(truth[i])} for i in range(len(part))],
        )
    report = live_quality("churn", window="1h")
    assert {r.key: (r.predictions, r.labelled) for r in report.group("arm")} == {
        "candidate": (100, 100),
        "stable": (200, 200),
    }
    assert {r.key: r.labelled for r in report.group("version")} == {"1": 200, "2": 100}


def test_a_missing_prediction_leaves_out_its_row_in_every_group(churn) -> None:  # type: ignore[no-untyped-def]
    # A regression model answered [1.0, NaN] in a labelled request (and NaN in a second arm): the
    # NaN rows are left out of the metrics, and of every arm, version and time group alike.
    log = PredictionLog(flush_seconds=3600)
    columns = {"tenure": np.array([1, 2, 3]), "charges": np.array([50.0, 60.0, 70.0])}
    log(PredictionEvent("churn", "1", "stable", "n0", columns, np.array([1.0, np.nan, 3.0]), 0.001))
    log(PredictionEvent("churn", "1", "candidate", "n1", columns, np.array([np.nan, 2.0, 4.0]), 0.001))
    log.flush()
    record_feedback(
        "churn", [{"request_id": f"n{k}", "row": r, "label": 2.0} for k in (0, 1) for r in range(3)]
    )
    report = live_quality("churn", window="15m", task="regression")
    assert report.labelled == 4 and report.overall.predictions == 6
    arms = {r.key: r for r in report.group("arm")}
    assert (arms["stable"].labelled, arms["candidate"].labelled) == (2, 2)
    assert arms["stable"].metrics["mae"] == pytest.approx(1.0)
    assert arms["candidate"].metrics["mae"] == pytest.approx(1.0)
    assert sum(r.labelled for r in report.group("time")) == 4
    assert [r.labelled for r in report.group("version")] == [4]


def test_predictions_of_several_values_per_row_are_refused_in_one_line(churn) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    log = PredictionLog(flush_seconds=3600)
    columns = {"tenure": np.array([1, 2]), "charges": np.array([50.0, 60.0])}
    log(PredictionEvent("churn", "1", "stable", "m0", columns, np.ones((2, 2, 2)), 0.001))  # a list per row
    log.flush()
    record_feedback("churn", [{"request_id": "m0", "row": 0, "label": 1}])
    with pytest.raises(shipway.InvalidInput, match="holds a list of values per row"):
        live_quality("churn", window="15m")
    out = subprocess.run(
        [sys.executable, "-m", "shipway", "monitor", "quality", "churn", "--window", "15m"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: The prediction log's column 'prediction' holds a list")
    assert len(out.stderr.strip().splitlines()) == 1
