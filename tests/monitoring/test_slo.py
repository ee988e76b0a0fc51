"""SLOs: objectives, error budgets, and the SRE workbook's multi-window multi-burn-rate alerts."""

from __future__ import annotations

import pytest
from sklearn.dummy import DummyClassifier

import shipway
from shipway.core.actor import Actor, acting_as
from shipway.core.errors import InvalidInput, NotFound, PermissionDenied
from shipway.core.latency import LATENCY_BUCKETS
from shipway.governance import audit
from shipway.monitoring.slo import (
    burn_alerts,
    delete_slo,
    get_slo,
    list_slos,
    set_slo,
    slo_status,
    slo_totals,
)
from shipway.monitoring.traffic import MINUTE_MS, Counts, record_traffic
from shipway.store import Store

NOW = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS + 30_000  # half a minute into a minute


@pytest.fixture
def churn(store: Store) -> Store:
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="churn", store=store)
    return store


def feed(
    store: Store,
    *,
    minutes: int,
    per_minute: int,
    bad: float,
    ago: int = 0,
    slow_ms: float = 200.0,
    latency_bad: float | None = None,
    worker: str = "w1",
    environment: str = "prod",
) -> None:
    """``per_minute`` requests in each of ``minutes`` minutes ending ``ago`` minutes before NOW, a
    ``bad`` share failing with a 5xx and a ``latency_bad`` share (default: ``bad``) slower than
    ``slow_ms``; the rest answer in 3 ms."""
    rows = {}
    latency_bad = bad if latency_bad is None else latency_bad
    last = NOW - NOW % MINUTE_MS - ago * MINUTE_MS
    errors, slow = round(per_minute * bad), round(per_minute * latency_bad)
    latency = [(per_minute - slow) * (b >= 0.003) + slow * (slow_ms / 1000 <= b) for b in LATENCY_BUCKETS]
    for m in range(minutes):
        rows[("churn", "1", last - m * MINUTE_MS)] = Counts(per_minute, errors, list(latency))
    record_traffic(store, worker, rows, environment=environment)


def active(store: Store) -> set[str]:
    slo = get_slo("churn", store=store)
    return {a.rule for a in burn_alerts(slo, slo_totals(slo, now=NOW, store=store)) if a.active}


def test_setting_an_slo_checks_its_objectives(churn: Store) -> None:
    store = churn
    slo = set_slo("churn", availability=99.9, latency_ms=50, store=store)
    assert (slo.availability, slo.latency_ms, slo.latency_share) == (pytest.approx(0.999), 64.0, 0.95)
    assert slo.describe("latency") == "95% of requests within 64 ms", "50 ms is not a bound: the nearest"
    assert set_slo("churn", latency_ms=32, latency_percentile=99, store=store).latency_ms == 32.0
    assert get_slo("churn", store=store).availability is None, "set replaces the whole SLO"
    with pytest.raises(InvalidInput, match="reads as a fraction"):
        set_slo("churn", availability=0.999, store=store)
    with pytest.raises(InvalidInput, match="between 0 and 100"):
        set_slo("churn", availability=100, store=store)
    with pytest.raises(InvalidInput, match="needs an objective"):
        set_slo("churn", store=store)
    with pytest.raises(InvalidInput, match="not an http"):
        set_slo("churn", availability=99, webhooks=["ftp://x"], store=store)
    with pytest.raises(NotFound, match="No model named 'fraud'"):
        set_slo("fraud", availability=99, store=store)
    with acting_as(Actor("vic", "viewer")), pytest.raises(PermissionDenied):
        set_slo("churn", availability=99, store=store)
    assert [s.model for s in list_slos(store=store)] == ["churn"]
    delete_slo("churn", store=store)
    with pytest.raises(NotFound, match="shipway slo set churn"):
        get_slo("churn", store=store)
    actions = [e.action for e in audit.entries(subject="slo/churn", store=store)]
    assert actions == ["slo.set", "slo.set", "slo.deleted"]


