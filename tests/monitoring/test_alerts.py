"""Alert rules and the monitor, on a real store (SQLite and PostgreSQL) with a controlled clock.

Traffic is fed in as the per-minute counters serving workers save, so each test decides exactly
what the monitor sees at each instant; webhooks are a real HTTP server on loopback.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from sklearn.dummy import DummyClassifier

import shipway
from shipway.core.actor import Actor, acting_as
from shipway.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound, PermissionDenied
from shipway.governance import audit, webhooks
from shipway.monitoring.alerts import (
    ACTIONS,
    ack_alert,
    add_rule,
    delete_rule,
    get_alert,
    list_alerts,
    list_rules,
    register_action,
    silence,
)
from shipway.monitoring.loop import Monitor
from shipway.monitoring.slo import set_slo
from shipway.monitoring.traffic import MINUTE_MS, Counts, record_traffic
from shipway.store import Store

T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS


class Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    fail_first: ClassVar[int] = 0
    status: ClassVar[int] = 503
    calls: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).calls += 1
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(type(self).status)
            self.end_headers()
            return
        self.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hook.received, Hook.fail_first, Hook.calls = [], 0, 0
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def messages(count: int | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """What the webhook received, once deliveries in flight are done."""
    assert webhooks.drain(timeout)
    if count is not None:
        deadline = time.monotonic() + timeout
        while len(Hook.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
    return list(Hook.received)


@pytest.fixture
def registered(store: Store) -> Store:
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="churn", store=store)
    return store


def traffic(
    store: Store, minute: int, requests: int, errors: int, worker: str = "w1", environment: str = "prod"
) -> None:
    """``requests`` answered in 3 ms in minute ``minute`` (after T0) in ``environment``, ``errors``
    of them 5xx."""
    counts = Counts()
    for i in range(requests):
        counts.record(0.003, error=i < errors)
    record_traffic(store, worker, {("churn", "1", T0 + minute * MINUTE_MS): counts}, environment=environment)


def at(minute: float) -> int:
    return T0 + int(minute * MINUTE_MS)


def test_rules_are_checked_when_added(registered: Store) -> None:
    store = registered
    rule = add_rule("churn", "error_rate", above=0.05, window="5m", for_="2m", store=store)
    assert (rule.name, rule.window_ms, rule.for_ms) == ("churn-error_rate-above-0.05", 300_000, 120_000)
    assert rule.describe() == "error_rate above 0.05 over 5m for 2m"
    with pytest.raises(AlreadyExists, match="--name"):
        add_rule("churn", "error_rate", above=0.05, store=store)
    with pytest.raises(InvalidInput, match="can watch: requests, error_rate"):
        add_rule("churn", "eror_rate", above=0.05, store=store)
    with pytest.raises(InvalidInput, match="exactly one threshold"):
        add_rule("churn", "error_rate", above=0.05, below=0.01, store=store)
    with pytest.raises(InvalidInput, match="between 1m and 30d"):
        add_rule("churn", "error_rate", above=0.05, window="30s", store=store)
    with pytest.raises(InvalidInput, match="not a duration"):
        add_rule("churn", "error_rate", above=0.05, window="5 minutes", store=store)
    with pytest.raises(InvalidInput, match=r"known actions: .*rollback"):
        add_rule("churn", "error_rate", above=0.1, actions=["page-bob"], store=store)
    with pytest.raises(InvalidInput, match="not an http"):
        add_rule("churn", "error_rate", above=0.1, webhooks=["file:///etc/passwd"], store=store)
    with pytest.raises(NotFound, match="No model named 'fraud'"):
        add_rule("fraud", "error_rate", above=0.1, store=store)
    with acting_as(Actor("vic", "viewer")), pytest.raises(PermissionDenied):
        add_rule("churn", "requests", below=1, store=store)
    assert [r.name for r in list_rules(store=store)] == ["churn-error_rate-above-0.05"]
    delete_rule("churn-error_rate-above-0.05", store=store)
    with pytest.raises(NotFound):
        delete_rule("churn-error_rate-above-0.05", store=store)
    assert [
        e.action for e in audit.entries(subject="alert-rule/churn-error_rate-above-0.05", store=store)
    ] == [
        "alert.rule_added",
        "alert.rule_deleted",
    ]


def test_an_alert_goes_pending_then_fires_once_then_resolves(registered: Store, hook: str) -> None:
    store = registered
    add_rule("churn", "error_rate", above=0.05, window="5m", for_="2m", webhooks=[hook], store=store)
    monitor = Monitor(store, webhook_backoff=0.05)
    for minute in range(3):
        traffic(store, minute, 100, 1)  # 1 % errors: fine
    assert monitor.evaluate_once(at(2.5)) == []
    for minute in range(3, 10):
        traffic(store, minute, 100, 20)  # 20 % errors
    (pending,) = monitor.evaluate_once(at(3.5))
    assert (pending.before, pending.after, pending.notify) == (None, "pending", None)
    assert monitor.evaluate_once(at(4.5)) == [], "pending for less than 2 minutes"
    (firing,) = monitor.evaluate_once(at(5.5))
    assert (firing.alert, firing.before, firing.after, firing.notify) == (
        pending.alert,
        "pending",
        "firing",
        "firing",
    )
    assert monitor.evaluate_once(at(6.5)) == [] and monitor.evaluate_once(at(7)) == [], "notified once"
    alert = get_alert(pending.alert[:8], store=store)
    assert (alert.state, alert.since) == ("firing", at(5.5))
    assert alert.value == pytest.approx(101 / 600), "the value as last evaluated (minutes 2-7)"
    (told,) = messages(1)
    assert told["status"] == "firing" and told["model"] == "churn" and told["alert"] == alert.id
    assert told["text"].startswith("[FIRING] churn") and "error_rate is 0.105" in told["text"]
    for minute in range(10, 20):
        traffic(store, minute, 100, 0)
    (resolved,) = monitor.evaluate_once(at(16.5))
    assert (resolved.before, resolved.after, resolved.notify) == ("firing", "resolved", "resolved")
    assert [m["status"] for m in messages(2)] == ["firing", "resolved"]
    assert list_alerts(state="resolved", store=store)[0].id == alert.id
    assert monitor.evaluate_once(at(17)) == [], "resolved alerts stay resolved"
    actions = [e.action for e in audit.entries(subject="alert/churn", store=store)]
    assert actions == ["alert.pending", "alert.firing", "alert.resolved"]
    assert audit.verify(store=store).ok


def test_a_pending_alert_that_clears_is_dropped_and_never_notified(registered: Store, hook: str) -> None:
    store = registered
    add_rule("churn", "error_rate", above=0.05, window="1m", for_="5m", webhooks=[hook], store=store)
    monitor = Monitor(store)
    traffic(store, 0, 100, 50)
    assert [t.after for t in monitor.evaluate_once(at(0.5))] == ["pending"]
    traffic(store, 2, 100, 0)
    (cleared,) = monitor.evaluate_once(at(2.5))
    assert (cleared.before, cleared.after) == ("pending", None)
    assert list_alerts(store=store) == [] and messages() == []
    assert [e.action for e in audit.entries(subject="alert/churn", store=store)] == [
        "alert.pending",
        "alert.cleared",
    ]


def test_no_data_never_fires_but_traffic_that_stopped_does(registered: Store) -> None:
    store = registered
    add_rule("churn", "error_rate", above=0.0, window="5m", store=store)
    add_rule("churn", "latency_p95_ms", above=0.0, window="5m", store=store)
    add_rule("churn", "requests", below=10, window="5m", store=store)
    moved = Monitor(store).evaluate_once(at(30))
    assert [(t.rule, t.after, t.value) for t in moved] == [("churn-requests-below-10", "firing", 0.0)]


def test_a_rule_reads_only_the_traffic_of_its_environment(registered: Store) -> None:
    store = registered
    add_rule("churn", "error_rate", above=0.05, window="5m", actions=["rollback"], name="prod", store=store)
    add_rule(
        "churn", "error_rate", above=0.05, window="5m", environment="staging", name="staging", store=store
    )
    traffic(store, 0, 100, 0)
    traffic(store, 0, 100, 60, environment="staging")  # a failing canary served by `--env staging`
    moved = Monitor(store).evaluate_once(at(0.5))
    assert [(t.rule, t.after, t.value) for t in moved] == [("staging", "firing", 0.6)]


def test_latency_rules_read_the_histogram(registered: Store) -> None:
    store = registered
    add_rule("churn", "latency_p95_ms", above=3.8, window="5m", store=store)  # 3 ms lands in (2, 4]
    traffic(store, 0, 100, 0)
    (t,) = Monitor(store).evaluate_once(at(0.5))
    assert t.after == "firing" and t.value == pytest.approx(3.9), "2 + (4 - 2) * 0.95, interpolated"


def test_acked_alerts_stop_reminding_but_resolving_is_still_told(registered: Store, hook: str) -> None:
    store = registered
    add_rule("churn", "error_rate", above=0.05, window="1m", webhooks=[hook], store=store)
    monitor = Monitor(store, repeat_ms=10 * MINUTE_MS)
    for minute in range(40):
        traffic(store, minute, 10, 5)
    (fired,) = monitor.evaluate_once(at(0.5))
    assert monitor.evaluate_once(at(5)) == []
    (reminder,) = monitor.evaluate_once(at(11))
    assert reminder.notify == "reminder" and reminder.after == "firing"
    with acting_as(Actor("vic", "viewer")), pytest.raises(PermissionDenied):
        ack_alert(fired.alert, store=store)
    acked = ack_alert(fired.alert, store=store)
    assert acked.state == "firing" and acked.acked_by is not None
    assert ack_alert(fired.alert, store=store).acked_at == acked.acked_at, "acking twice changes nothing"
    assert monitor.evaluate_once(at(25)) == [], "acked: no more reminders"
    traffic(store, 40, 10, 0)
    traffic(store, 41, 10, 0)
    (resolved,) = monitor.evaluate_once(at(41.5))  # the 1 m window holds minutes 40 and 41
    assert resolved.notify == "resolved"
    # Each is delivered by its own background thread, so they may arrive in any order.
    by_status = {m["status"]: m for m in messages(3)}
    assert len(messages()) == 3 and set(by_status) == {"firing", "reminder", "resolved"}
    assert by_status["reminder"]["text"].startswith("[STILL FIRING]")
    with pytest.raises(Conflict, match="resolved"):
        ack_alert(fired.alert, store=store)
    with pytest.raises(NotFound):
        ack_alert("abcdef12", store=store)
    with pytest.raises(InvalidInput, match="hex"):
        ack_alert("../x", store=store)


def test_silenced_alerts_change_state_but_tell_nobody_until_the_silence_ends(
    registered: Store, hook: str
) -> None:
    store = registered
    add_rule("churn", "error_rate", above=0.05, window="1m", webhooks=[hook], store=store)
    called = []
    register_action("record-for-test", lambda alert, rule: called.append(alert.id))
    try:
        add_rule(
            "churn",
            "requests",
            above=1,
            window="1m",
            name="busy",
            webhooks=[hook],
            actions=["record-for-test"],
            store=store,
        )
        quiet = silence("churn", "2h", reason="maintenance", store=store)
        with pytest.raises(NotFound, match="no alert rule named 'nope'"):
            silence("churn", "1h", rule="nope", store=store)
        with pytest.raises(NotFound, match="no alert rule named 'slo:avail:page'"):
            silence("churn", "1h", rule="slo:avail:page", store=store)
        assert silence("churn", "1m", rule="slo:latency:ticket", store=store).rule == "slo:latency:ticket"
        monitor = Monitor(store)
        for minute in range(4):
            traffic(store, minute, 10, 5)
        moved = monitor.evaluate_once(at(0.5))
        assert {(t.rule, t.after, t.notify) for t in moved} == {
            ("churn-error_rate-above-0.05", "firing", None),
            ("busy", "firing", None),
        }
        assert all(a.silenced for a in list_alerts(store=store))
        assert monitor.drain() and messages() == [] and called == []
        # The silence ends while both still fire: they are told (and act) then, once.
        later = quiet.until + 1
        for minute in range(4):
            traffic(store, (later - T0) // MINUTE_MS - minute, 10, 5)
        moved = monitor.evaluate_once(later)
        assert {(t.rule, t.notify) for t in moved} == {
            ("churn-error_rate-above-0.05", "firing"),
            ("busy", "firing"),
        }
        assert monitor.evaluate_once(later + 1000) == []
        assert monitor.drain() and len(called) == 1
        assert sorted(m["rule"] for m in messages(2)) == ["busy", "churn-error_rate-above-0.05"]
        outcome = [e for e in audit.entries(action="alert.action", store=store)]
        assert [(e.payload["action"], e.payload["ok"]) for e in outcome] == [("record-for-test", True)]
    finally:
        ACTIONS.pop("record-for-test", None)


def test_webhooks_are_retried_with_backoff_and_not_when_refused(hook: str) -> None:
    Hook.fail_first, Hook.status = 2, 503
    done: list[webhooks.Delivery] = []
    started = time.monotonic()
    webhooks.post_json(hook, {"text": "hello"}, backoff=0.1, on_done=done.append)
    assert messages(1) == [{"text": "hello"}]
    assert done[0].ok and done[0].attempts == 3 and time.monotonic() - started >= 0.3  # 0.1 + 0.2
    Hook.fail_first, Hook.status, Hook.calls = 5, 400, 0
    webhooks.post_json(hook, {"text": "bad"}, backoff=0.01, on_done=done.append)
    assert webhooks.drain() and Hook.calls == 1 and done[1].status == 400 and not done[1].ok
    with pytest.raises(InvalidInput):
        webhooks.post_json("gopher://x", {})


def test_a_busy_webhook_never_holds_up_an_evaluation(registered: Store) -> None:
    import socket

    store = registered
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections and never answers: every POST waits for its timeout
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        add_rule("churn", "requests", below=10, window="5m", webhooks=[url], store=store)
        started = time.monotonic()
        (t,) = Monitor(store, webhook_attempts=1).evaluate_once(at(10))
        assert t.notify == "firing" and time.monotonic() - started < 2.0
    finally:
        listener.close()
    assert webhooks.drain(), "the delivery ends once the connection does"


def test_two_monitors_on_one_store_never_fire_twice(registered: Store, store_uri: str, hook: str) -> None:
    from shipway.core.config import Settings

    store = registered
    add_rule("churn", "error_rate", above=0.05, window="1m", for_="1m", webhooks=[hook], store=store)
    set_slo("churn", availability=99.0, webhooks=[hook], store=store)
    for minute in range(20):
        traffic(store, minute, 100, 30)
    stores = [Store(Settings.resolve()) for _ in range(2)]
    monitors = [Monitor(s) for s in stores]
    moves: list[Any] = []
    barrier = threading.Barrier(2)

    def run(monitor: Monitor) -> None:
        for tick in range(6):
            barrier.wait()
            moves.extend(monitor.evaluate_once(at(1 + tick * 0.5)))

    threads = [threading.Thread(target=run, args=(m,)) for m in monitors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    firing = [m for m in moves if m.after == "firing" and m.before != "firing"]
    assert sorted(m.rule for m in firing) == [
        "churn-error_rate-above-0.05",
        "slo:availability:page",
        "slo:availability:ticket",
    ]
    assert sorted(m["rule"] for m in messages(3)) == sorted(m.rule for m in firing)
    time.sleep(0.3)
    assert len(Hook.received) == 3, "each alert notified once, by the monitor that moved it"
    fired = [e for e in audit.entries(action="alert.firing", store=store)]
    assert len(fired) == 3
    assert len(list_alerts(state="firing", store=store)) == 3


def test_drift_and_quality_rules_read_the_prediction_log(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    from shipway.monitoring import record_feedback
    from shipway.store import get_store

    store = get_store()
    add_rule("churn", "drift_share", above=0.2, window="1h", store=store)
    add_rule("churn", "accuracy", below=0.9, window="1h", store=store)
    add_rule(
        "churn",
        "drifted_columns",
        above=0,
        window="1h",
        environment="staging",
        name="staging-drift",
        store=store,
    )
    monitor = Monitor(store)
    assert monitor.evaluate_once() == [], "nothing logged yet: no data, no alert"
    served = serve(("churn", "models:/churn@prod"))
    frame = customers(1_000, 5, shift=0.5)  # charges drift
    ids = served.predict(frame)
    served.flush()
    # Labels that are the truth on every other row and wrong on the rest: accuracy near a half.
    truth = ((frame["tenure"] < 20) & (frame["charges"] > 60)).astype(int).to_numpy()
    record_feedback(
        "churn",
        [
            {"request_id": ids[k // 100], "row": k % 100, "label": int(truth[k]) ^ (k % 2)}
            for k in range(len(frame))
        ],
        store=store,
    )
    moved = {t.rule: t for t in monitor.evaluate_once()}
    assert moved["churn-drift_share-above-0.2"].value == pytest.approx(1 / 3)
    assert moved["churn-accuracy-below-0.9"].value == pytest.approx(0.5, abs=0.1)
    assert set(moved) == {"churn-drift_share-above-0.2", "churn-accuracy-below-0.9"}
    assert "staging" in monitor.errors["staging-drift"], "a rule on an alias that does not exist says so"


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A metric rules can watch whose value the test sets: ``value`` (or an exception to raise), as
    it was when the measurement began, and ``during``, called while a monitor measures it (to
    change the store in the meantime)."""
    from shipway.monitoring.signals import METRICS, Metric

    state: dict[str, Any] = {"value": 1.0, "during": None}

    def read(store: Store, rule: Any, now: int) -> float | None:
        value = state["value"]
        if state["during"] is not None:
            state["during"]()
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setitem(METRICS, "test_value", Metric("test_value", "traffic", "set by the test", read))
    return state


