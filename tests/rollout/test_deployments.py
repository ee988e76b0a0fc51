"""Deployments and the rollout controller on a real store (SQLite and PostgreSQL).

Traffic is fed in as the per-arm windows serving workers write (``record_window``), so each test
decides exactly what the controller sees; the serving tests drive real requests.
"""

from __future__ import annotations

import http.server
import json
import random
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from sklearn.dummy import DummyClassifier

import shipway
from shipway import governance
from shipway.core.errors import Conflict, InvalidInput, NotFound
from shipway.governance import audit
from shipway.rollout import deployments as dep
from shipway.rollout.analysis import ArmWindow
from shipway.rollout.deployments import RolloutConfig
from shipway.store import Store


def _versions(store: Store, n: int = 2) -> None:
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for _ in range(n):
        shipway.register_model(model, name="churn", store=store)


def _promote(store: Store, version: int) -> None:
    assert governance.promote("churn", version, "prod", store=store).status == "completed"


def _traffic(n: int, error_rate: float, seed: int, latency: float = 4.0) -> ArmWindow:
    rng = random.Random(seed)
    window = ArmWindow()
    for _ in range(n):
        error = rng.random() < error_rate
        window.record(rng.expovariate(1 / latency), error=error, prediction=int(rng.random() < 0.3), rng=rng)
    return window