def test_an_slo_counts_only_the_traffic_of_its_environment(churn: Store) -> None:
    store = churn
    assert set_slo("churn", availability=99.9, store=store).environment == "prod"
    feed(store, minutes=60, per_minute=1000, bad=0.0)
    feed(store, minutes=60, per_minute=1000, bad=0.5, environment="staging")
    status = slo_status("churn", now=NOW, store=store)
    assert status["environment"] == "prod" and status["objectives"][0]["bad_30d"] == 0
    assert status["objectives"][0]["budget_left"] == 1.0 and active(store) == set()
    assert set_slo("churn", availability=99.9, environment="staging", store=store).environment == "staging"
    assert get_slo("churn", store=store).environment == "staging"
    assert slo_status("churn", now=NOW, store=store)["objectives"][0]["bad_30d"] == 30_000
    assert active(store) == {"slo:availability:page", "slo:availability:ticket"}
    with pytest.raises(InvalidInput, match="Environment 'pr od' is not allowed"):
        set_slo("churn", availability=99.9, environment="pr od", store=store)


def test_a_fast_burn_pages(churn: Store) -> None:
    store = churn
    set_slo("churn", availability=99.9, store=store)
    feed(store, minutes=3 * 24 * 60, per_minute=1000, bad=0.0, worker="base")  # three clean days
    # The last hour, 3 % errors on twice the traffic: 2 % of all requests, a burn rate of 20.
    feed(store, minutes=60, per_minute=2000, bad=0.03)
    rates = slo_status("churn", now=NOW, store=store)["objectives"][0]["burn_rates"]
    # (a window holds every minute it overlaps: 61 for an hour, 6 for 5 minutes)
    assert rates["1h"] == pytest.approx(19.9, abs=0.1) and rates["5m"] == pytest.approx(20)
    assert rates["3d"] < 1
    assert active(store) == {"slo:availability:page"}, "an hour is not yet three days of burning"


def test_a_slow_burn_does_not_page_but_opens_a_ticket(churn: Store) -> None:
    store = churn
    set_slo("churn", availability=99.9, store=store)
    # 0.3 % errors for three days: burn rate 3, under 6 and 14.4, over 1.
    feed(store, minutes=3 * 24 * 60, per_minute=1000, bad=0.003)
    status = slo_status("churn", now=NOW, store=store)["objectives"][0]
    assert status["burn_rates"]["1h"] == pytest.approx(3.0) and status["burn_rates"]["3d"] == pytest.approx(
        3.0
    )
    assert (status["page"], status["ticket"]) == (False, True)
    assert active(store) == {"slo:availability:ticket"}


def test_the_six_hour_window_pages_at_six(churn: Store) -> None:
    store = churn
    set_slo("churn", availability=99.9, store=store)
    feed(store, minutes=6 * 60, per_minute=1000, bad=0.008)  # burn 8: over 6, under 14.4
    rates = slo_status("churn", now=NOW, store=store)["objectives"][0]["burn_rates"]
    assert rates["1h"] == pytest.approx(8) and rates["6h"] == pytest.approx(8)
    # The only traffic in three days is these six hours, so the 3 d ratio is theirs: a ticket too.
    assert active(store) == {"slo:availability:page", "slo:availability:ticket"}


def test_the_short_windows_end_a_page_soon_after_the_burn_stops(churn: Store) -> None:
    store = churn
    set_slo("churn", availability=99.9, store=store)
    feed(store, minutes=20, per_minute=500, bad=0.05, ago=35)  # a bad spell that ended 35 minutes ago
    feed(store, minutes=35, per_minute=500, bad=0.0, worker="w2")  # clean since
    rates = slo_status("churn", now=NOW, store=store)["objectives"][0]["burn_rates"]
    assert rates["1h"] > 14.4 and rates["6h"] > 6 and rates["5m"] == rates["30m"] == 0.0
    # No page (the budget no longer burns), but the budget it spent still opens a ticket.
    assert active(store) == {"slo:availability:ticket"}