def test_a_rule_that_breaks_leaves_the_other_rules_and_slos_evaluated(
    registered: Store, measured: dict[str, Any]
) -> None:
    store = registered
    add_rule("churn", "test_value", above=0.5, window="1m", name="broken", store=store)
    add_rule("churn", "error_rate", above=0.05, window="1m", store=store)
    set_slo("churn", availability=99.0, store=store)
    traffic(store, 0, 100, 30)
    measured["value"] = IndexError("boolean index did not match")  # a bug in a measurement
    monitor = Monitor(store)
    moved = monitor.evaluate_once(at(0.5))
    assert {t.rule for t in moved} == {
        "churn-error_rate-above-0.05",
        "slo:availability:page",
        "slo:availability:ticket",
    }
    assert monitor.errors == {"broken": "IndexError: boolean index did not match"}
    measured["value"] = 1.0
    assert [t.rule for t in monitor.evaluate_once(at(0.6))] == ["broken"] and monitor.errors == {}


def test_a_rule_deleted_while_it_was_measured_never_reopens_its_alert(
    registered: Store, measured: dict[str, Any]
) -> None:
    store = registered
    add_rule("churn", "test_value", above=0.5, window="1m", name="gone", store=store)
    monitor = Monitor(store)
    assert [t.after for t in monitor.evaluate_once(at(1))] == ["firing"]
    measured["during"] = lambda: delete_rule("gone", store=store)
    assert monitor.evaluate_once(at(2)) == []
    assert [a.state for a in list_alerts(store=store)] == ["resolved"]
    assert [e.action for e in audit.entries(subject="alert/churn/gone", store=store)] == [
        "alert.firing",
        "alert.resolved",
    ]


