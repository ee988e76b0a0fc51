"""Live quality in the rollout analysis: labels sent back as feedback are joined to the prediction
log by request id, per arm, and a candidate that is wrong more often is rolled back on them."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import numpy as np
import pandas as pd
import pytest
from servers import ThreadedServer

import shipway
from shipway import governance
from shipway.monitoring import record_feedback
from shipway.rollout import RolloutConfig, deploy, get_deployment
from shipway.rollout import deployments as dep
from shipway.rollout.labels import labelled_by_arm
from shipway.serving.serve import ServePlan, build_app
from shipway.store import Store, get_store

EXAMPLE = pd.DataFrame({"x": np.linspace(-2, 2, 20)})


def _model(threshold: float):  # type: ignore[no-untyped-def]
    def predict(frame: pd.DataFrame) -> np.ndarray:
        return (frame["x"].to_numpy() > threshold).astype(np.int64)

    return predict


def _register(threshold: float, store: Store) -> None:
    version = shipway.register_model(_model(threshold), name="churn", input_example=EXAMPLE, store=store)
    assert governance.promote("churn", version.version, "prod", store=store).status == "completed"


@pytest.fixture
def served(shipway_home):  # type: ignore[no-untyped-def]
    store = get_store()
    _register(0.0, store)  # right whenever the label is x > 0
    deploy("churn", "prod", store=store)
    _register(0.8, store)  # wrong for every x in (0, 0.8]
    rollout = deploy(
        "churn",
        "prod",
        config=RolloutConfig(steps=(50, 100), step_duration_ms=0, min_requests=10_000),
        store=store,
    )
    plan = ServePlan(environment="prod", trust=True, sync_interval=0.1, log_flush_seconds=0.2)
    app = build_app(plan, store=store)  # no controller: the test ticks it
    server = ThreadedServer(app)
    url = server.url
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.post(f"{url}/v1/models/churn/predict", json={"records": [{"x": 1.0}]})
            if r.status_code == 200 and r.headers["shipway-arm"] == "candidate":
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the canary was never served"
        time.sleep(0.05)
    yield store, url, rollout
    server.stop()
    app.close()


def test_labels_are_joined_per_arm_and_a_worse_candidate_is_rolled_back(served) -> None:  # type: ignore[no-untyped-def]
    store, url, rollout = served
    rng = np.random.default_rng(0)
    labels, answered = [], Counter()
    with httpx.Client(base_url=url, timeout=30) as client:
        for x in rng.uniform(-2, 2, 400).round(3):
            r = client.post("/v1/models/churn/predict", json={"records": [{"x": float(x)}]})
            assert r.status_code == 200
            answered[r.headers["shipway-arm"]] += 1
            labels.append({"request_id": r.headers["shipway-request-id"], "label": int(x > 0)})
    # Half the labels arrive, then all of them, with a duplicate of each of the first ten.
    record_feedback("churn", labels[:200], store=store)
    record_feedback("churn", labels[200:] + labels[:10], store=store)
    time.sleep(1.0)  # the prediction log's flush

    quality = labelled_by_arm(store, "churn", rollout.rollout_id)
    assert {arm: n for arm, (n, _) in quality.items()} == dict(answered), (
        "each label counts once, for its arm"
    )
    assert quality["stable"][1] == 0 and quality["candidate"][1] > 10

    (event,) = dep.tick(store=store)
    assert event.action == "rollback" and any(r.startswith("live_quality") for r in event.reasons), event
    assert get_deployment("churn", store=store).stable_version == 1


def test_without_labels_quality_is_no_data(served) -> None:  # type: ignore[no-untyped-def]
    store, _, rollout = served
    assert labelled_by_arm(store, "churn", rollout.rollout_id) == {}
    assert dep.tick(store=store) == []  # too few requests to judge, and no labels: hold
    d = get_deployment("churn", store=store)
    (check,) = [c for c in d.verdict["checks"] if c["metric"] == "live_quality"]
    assert check["status"] == "no_data"


def test_each_tick_reads_only_the_files_that_appeared_since_the_last(served) -> None:  # type: ignore[no-untyped-def]
    store, url, rollout = served
    arms: dict[str, str] = {}

    def predict(n: int) -> list[dict[str, object]]:
        labels = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for x in np.linspace(0.1, 0.7, n).round(3):  # stable is right on all of these, candidate wrong
                r = client.post("/v1/models/churn/predict", json={"records": [{"x": float(x)}]})
                arms[r.headers["shipway-request-id"]] = r.headers["shipway-arm"]
                labels.append({"request_id": r.headers["shipway-request-id"], "label": 1})
        time.sleep(1.0)  # the prediction log's flush
        return labels

    record_feedback("churn", predict(60), store=store)
    first = labelled_by_arm(store, "churn", rollout.rollout_id)
    assert sum(n for n, _ in first.values()) == 60
    # The files already read are remembered: deleting them from the store changes nothing ...
    backend = store.blobs.backend
    for key in [*backend.list("predictions/"), *backend.list("feedback/")]:
        backend.delete(key)
    assert labelled_by_arm(store, "churn", rollout.rollout_id) == first
    # ... and new files are read: more answers, their labels, and a corrected label for one of them.
    more = predict(40)
    record_feedback("churn", more, store=store)
    record_feedback("churn", [{**more[0], "label": 0}], store=store)
    second = labelled_by_arm(store, "churn", rollout.rollout_id)
    answered = Counter(arms.values())
    assert {arm: n for arm, (n, _) in second.items()} == dict(answered)
    flipped = arms[str(more[0]["request_id"])]  # its answer is now right on candidate, wrong on stable
    assert second["candidate"][1] == answered["candidate"] - (flipped == "candidate")
    assert second["stable"][1] == (flipped == "stable")