def test_no_data_in_a_window_never_fires(churn: Store) -> None:
    store = churn
    set_slo("churn", availability=99.9, store=store)
    feed(store, minutes=50, per_minute=500, bad=0.5, ago=7 * 60)  # a disaster, then no traffic for 7 h
    status = slo_status("churn", now=NOW, store=store)["objectives"][0]
    assert status["burn_rates"]["3d"] == pytest.approx(500)
    assert [status["burn_rates"][w] for w in ("5m", "30m", "1h", "6h")] == [None] * 4
    assert (status["page"], status["ticket"]) == (False, False)


def test_latency_objectives_count_requests_slower_than_the_bound(churn: Store) -> None:
    store = churn
    set_slo("churn", latency_ms=64, latency_percentile=95, store=store)
    # 80 % of requests slower than 64 ms, none failing: burn (0.8) / 0.05 = 16 > 14.4.
    feed(store, minutes=60, per_minute=100, bad=0.0, latency_bad=0.8, slow_ms=100)
    status = slo_status("churn", now=NOW, store=store)["objectives"]
    assert [o["objective"] for o in status] == ["latency"]
    assert status[0]["burn_rates"]["1h"] == pytest.approx(16.0) and status[0]["page"]
    # A request exactly at the bound is within it (the le bucket is inclusive).
    set_slo("churn", latency_ms=128, store=store)
    assert slo_status("churn", now=NOW, store=store)["objectives"][0]["burn_rates"]["1h"] == 0.0


def test_the_budget_left_is_over_thirty_days(churn: Store) -> None:
    store = churn
    set_slo("churn", availability=99.0, store=store)
    feed(store, minutes=600, per_minute=1000, bad=0.005, ago=60 * 24 * 20)  # 20 days ago: half the budget
    feed(store, minutes=600, per_minute=100, bad=0.0, ago=60 * 24 * 35, worker="old")  # beyond 30 days
    status = slo_status("churn", now=NOW, store=store)["objectives"][0]
    assert status["requests_30d"] == 600_000 and status["bad_30d"] == 3000
    assert status["budget_left"] == pytest.approx(0.5)
    assert status["burn_rates"] == {"5m": None, "30m": None, "1h": None, "6h": None, "3d": None}
    set_slo("churn", availability=99.0, store=store)
    delete_slo("churn", store=store)
    set_slo("churn", availability=99.0, store=store)
    assert slo_status("churn", now=NOW - 40 * 86_400_000, store=store)["objectives"][0]["budget_left"] is None


def test_an_objective_dropped_from_the_slo_closes_its_alerts(churn: Store) -> None:
    from shipway.monitoring.alerts import list_alerts
    from shipway.monitoring.loop import Monitor

    store = churn
    set_slo("churn", availability=99.9, latency_ms=64, store=store)
    feed(store, minutes=60, per_minute=100, bad=0.0, latency_bad=0.8, slow_ms=100)  # latency burns at 16
    monitor = Monitor(store)
    latency = {"slo:latency:page", "slo:latency:ticket"}  # (the only traffic in three days: a ticket too)
    assert {t.rule for t in monitor.evaluate_once(NOW)} == latency
    set_slo("churn", availability=99.9, store=store)  # the latency objective is dropped
    assert list_alerts(state="firing", store=store) == [], "its alerts no longer fire"
    closed = audit.entries(action="alert.resolved", store=store)
    assert {e.subject for e in closed} == {f"alert/churn/{rule}" for rule in latency}
    assert {e.payload["reason"] for e in closed} == {"SLO objective latency removed"}
    assert monitor.evaluate_once(NOW + 1000) == []
    set_slo("churn", latency_ms=64, store=store)  # back, on its own: its alerts fire again
    assert {t.rule for t in monitor.evaluate_once(NOW + 2000)} == latency
    delete_slo("churn", store=store)
    assert list_alerts(state="firing", store=store) == []
    reasons = [e.payload["reason"] for e in audit.entries(action="alert.resolved", store=store)]
    assert sorted(reasons) == ["SLO deleted"] * 2 + ["SLO objective latency removed"] * 2
