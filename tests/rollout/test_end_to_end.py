"""Rollouts end to end on real traffic: real servers on loopback, a real store, a load generator.

The servers serve the deployments of ``prod`` as the store describes them (``DeploymentSync``),
count each request in its arm's window (``WindowRecorder``) and run the rollout controller, with
intervals of a fraction of a second so a whole rollout takes a few seconds. Models are Python
functions of two columns: ``x`` decides the class; ``marker`` is 1 on every 20th row the load
generator sends, and the failing candidate raises on it, so it fails exactly 5 % of its rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import uvicorn
from servers import free_port

import shipway
from shipway import governance
from shipway.governance import audit
from shipway.rollout import Controller, RolloutConfig, abort_rollout, deploy, get_deployment, promote_rollout
from shipway.rollout import deployments as dep
from shipway.serving import DeploymentSync, ServingApp, WindowRecorder
from shipway.store import Store, get_store, schema

MIN_REQUESTS = 100
# On a shared 2-core machine a few slow requests can land in either arm; these tests are about
# errors and predictions, so latency only fails a candidate that is slower than 100 ms at p95.
RELAXED = {"min_latency_ms": 100.0, "min_predictions": 100}


# -- models ------------------------------------------------------------------------------------


def _model(kind: str) -> Callable[[pd.DataFrame], np.ndarray]:
    # Defined inside a function, so cloudpickle saves them by value: a server process loads them
    # without importing this test module.
    def stable(frame: pd.DataFrame) -> np.ndarray:
        return (frame["x"].to_numpy() > 0).astype(np.int64)

    def failing(frame: pd.DataFrame) -> np.ndarray:
        if (frame["marker"].to_numpy() == 1).any():
            raise ValueError("cannot score a marked row")
        return (frame["x"].to_numpy() > 0).astype(np.int64)

    def shifted(frame: pd.DataFrame) -> np.ndarray:
        return (frame["x"].to_numpy() > -1.8).astype(np.int64)

    return {"stable": stable, "good": stable, "failing": failing, "shifted": shifted}[kind]


EXAMPLE = pd.DataFrame({"x": np.linspace(-2, 2, 20), "marker": np.zeros(20, dtype=np.int64)})


def _register(kind: str, store: Store) -> int:
    version = shipway.register_model(_model(kind), name="churn", input_example=EXAMPLE, store=store)
    assert governance.promote("churn", version.version, "prod", store=store).status == "completed"
    return version.version


def _row(i: int) -> dict[str, Any]:
    return {"x": round(float(np.sin(i * 1.7)) * 2, 4), "marker": int(i % 20 == 0)}


# -- servers -----------------------------------------------------------------------------------


@dataclass
class InProcess:
    """A serving app following the store, under uvicorn in this process."""

    app: ServingApp
    url: str
    sync: DeploymentSync
    recorder: WindowRecorder
    controller: Controller | None
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def local() -> Store:
    """The embedded SQLite store under SHIPWAY_HOME, which ``shipway serve`` processes use too."""
    return get_store()


@pytest.fixture
def serve() -> Iterator[Callable[..., InProcess]]:
    running: list[InProcess] = []

    def start(store: Store, *, worker: str = "worker-a", controller: bool = True) -> InProcess:
        app = ServingApp(store=store)
        recorder = WindowRecorder(store, worker=worker, interval=0.2)
        app.listeners.append(recorder)
        sync = DeploymentSync(app, "prod", store=store, trust=True, interval=0.1)
        ctl = Controller(interval=0.25, environment="prod", store=store) if controller else None
        for closer in (ctl.stop if ctl else None, sync.stop, recorder.stop):
            if closer is not None:
                app.on_close.append(closer)
        sync.sync()  # the first pass loads and warms before the server answers
        sync.start()
        recorder.start()
        if ctl is not None:
            ctl.start()
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        handle = InProcess(app, f"http://127.0.0.1:{port}", sync, recorder, ctl, server, thread)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.stop()


SHIPWAY = [sys.executable, "-m", "shipway"]


class Process:
    """``shipway serve`` (every deployment of prod) as a user runs it."""

    def __init__(self, home: Path, *, controller: float = 0.25, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [*SHIPWAY, "serve", "--port", str(self.port), "--trust", "--sync-interval", "0.2"]
        argv += ["--controller-interval", str(controller), "--workers", str(workers)]
        env = {**os.environ, "SHIPWAY_HOME": str(home), "COLUMNS": "250"}
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.output = ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.stop()
            try:
                if httpx.get(f"{self.url}/v2/models/churn/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        self.output, _ = self.proc.communicate(timeout=30)
        return self.output


# -- load --------------------------------------------------------------------------------------


@dataclass
class Load:
    """Threads sending single-row predictions as fast as they are answered; every outcome is kept."""

    url: str
    threads: int = 4
    # (status, version, arm, prediction) of every answer, appended as they come (list.append is atomic)
    results: list[tuple[int, str, str, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # transport errors
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, n: int) -> None:
        i = n
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post("/v1/models/churn/predict", json={"records": [_row(i)]})
                except httpx.TransportError as exc:
                    self.failures.append(repr(exc))
                    continue
                finally:
                    i += self.threads
                pred = r.json()["predictions"][0] if r.status_code == 200 else -1
                version, arm = r.headers["shipway-model-version"], r.headers["shipway-arm"]
                self.results.append((r.status_code, version, arm, pred))

    def stop(self) -> Load:
        self._stop.set()
        for t in self._workers:
            t.join(30)
        return self


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _served_versions(app: ServingApp) -> list[str]:
    endpoint = app.router.table.endpoints.get("churn")
    return [f"{a.host.label}:{a.weight:g}" for a in endpoint.arms] if endpoint else []


def _first_deployment(store: Store) -> None:
    _register("stable", store)
    deploy("churn", "prod", store=store)


def _canary(store: Store, kind: str, **config: Any) -> dep.Deployment:
    _register(kind, store)
    settings = {
        "steps": (20, 50, 100),
        "step_duration_ms": 0,
        "min_requests": MIN_REQUESTS,
        "thresholds": RELAXED,
        **config,
    }
    return deploy("churn", "prod", config=RolloutConfig(**settings), store=store)


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["failing", "shifted"])
def test_a_bad_candidate_is_rolled_back_on_its_own_evidence(local: Store, serve, kind: str) -> None:  # type: ignore[no-untyped-def]
    store = local
    _first_deployment(store)
    server = serve(store)
    load = Load(server.url).start()
    try:
        d = _canary(store, kind)
        final = _until(
            lambda: (g := get_deployment("churn", store=store)).status == "idle" and g, 30, "the rollback"
        )
        _until(lambda: _served_versions(server.app) == ["1:100"], 5, "stable alone to be served")
        after = len(load.results)
        time.sleep(0.3)
    finally:
        load.stop()
    assert (final.stable_version, final.candidate_version) == (1, None)
    (rolled_back,) = audit.entries(subject="deployment/churn/prod", action="rollout.rolled_back", store=store)
    metric = "error_rate" if kind == "failing" else "prediction_drift"
    assert any(reason.startswith(metric) for reason in rolled_back.payload["reasons"]), rolled_back.payload
    # Rolled back in its first step, at 20 %: with MIN_REQUESTS candidate requests its errors are
    # significant, or (a few failures short) it waits for more instead of advancing. Only a run with
    # no marked row among its first MIN_REQUESTS (p = 0.95**100, 0.6 %) passes one step first.
    steps = audit.entries(subject="deployment/churn/prod", action="rollout.step", store=store)
    assert len(steps) <= 1, "rolled back by 50 % at the latest"
    # Within the sample budget: soon after the first look with MIN_REQUESTS candidate requests.
    candidate = dep.windows(store, d.rollout_id, len(steps))["candidate"]
    assert MIN_REQUESTS <= candidate.requests <= 4 * MIN_REQUESTS, candidate.requests
    if kind == "failing":
        assert candidate.errors >= 3
        failed = [r for r in load.results if r[0] != 200]
        assert failed and all(r[:3] == (500, "2", "candidate") for r in failed), failed[:3]
    # After the rollback every answer comes from stable (past the one request per load thread that
    # may have picked its arm before the switch and been answered after it).
    tail = load.results[after + load.threads :]
    assert tail and {(r[0], r[1], r[2]) for r in tail} == {(200, "1", "stable")}
    assert load.failures == []


def test_a_good_candidate_reaches_all_traffic_and_switching_fails_no_request(store: Store, serve) -> None:  # type: ignore[no-untyped-def]
    # On SQLite and PostgreSQL: the controller's conditional writes, the sync's reads, the windows.
    _first_deployment(store)
    server = serve(store)
    load = Load(server.url).start()
    try:
        _canary(store, "good", steps=(20, 50, 100), min_requests=50)
        done = _until(
            lambda: (g := get_deployment("churn", store=store)).status == "idle" and g, 30, "the canary"
        )
        assert (done.stable_version, done.candidate_version) == (2, None), done.verdict
        _until(lambda: _served_versions(server.app) == ["2:100"], 5, "v2 alone to be served")
        # A person rolls the next version back, and promotes the one after, under the same load.
        _canary(store, "good", min_requests=10_000)
        _until(lambda: "3:20" in _served_versions(server.app), 5, "v3 to get traffic")
        _until(lambda: any(r[1] == "3" for r in load.results[-50:]), 5, "v3 to answer")
        abort_rollout("churn", "prod", reason="enough", store=store)
        _until(lambda: _served_versions(server.app) == ["2:100"], 5, "the abort")
        _canary(store, "good", min_requests=10_000)
        _until(lambda: "4:20" in _served_versions(server.app), 5, "v4 to get traffic")
        promote_rollout("churn", "prod", store=store)
        _until(lambda: _served_versions(server.app) == ["4:100"], 5, "the promotion")
        after = len(load.results)
        time.sleep(0.3)
    finally:
        load.stop()
    statuses = Counter(r[0] for r in load.results)
    assert statuses == {200: len(load.results)} and load.failures == [], (statuses, load.failures[:3])
    assert {r[1] for r in load.results} == {"1", "2", "3", "4"}
    # Past the one request per load thread that may have picked v2 before the switch:
    tail = load.results[after + load.threads :]
    assert tail and {(r[1], r[2]) for r in tail} == {("4", "stable")}
    steps = audit.entries(subject="deployment/churn/prod", action="rollout.step", store=store)
    assert [e.payload["step"] for e in steps] == [1, 2], "20 % -> 50 % -> 100 %"
    outcomes = [h["outcome"] for h in dep.history("churn", store=store)]
    assert outcomes == ["succeeded", "aborted", "succeeded", "succeeded"]


def test_shadow_answers_nobody_and_its_failures_fail_no_request(local: Store, serve) -> None:  # type: ignore[no-untyped-def]
    store = local
    _first_deployment(store)
    server = serve(store, controller=False)
    d = _canary(store, "failing", strategy="shadow", mirror=100)
    _until(lambda: len(_served_versions(server.app)) == 2, 5, "the shadow to be loaded")
    load = Load(server.url, threads=3).start()
    _until(lambda: len(load.results) >= 3 * MIN_REQUESTS, 30, "traffic")
    load.stop()
    assert load.failures == []
    assert {(r[0], r[1], r[2]) for r in load.results} == {(200, "1", "stable")}, "stable answers everything"
    server.recorder.flush()
    _until(lambda: not server.app.mirror.in_flight, 5, "the copies in flight")
    server.recorder.flush()
    arms = dep.windows(store, d.rollout_id, 0)
    assert arms["stable"].requests == len(load.results)
    candidate = arms["candidate"]
    assert candidate.requests >= 0.9 * len(load.results), (
        "every request is copied (unless too many in flight)"
    )
    assert candidate.errors >= 0.03 * candidate.requests, "the marked rows failed on the shadow"
    agreed, compared = dep.agreement(store, d.rollout_id, 0)
    assert compared == candidate.requests - candidate.errors and agreed == compared
    status = dep.rollout_status("churn", store=store)
    assert status["arms"][1]["agreement"] == 1.0
    # The analysis sees the shadow's failures: the controller rolls it back.
    (event,) = dep.tick(environment="prod", store=store)
    assert event.action == "rollback" and "error_rate" in event.reasons[0]


def test_a_sticky_key_gets_the_same_arm_in_every_worker(local: Store, shipway_home: Path) -> None:
    store = local
    _first_deployment(store)
    _register("good", store)
    deploy(
        "churn", "prod", config=RolloutConfig(strategy="ab", split=50, sticky_key="customer_id"), store=store
    )
    first, second = Process(shipway_home), Process(shipway_home, controller=0)
    try:
        first.wait_ready()
        second.wait_ready()
        arms: dict[str, set[tuple[str, str]]] = {}
        with httpx.Client(timeout=30) as client:
            for key in range(40):
                row = _row(key + 1)
                for server in (first, second):
                    # By header on one request, by a field the model does not take on the other.
                    by_header = client.post(
                        f"{server.url}/v1/models/churn/predict",
                        json={"records": [row]},
                        headers={"customer_id": str(key)},
                    )
                    by_field = client.post(
                        f"{server.url}/v1/models/churn/predict",
                        json={"records": [{**row, "customer_id": key}]},
                    )
                    for r in (by_header, by_field):
                        assert r.status_code == 200, r.text
                        arms.setdefault(str(key), set()).add(
                            (r.headers["shipway-arm"], r.headers["shipway-model-version"])
                        )
    finally:
        outputs = [first.stop(), second.stop()]
    assert all(len(seen) == 1 for seen in arms.values()), {k: v for k, v in arms.items() if len(v) > 1}
    split = Counter(next(iter(seen)) for seen in arms.values())
    assert set(split) == {("stable", "1"), ("candidate", "2")} and min(split.values()) >= 8, split
    assert "churn: v1 50% (stable), v2 50% (candidate); ab rollout progressing" in outputs[0]
    assert "Traceback" not in outputs[0] + outputs[1]


def test_a_restarted_server_resumes_the_rollout_at_its_step(local: Store, shipway_home: Path) -> None:
    store = local
    _first_deployment(store)
    first = Process(shipway_home)
    first.wait_ready()
    d = _canary(store, "good", steps=(50, 100), min_requests=150)
    load = Load(first.url, threads=3).start()
    try:
        _until(lambda: get_deployment("churn", store=store).step == 1, 30, "the second step")
    finally:
        load.stop()
    # A little of the second step's traffic, far short of its 150 requests: once the first server
    # routes everything to the candidate, ten answers in a row come from it.
    in_a_row = 0
    with httpx.Client(base_url=first.url, timeout=30) as client:
        for i in range(300):
            r = client.post("/v1/models/churn/predict", json={"records": [_row(i)]})
            in_a_row = in_a_row + 1 if r.headers["shipway-arm"] == "candidate" else 0
            if in_a_row == 10:
                break
    assert in_a_row == 10
    before = len(load.results)
    output = first.stop()  # mid-rollout: the candidate answers everything, and has not yet passed
    assert "rollout of churn: promote" in output and "Traceback" not in output
    held = get_deployment("churn", store=store)
    assert (held.status, held.step, held.candidate_version) == ("progressing", 1, 2)
    saved_by_first = dep.windows(store, d.rollout_id, 1)
    second = Process(shipway_home)
    try:
        second.wait_ready()
        resumed = get_deployment("churn", store=store)
        assert (resumed.status, resumed.step) == ("progressing", 1), "nothing moved while no server ran"
        load = Load(second.url, threads=3).start()
        try:
            _until(
                lambda: get_deployment("churn", store=store).status == "idle", 30, "the end of the rollout"
            )
        finally:
            load.stop()
    finally:
        output = second.stop()
    final = get_deployment("churn", store=store)
    assert (final.stable_version, final.candidate_version) == (2, None)
    assert {r[0] for r in load.results} == {200} and load.failures == []
    assert (
        before > 0
        and "v1 0% (stable), v2 100% (candidate); canary rollout progressing, step 2 of 2" in output
    )
    # The second step was judged on both workers' traffic: what the first saved at shutdown counted.
    assert saved_by_first["stable"].requests + saved_by_first["candidate"].requests > 0
    with store.read() as conn:
        workers = conn.execute(
            sa.select(schema.rollout_windows.c.worker).where(
                schema.rollout_windows.c.rollout_id == d.rollout_id, schema.rollout_windows.c.step == 1
            )
        ).scalars()
        assert len(set(workers)) == 2
    assert [e.payload["step"] for e in audit.entries(action="rollout.step", store=store)] == [1]


def test_workers_share_the_port_and_the_store_and_the_controller_acts_once(
    local: Store, shipway_home: Path
) -> None:
    store = local
    _first_deployment(store)
    server = Process(shipway_home, workers=2)
    try:
        server.wait_ready()
        d = _canary(store, "good", steps=(50, 100), min_requests=60)
        load = Load(server.url, threads=3).start()
        try:
            # Fresh connections too, so the kernel hands requests to both workers.
            for i in range(40):
                r = httpx.post(f"{server.url}/v1/models/churn/predict", json={"records": [_row(i)]})
                assert r.status_code == 200, r.text
            _until(
                lambda: get_deployment("churn", store=store).status == "idle", 60, "the end of the rollout"
            )
        finally:
            load.stop()
    finally:
        output = server.stop()
    assert load.results and {r[0] for r in load.results} == {200} and load.failures == []
    assert "workers: 2 processes" in output and "Traceback" not in output
    assert get_deployment("churn", store=store).stable_version == 2
    with store.read() as conn:
        workers = conn.execute(
            sa.select(schema.rollout_windows.c.worker).where(
                schema.rollout_windows.c.rollout_id == d.rollout_id
            )
        ).scalars()
        assert len(set(workers)) == 2, "both workers counted requests"
    # One controller (in the parent) judged the steps: each step was passed once.
    assert [e.payload["step"] for e in audit.entries(action="rollout.step", store=store)] == [1]
