"""Per-arm windows: what counts against a version, and saving them so that nothing counts twice."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipway.rollout import agreement, read_window
from shipway.rollout.deployments import windows
from shipway.serving import PredictionEvent, RolloutRef, WindowRecorder
from shipway.serving.windows import first_prediction
from shipway.store import Store

STEP = RolloutRef("r1", 0)


def _event(arm: str = "stable", **fields: object) -> PredictionEvent:
    values: dict[str, object] = {
        "endpoint": "churn",
        "version": "1" if arm == "stable" else "2",
        "arm": arm,
        "request_id": None,
        "columns": {},
        "predictions": np.array([1, 0]),
        "seconds": 0.004,
        "rollout": STEP,
        **fields,
    }
    return PredictionEvent(**values)  # type: ignore[arg-type]


def test_what_counts_against_a_version(store: Store) -> None:
    recorder = WindowRecorder(store, worker="w1")
    recorder(_event())
    recorder(_event("candidate", predictions=None, error="model_error", status=500))
    recorder(_event("candidate", predictions=None, error="overloaded", status=503))
    recorder(_event("candidate", predictions=None, error="signature_mismatch", status=422))  # the client's
    recorder(_event("pinned"))  # the client chose the version
    recorder(_event(rollout=None))  # no rollout in progress
    recorder(_event("candidate", mirrored=True, agreement=(2, 2)))
    stable, candidate = recorder.window("r1", 0, "stable"), recorder.window("r1", 0, "candidate")
    assert (stable.requests, stable.errors, stable.classes) == (1, 0, {"1": 1})
    assert (candidate.requests, candidate.errors, candidate.classes) == (3, 2, {"1": 1})
    assert recorder.flush() == 2
    assert recorder.flush() == 0, "nothing changed"
    saved = windows(store, "r1", 0)
    assert (saved["stable"].requests, saved["candidate"].requests, saved["candidate"].errors) == (1, 3, 2)
    assert agreement(store, "r1", 0) == (2, 2)


def test_saving_again_replaces_and_a_restarted_worker_carries_on(store: Store) -> None:
    recorder = WindowRecorder(store, worker="w1")
    for _ in range(3):
        recorder(_event())
        recorder.flush()
    assert windows(store, "r1", 0)["stable"].requests == 3, "each save is cumulative: none counts twice"
    other = WindowRecorder(store, worker="w2")
    other(_event())
    other.flush()
    assert windows(store, "r1", 0)["stable"].requests == 4, "workers add up"
    restarted = WindowRecorder(store, worker="w1")  # the same name: pid 1 in a restarted container
    restarted(_event())
    restarted.stop()
    assert read_window(store, "r1", 0, "stable", "w1").requests == 4  # type: ignore[union-attr]
    assert windows(store, "r1", 0)["stable"].requests == 5


def test_first_prediction_takes_a_plain_value() -> None:
    assert first_prediction(np.array([3, 4])) == 3 and type(first_prediction(np.array([3]))) is int
    assert first_prediction(np.array([[0.25], [0.5]])) == 0.25
    assert first_prediction(pd.DataFrame({"p": ["yes"]})) == "yes"
    assert first_prediction(np.array([[0.1, 0.9]])) is None, "several outputs: no single prediction"
    assert first_prediction(None) is None
