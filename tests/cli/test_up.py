"""`shipway up` as a user runs it: the API and the inference server from one command, stopped
cleanly by SIGTERM, and never left half-running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from servers import free_port
from sklearn.linear_model import LogisticRegression

import shipway
from shipway import governance
from shipway.rollout import deploy
from shipway.serving import read_predictions

SHIPWAY = [sys.executable, "-m", "shipway"]


def _until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := check():
                return value
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _deployed_model() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"tenure": rng.integers(0, 72, 200), "charges": rng.normal(70, 20, 200)})
    model = LogisticRegression().fit(X, (X["tenure"] < 12).astype(int))
    shipway.register_model(model, name="churn", input_example=X.head(20))
    governance.promote("churn", 1, "prod")
    deploy("churn", "prod")


def _start(home: Path, *args: str) -> tuple[subprocess.Popen[str], int, int]:
    api, serving = free_port(), free_port()
    proc = subprocess.Popen(
        [*SHIPWAY, "up", "--insecure-local", "--port", str(api), "--serve-port", str(serving), *args],
        env={**os.environ, "SHIPWAY_HOME": str(home), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, api, serving


def test_up_runs_the_api_and_serves_deployments_and_stops_on_sigterm(shipway_home: Path) -> None:
    _deployed_model()
    proc, api, serving = _start(shipway_home, "--controller-interval", "0.5")
    try:
        _until(lambda: httpx.get(f"http://127.0.0.1:{api}/health").status_code == 200, 60, "the API")
        _until(
            lambda: httpx.get(f"http://127.0.0.1:{serving}/v2/models/churn/ready").status_code == 200,
            90,
            "the deployment to be served",
        )
        for i in range(25):
            answer = httpx.post(
                f"http://127.0.0.1:{serving}/v1/models/churn/predict",
                json={"records": [{"tenure": i, "charges": 80.5}]},
            )
            assert answer.status_code == 200 and answer.headers["shipway-model-version"] == "1"
        versions = httpx.get(f"http://127.0.0.1:{api}/api/v1/models/churn/versions")
        assert versions.status_code == 200
        proc.send_signal(signal.SIGTERM)  # to `up` alone, as a process manager would
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert f"serving:   http://127.0.0.1:{serving}" in output and "Traceback" not in output
    for port in (api, serving):  # nothing is left listening
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
    # Stopping wrote what serving had buffered: every answered request is in the prediction log.
    logged = read_predictions("churn", columns=["tenure", "status"])
    assert sorted(logged.column("tenure").to_pylist()) == list(range(25))
    assert set(logged.column("status").to_pylist()) == {200}


def test_up_stops_when_serving_dies_instead_of_running_half(shipway_home: Path) -> None:
    proc, api, serving = _start(shipway_home)
    try:
        _until(lambda: httpx.get(f"http://127.0.0.1:{api}/health").status_code == 200, 60, "the API")
        _until(lambda: _listening(serving), 60, "the inference server")
        (child,) = _children(proc.pid)
        os.kill(child, signal.SIGKILL)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "serving exited unexpectedly" in output


def test_up_refuses_a_taken_serving_port(shipway_home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = subprocess.run(
            [*SHIPWAY, "up", "--port", str(free_port()), "--serve-port", str(busy.getsockname()[1])],
            env={**os.environ, "SHIPWAY_HOME": str(shipway_home)},
            capture_output=True,
            text=True,
        )
    assert out.returncode == 1 and "--serve-port" in out.stderr and "--no-serve" in out.stderr


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