def _feed(store: Store, d: dep.Deployment, stable: ArmWindow | None, candidate: ArmWindow | None) -> None:
    assert d.rollout_id is not None
    for arm, window in (("stable", stable), ("candidate", candidate)):
        if window is not None:
            # Two workers share the traffic: the controller must add them up.
            half = ArmWindow(requests=window.requests // 2, errors=window.errors // 2)
            dep.record_window(store, d.rollout_id, d.step, arm, "worker-a", half)
            rest = ArmWindow(
                requests=window.requests - half.requests,
                errors=window.errors - half.errors,
                latency=window.latency,
                classes=window.classes,
            )
            dep.record_window(store, d.rollout_id, d.step, arm, "worker-b", rest)


@pytest.fixture
def deployed(store: Store) -> Store:
    _versions(store)
    _promote(store, 1)
    first = dep.deploy("churn", "prod", store=store)
    assert (first.stable_version, first.status, first.arms) == (1, "idle", [dep.Arm(1, 100.0, "stable")])
    _promote(store, 2)
    return store


def _canary(store: Store, **overrides: object) -> dep.Deployment:
    config = RolloutConfig(steps=(10, 50, 100), step_duration_ms=0, min_requests=200, **overrides)  # type: ignore[arg-type]
    return dep.deploy("churn", "prod", config=config, store=store)


def test_a_good_candidate_reaches_all_traffic(deployed: Store) -> None:
    store = deployed
    d = _canary(store)
    assert d.status == "progressing" and [(a.version, a.weight) for a in d.arms] == [(1, 90.0), (2, 10.0)]
    weights = []
    for step in range(3):
        d = dep.get_deployment("churn", store=store)
        weights.append(d.arms[-1].weight)
        _feed(store, d, _traffic(1500, 0.01, step), _traffic(1500, 0.01, 100 + step) if step < 2 else None)
        if step == 2:  # at 100 % only the candidate answers
            _feed(store, d, None, _traffic(1500, 0.01, 200))
        events = dep.tick(store=store)
        assert [e.action for e in events] == (["promote"] if step < 2 else ["succeeded"]), events
    final = dep.get_deployment("churn", store=store)
    assert weights == [10.0, 50.0, 100.0]
    assert (final.stable_version, final.candidate_version, final.status) == (2, None, "idle")
    assert final.arms == [dep.Arm(2, 100.0, "stable")]
    (latest, *_) = dep.history("churn", store=store)
    assert (latest["outcome"], latest["from_version"], latest["to_version"]) == ("succeeded", 1, 2)
    actions = [e.action for e in audit.entries(subject="deployment/churn/prod", store=store)]
    assert actions == [
        "deployment.created",
        "rollout.started",
        "rollout.step",
        "rollout.step",
        "rollout.succeeded",
    ]


def test_a_failing_candidate_is_rolled_back_within_one_step(deployed: Store) -> None:
    store = deployed
    d = _canary(store)
    _feed(store, d, _traffic(1800, 0.005, 1), _traffic(200, 0.05, 2))  # raises on 5 % of inputs
    (event,) = dep.tick(store=store)
    assert event.action == "rollback" and any("error_rate" in r for r in event.reasons)
    d = dep.get_deployment("churn", store=store)
    assert (d.stable_version, d.candidate_version, d.status) == (1, None, "idle")
    assert d.arms == [dep.Arm(1, 100.0, "stable")], "all traffic is back on stable"
    assert shipway.registry.get_version("churn", alias="prod", store=store).version == 2, (
        "governance untouched"
    )
    (entry,) = audit.entries(subject="deployment/churn/prod", action="rollout.rolled_back", store=store)
    assert "error_rate" in " ".join(entry.payload["reasons"])


def test_too_little_traffic_holds_and_records_the_verdict(deployed: Store) -> None:
    store = deployed
    d = _canary(store)
    _feed(store, d, _traffic(50, 0.5, 1), _traffic(50, 0.5, 2))
    assert dep.tick(store=store) == []
    held = dep.get_deployment("churn", store=store)
    assert held.status == "progressing" and held.step == 0
    assert held.verdict is not None and held.verdict["action"] == "hold"


def test_the_failure_limit_tolerates_that_many_failed_analyses(deployed: Store) -> None:
    store = deployed
    d = _canary(store, failure_limit=1)
    _feed(store, d, _traffic(1800, 0.005, 1), _traffic(300, 0.08, 2))
    assert dep.tick(store=store) == []
    assert dep.get_deployment("churn", store=store).failures == 1
    (event,) = dep.tick(store=store)
    assert event.action == "rollback"


def test_a_step_lasts_at_least_its_duration(deployed: Store) -> None:
    store = deployed
    config = RolloutConfig(steps=(50, 100), step_duration_ms=3_600_000, min_requests=100)
    d = dep.deploy("churn", "prod", config=config, store=store)
    _feed(store, d, _traffic(1000, 0.0, 1), _traffic(1000, 0.0, 2))
    assert dep.tick(store=store) == [], "the analysis passes but the hour is not over"
    assert [e.action for e in dep.tick(now=(d.step_started_at or 0) + 3_600_001, store=store)] == ["promote"]


def test_the_controller_carries_on_after_a_restart(deployed: Store, store_uri: str) -> None:
    store = deployed
    d = _canary(store)
    _feed(store, d, _traffic(1500, 0.0, 1), _traffic(1500, 0.0, 2))
    assert [e.action for e in dep.tick(store=store)] == ["promote"]
    # A new process: a fresh Store on the same database sees the rollout at its second step.
    fresh = Store(store.settings)
    try:
        d = dep.get_deployment("churn", store=fresh)
        assert (d.step, d.arms[-1].weight) == (1, 50.0)
        _feed(fresh, d, _traffic(1500, 0.0, 3), _traffic(1500, 0.0, 4))
        assert [e.action for e in dep.tick(store=fresh)] == ["promote"]
    finally:
        fresh.close()


def test_people_can_pause_resume_promote_and_abort(deployed: Store) -> None:
    store = deployed
    _canary(store)
    paused = dep.pause_rollout("churn", store=store)
    assert paused.status == "paused" and paused.arms[-1].weight == 10.0
    d = dep.get_deployment("churn", store=store)
    _feed(store, d, _traffic(1500, 0.0, 1), _traffic(1500, 0.0, 2))
    assert dep.tick(store=store) == [], "a paused rollout does not move"
    assert dep.pause_rollout("churn", resume=True, store=store).status == "progressing"
    done = dep.promote_rollout("churn", store=store)
    assert (done.stable_version, done.status) == (2, "idle")
    with pytest.raises(Conflict, match="no rollout in progress"):
        dep.abort_rollout("churn", store=store)
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="churn", store=store)
    _promote(store, 3)
    _canary(store)
    aborted = dep.abort_rollout("churn", reason="latency looks off", store=store)
    assert (aborted.stable_version, aborted.status) == (2, "idle")
    (entry,) = audit.entries(subject="deployment/churn/prod", action="rollout.aborted", store=store)
    assert "latency looks off" in entry.payload["reasons"][0]


