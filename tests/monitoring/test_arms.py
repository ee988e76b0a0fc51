"""arm_drift: the candidate arm of a rollout against the stable arm, from a real server's log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

import shipway
from shipway.monitoring import arm_drift
from shipway.serving import Arm, read_predictions


def test_arm_drift_compares_the_candidate_arm_with_the_stable_arm(
    customers, churn, fitted, training, serve
) -> None:  # type: ignore[no-untyped-def]
    frame, y = training
    with shipway.start_run(experiment="churn") as run:
        run.log_dataset(frame.assign(churned=y), name="churn-train", role="train", target="churned")
    shipway.register_model(fitted, "churn", run=run, input_example=frame.head(50))
    served = serve()
    app = served.app
    stable, candidate = app.load("churn", "models:/churn/1"), app.load("churn", "models:/churn/2")
    app.route("churn", Arm(stable, 100, "stable"), Arm(candidate, 0, "candidate"))
    served.predict(customers(1_500, 8))
    app.route("churn", Arm(stable, 0, "stable"), Arm(candidate, 100, "candidate"))
    served.predict(customers(1_500, 9, shift=0.6))
    served.flush()

    report = arm_drift("churn", "1h")
    assert report.drifted_columns == ["charges"]
    assert report.reference_source == "stable arm (version 1)"
    assert report.current_source == "candidate arm (version 2)"
    assert report.reference.rows == 1_500 and report.current.rows == 1_500
    assert report.prediction is not None and [c.feature for c in report.prediction.columns] == ["prediction"]
    with pytest.raises(shipway.InvalidInput, match="name the model"):
        arm_drift("churn@prod")
    logged = read_predictions("churn", since=datetime.now(UTC) - timedelta(hours=1))
    assert set(pc.unique(logged["arm"]).to_pylist()) == {"stable", "candidate"}


def test_arm_drift_needs_both_arms(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    served.predict(customers(100, 1))
    served.flush()
    with pytest.raises(shipway.NotFound, match="No candidate predictions"):
        arm_drift("churn", "1h")