def test_an_older_observation_never_reopens_an_alert_another_monitor_resolved(
    registered: Store, measured: dict[str, Any]
) -> None:
    from shipway.core.config import Settings

    store = registered
    add_rule("churn", "test_value", above=0.5, window="1m", name="flaky", store=store)
    assert [t.after for t in Monitor(store).evaluate_once(at(1))] == ["firing"]
    # Monitor A measures the value high, then waits while monitor B measures it low and resolves
    # the alert; A's observation is then older than the alert's last change.
    slow, fast = Store(Settings.resolve()), Store(Settings.resolve())
    a_measured, b_done = threading.Event(), threading.Event()
    a_moved: list[Any] = []

    def pause_a() -> None:
        if threading.current_thread().name == "monitor-a":
            measured["value"] = 0.0
            a_measured.set()
            assert b_done.wait(30)

    measured["during"] = pause_a
    a = threading.Thread(target=lambda: a_moved.extend(Monitor(slow).evaluate_once(at(2))), name="monitor-a")
    a.start()
    try:
        assert a_measured.wait(30)
        (resolved,) = Monitor(fast).evaluate_once(at(2.5))
        assert resolved.after == "resolved"
    finally:
        b_done.set()
        a.join(30)
        slow.close()
        fast.close()
    assert a_moved == [], "A's observation was older than the resolve"
    assert [a.state for a in list_alerts(store=store)] == ["resolved"]


