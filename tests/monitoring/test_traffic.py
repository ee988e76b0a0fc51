"""Per-minute traffic counters: what counts, saving without double counting, sums over windows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from shipway.core.latency import LATENCY_BUCKETS
from shipway.monitoring.traffic import (
    BOUNDS_MS,
    MINUTE_MS,
    Counts,
    Totals,
    prune_traffic,
    read_counts,
    record_traffic,
    window_totals,
)
from shipway.serving import PredictionEvent, Target, predlog, windows
from shipway.serving.traffic import TrafficRecorder, target_environments
from shipway.store import Store

T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS  # a minute's start


def _event(seconds: float = 0.003, status: int = 200, **fields: object) -> PredictionEvent:
    values: dict[str, object] = {
        "endpoint": "churn",
        "version": "1",
        "arm": "stable",
        "request_id": None,
        "columns": {},
        "predictions": None,
        "seconds": seconds,
        "status": status,
        "error": None if status < 400 else "x",
        **fields,
    }
    return PredictionEvent(**values)  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_latency_buckets_are_cumulative_and_inclusive_like_prometheus() -> None:
    counts = Counts()
    for seconds in (0.0002, 0.004, 0.0041, 0.064, 7.0):  # on a bound counts in it (le); 7 s in none
        counts.record(seconds, error=False)
    expected = [sum(s <= b for s in (0.0002, 0.004, 0.0041, 0.064, 7.0)) for b in LATENCY_BUCKETS]
    assert counts.latency == expected
    assert counts.requests == 5 and counts.latency[-1] == 4
    assert BOUNDS_MS[:3] == (0.5, 1.0, 2.0) and BOUNDS_MS[-1] == 5000.0


def test_what_counts_five_xx_are_errors_four_xx_are_answers_shadows_are_nothing(store: Store) -> None:
    clock = Clock(T0 + 5_000)
    recorder = TrafficRecorder(store, environment="prod", worker="w1", clock=clock)
    recorder(_event())
    recorder(_event(status=500))
    recorder(_event(status=503))
    recorder(_event(status=422))  # the caller's mistake: answered, not an error
    recorder(_event(mirrored=True, arm="shadow", version="2"))
    recorder(_event(version="2", arm="candidate"))
    mine = recorder.counts("churn", "1", T0)
    assert (mine.requests, mine.errors) == (4, 2)
    assert recorder.flush() == 2
    assert recorder.flush() == 0, "nothing changed"
    stored = read_counts(store, "churn", "1", T0, "w1", environment="prod")
    assert stored is not None and (stored.requests, stored.errors) == (4, 2)
    assert read_counts(store, "churn", "2", T0, "w1", environment="prod").requests == 1  # type: ignore[union-attr]


def test_saving_again_never_counts_twice_and_workers_add_up(store: Store) -> None:
    clock = Clock(T0 + 1_000)
    one, two = (TrafficRecorder(store, environment="prod", worker=w, clock=clock) for w in ("w1", "w2"))
    for _ in range(3):
        one(_event())
        one.flush()
        one.flush()
    two(_event(status=500))
    two.flush()
    totals = window_totals(store, "churn", {"1m": MINUTE_MS}, environment="prod", now=T0 + 30_000)["1m"]
    assert (totals.requests, totals.errors) == (4, 1)
    # A restarted worker with the same name carries on from what it saved.
    again = TrafficRecorder(store, environment="prod", worker="w1", clock=clock)
    again(_event())
    again.flush()
    assert (
        window_totals(store, "churn", {"1m": MINUTE_MS}, environment="prod", now=T0 + 30_000)["1m"].requests
        == 5
    )


def test_workers_saving_at_once_lose_nothing(store: Store) -> None:
    clock = Clock(T0 + 1_000)
    recorders = [TrafficRecorder(store, environment="prod", worker=f"w{i}", clock=clock) for i in range(4)]

    def work(recorder: TrafficRecorder) -> None:
        for n in range(60):
            recorder(_event(status=500 if n % 10 == 0 else 200))
            if n % 7 == 0:
                recorder.flush()
        recorder.stop()

    threads = [threading.Thread(target=work, args=(r,)) for r in recorders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = window_totals(store, "churn", {"5m": 300_000}, environment="prod", now=T0 + 30_000)["5m"]
    assert (totals.requests, totals.errors) == (240, 24)


def test_minutes_move_on_and_old_ones_leave_memory(store: Store) -> None:
    clock = Clock(T0 + 59_000)
    recorder = TrafficRecorder(store, environment="prod", worker="w1", clock=clock)
    recorder(_event())
    clock.now = T0 + 61_000
    recorder(_event())
    recorder(_event())
    recorder.flush()
    assert read_counts(store, "churn", "1", T0, "w1", environment="prod").requests == 1  # type: ignore[union-attr]
    assert read_counts(store, "churn", "1", T0 + MINUTE_MS, "w1", environment="prod").requests == 2  # type: ignore[union-attr]
    clock.now = T0 + 4 * MINUTE_MS
    recorder.flush()
    assert recorder.counts("churn", "1", T0).requests == 0, "saved and over: forgotten"
    # A straggler for a forgotten minute carries on from the saved row instead of replacing it.
    clock.now = T0 + 30_000
    recorder(_event())
    recorder.flush()
    assert read_counts(store, "churn", "1", T0, "w1", environment="prod").requests == 2  # type: ignore[union-attr]


def test_each_environment_is_counted_apart(store: Store) -> None:
    clock = Clock(T0 + 1_000)

    def totals(environment: str, model: str = "churn") -> tuple[int, int]:
        t = window_totals(store, model, {"1m": MINUTE_MS}, environment=environment, now=T0 + 30_000)["1m"]
        return t.requests, t.errors

    # Same worker name, model, version and minute: still two rows, one per environment.
    staging = TrafficRecorder(store, environment="staging", worker="w1", clock=clock)
    prod = TrafficRecorder(store, environment="prod", worker="w1", clock=clock)
    for _ in range(3):
        staging(_event(status=500))
    prod(_event())
    assert staging.flush() == 1 and prod.flush() == 1
    assert (totals("staging"), totals("prod"), totals("")) == ((3, 3), (1, 0), (0, 0))
    # A server of named versions: each target in its alias, one that names none in "".
    targets = [Target("churn", "models:/churn@staging"), Target("fraud", "models:/fraud/3")]
    assert target_environments(targets) == {"churn": "staging", "fraud": ""}
    mixed = TrafficRecorder(store, environment=target_environments(targets), worker="w2", clock=clock)
    mixed(_event())
    mixed(_event(endpoint="fraud", status=500))
    mixed(_event(endpoint="spam"))  # an endpoint it was not told of: no environment
    assert mixed.flush() == 3
    assert totals("staging") == (4, 3) and totals("prod") == (1, 0)
    assert totals("", "fraud") == (1, 1) and totals("prod", "fraud") == (0, 0)
    assert totals("", "spam") == (1, 0)


def test_default_worker_names_are_drawn_once_per_process() -> None:
    # Two replicas on the host network share the hostname and are both pid 1: only the suffix,
    # drawn at random in each process, keeps their rows apart.
    name = windows.default_worker()
    host, pid, suffix = name.rsplit(":", 2)
    assert (host, pid, len(suffix)) == (socket.gethostname(), str(os.getpid()), 6)
    assert windows.default_worker() == name, "the same name for the whole process"
    assert predlog.default_worker() == name.replace(":", "-"), "the prediction log's files say the same"
    other = subprocess.run(
        [sys.executable, "-c", "from shipway.serving.windows import default_worker; print(default_worker())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert other.rsplit(":", 2)[0] == host and other.rsplit(":", 1)[1] != suffix


def test_window_totals_sum_minutes_that_overlap_each_window(store: Store) -> None:
    rows = {}
    for minute in range(10):
        c = Counts()
        for _ in range(minute + 1):
            c.record(0.003, error=minute >= 8)
        rows[("churn", "1", T0 + minute * MINUTE_MS)] = c
    rows[("other", "1", T0)] = Counts(7, 7, [7] * len(LATENCY_BUCKETS))
    record_traffic(store, "w1", rows, environment="prod")
    now = T0 + 9 * MINUTE_MS + 30_000  # mid-way through minute 9
    totals = window_totals(
        store, "churn", {"1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "1h": 3_600_000}, environment="prod", now=now
    )
    assert totals["1m"].requests == 10 + 9, "minutes 8 and 9 overlap the last minute"
    assert totals["3m"].requests == 10 + 9 + 8 + 7
    assert totals["1h"].requests == sum(range(1, 11)) and totals["1h"].errors == 9 + 10
    assert (
        window_totals(store, "churn", {"w": MINUTE_MS}, environment="prod", now=T0 - MINUTE_MS)["w"].requests
        == 0
    )
    assert prune_traffic(store, T0 + 5 * MINUTE_MS) == 6
    assert window_totals(store, "churn", {"1h": 3_600_000}, environment="prod", now=now)[
        "1h"
    ].requests == sum(range(6, 11))


def test_quantiles_interpolate_within_buckets_like_histogram_quantile() -> None:
    rng = np.random.default_rng(3)
    latencies = rng.uniform(0.008, 0.016, 1000)  # all within one bucket: (8 ms, 16 ms]
    counts = Counts()
    for s in latencies:
        counts.record(float(s), error=False)
    totals = Totals(counts.requests, 0, tuple(counts.latency), tuple(range(len(BOUNDS_MS))))
    # Linear interpolation inside a uniform bucket is exact up to sampling noise.
    assert totals.quantile_ms(0.5) == pytest.approx(np.quantile(latencies, 0.5) * 1000, abs=0.2)
    assert totals.quantile_ms(0.95) == pytest.approx(np.quantile(latencies, 0.95) * 1000, abs=0.2)
    slow = Totals(10, 0, (0,) * len(BOUNDS_MS), tuple(range(len(BOUNDS_MS))))
    assert slow.quantile_ms(0.99) == 5000.0, "beyond the last bound: the last bound, as Prometheus says"
    assert Totals(0, 0, (0,) * len(BOUNDS_MS), tuple(range(len(BOUNDS_MS)))).quantile_ms(0.5) is None