def test_strategies_route_as_documented(deployed: Store) -> None:
    store = deployed
    ab = dep.deploy(
        "churn", "prod", config=RolloutConfig(strategy="ab", split=30, sticky_key="customer_id"), store=store
    )
    assert [(a.version, a.weight) for a in ab.arms] == [(1, 70.0), (2, 30.0)]
    assert ab.config is not None and ab.config.sticky_key == "customer_id"
    _feed(store, ab, _traffic(3000, 0.0, 1), _traffic(3000, 0.0, 2))
    assert dep.tick(store=store) == [], "an A/B test ends only by a person's decision"
    dep.abort_rollout("churn", store=store)
    shadow = dep.deploy("churn", "prod", config=RolloutConfig(strategy="shadow", mirror=25), store=store)
    assert shadow.arms == [dep.Arm(1, 100.0, "stable"), dep.Arm(2, 0.0, "candidate", shadow=25.0)]
    dep.abort_rollout("churn", store=store)
    config = RolloutConfig(strategy="blue-green", step_duration_ms=0, min_requests=100)
    bg = dep.deploy("churn", "prod", config=config, store=store)
    assert bg.arms == [dep.Arm(1, 100.0, "stable"), dep.Arm(2, 0.0, "candidate", shadow=100.0)]
    _feed(store, bg, _traffic(500, 0.0, 1), _traffic(500, 0.0, 2))
    assert [e.action for e in dep.tick(store=store)] == ["promote"]
    switched = dep.get_deployment("churn", store=store)
    assert switched.arms == [dep.Arm(1, 0.0, "stable"), dep.Arm(2, 100.0, "candidate")], "stable stays loaded"
    _feed(store, switched, None, _traffic(500, 0.2, 3))
    assert [e.action for e in dep.tick(store=store)] == ["rollback"]
    assert dep.get_deployment("churn", store=store).arms == [dep.Arm(1, 100.0, "stable")]


def test_bad_requests_are_refused_clearly(store: Store) -> None:
    _versions(store, 1)
    with pytest.raises(NotFound, match="no alias 'prod'"):
        dep.deploy("churn", "prod", store=store)
    _promote(store, 1)
    dep.deploy("churn", "prod", store=store)
    with pytest.raises(Conflict, match="already serves v1"):
        dep.deploy("churn", "prod", store=store)
    with pytest.raises(InvalidInput, match="rise strictly"):
        dep.deploy("churn", "prod", config=RolloutConfig(steps=(50, 20)), store=store)
    with pytest.raises(InvalidInput, match="not one of"):
        dep.deploy("churn", "prod", config=RolloutConfig(strategy="yolo"), store=store)
    with pytest.raises(NotFound, match="not deployed to 'staging'"):
        dep.get_deployment("churn", "staging", store=store)


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received.clear()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def test_a_rollback_is_sent_to_webhooks(deployed: Store, webhook: str) -> None:
    store = deployed
    d = _canary(store, webhooks=(webhook,))
    _feed(store, d, _traffic(1800, 0.005, 1), _traffic(300, 0.1, 2))
    dep.tick(store=store)
    deadline = threading.Event()
    for _ in range(100):
        if _Hook.received:
            break
        deadline.wait(0.05)
    (message,) = _Hook.received
    assert message["outcome"] == "rolled_back" and message["to"] == 2
    assert "error_rate" in str(message["text"])