def test_webhook_urls_are_secrets_kept_out_of_logs_and_the_audit_log(
    registered: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from shipway.rollout import RolloutConfig, deploy

    store = registered
    secret = "http://127.0.0.1:9/services/T000/B000/XXXXsecretXXXX"  # nothing listens on port 9
    add_rule("churn", "error_rate", above=0.05, webhooks=[secret], store=store)
    set_slo("churn", availability=99.0, webhooks=[secret, secret + "2"], store=store)
    shipway.set_alias("churn", "prod", 1)
    deploy("churn", "prod", config=RolloutConfig(webhooks=(secret,)), store=store)
    (added,) = audit.entries(action="alert.rule_added", store=store)
    (slo,) = audit.entries(action="slo.set", store=store)
    (deployed,) = audit.entries(action="deployment.created", store=store)
    assert (added.payload["webhooks"], slo.payload["webhooks"]) == (1, 2)
    assert deployed.payload["config"]["webhooks"] == 1
    for entry in audit.entries(store=store):
        assert "secret" not in json.dumps(entry.payload), entry.action

    with caplog.at_level("WARNING", logger="shipway.webhooks"):
        webhooks.post_json(secret, {"text": "hello"}, attempts=1)
        assert webhooks.drain()
    (failed,) = [r.getMessage() for r in caplog.records if r.name == "shipway.webhooks"]
    assert "http://127.0.0.1:9" in failed and "secret" not in failed and "services" not in failed
