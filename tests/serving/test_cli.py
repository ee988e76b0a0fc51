"""`shipway serve` as a user runs it: a real process on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from servers import free_port

from shipway.serving import Target, parse_target

SHIPWAY = [sys.executable, "-m", "shipway"]


def test_targets_name_a_model_and_the_endpoint() -> None:
    assert parse_target("churn@prod") == Target("churn", "models:/churn@prod")
    assert parse_target("churn/3") == Target("churn", "models:/churn/3")
    assert parse_target("churn") == Target("churn", "models:/churn")
    assert parse_target("models:/churn/3") == Target("churn", "models:/churn/3")
    with pytest.raises(Exception, match="NAME@ALIAS"):
        parse_target("churn@Prod!")


def test_serve_refuses_what_it_cannot_serve(churn, shipway_home: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "SHIPWAY_HOME": str(shipway_home)}
    both = subprocess.run(
        [*SHIPWAY, "serve", "churn@prod", "--env", "prod"], capture_output=True, text=True, env=env
    )
    assert both.returncode == 2 and "cannot be combined with named models" in both.stderr
    interval = subprocess.run(
        [*SHIPWAY, "serve", "--controller-interval", "-1"], capture_output=True, text=True, env=env
    )
    assert interval.returncode == 2 and "--controller-interval" in interval.stderr
    unknown = subprocess.run([*SHIPWAY, "serve", "churn@canary"], capture_output=True, text=True, env=env)
    assert unknown.returncode == 3 and "has no alias 'canary'" in unknown.stderr
    twice = subprocess.run(
        [*SHIPWAY, "serve", "churn@prod", "churn/1"], capture_output=True, text=True, env=env
    )
    assert twice.returncode == 2 and "named twice" in twice.stderr
    bad = subprocess.run(
        [*SHIPWAY, "serve", "churn", "--max-batch-size", "0"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "--max-batch-size" in bad.stderr


def test_serve_answers_predictions(churn, shipway_home: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "SHIPWAY_HOME": str(shipway_home)}
    proc = subprocess.Popen(
        [*SHIPWAY, "serve", "churn@prod", "--port", str(port), "--max-wait-ms", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "never became ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/churn/predict",
            json={"records": [{"tenure": 3, "charges": 80.5, "plan": "pro"}]},
        )
        assert response.status_code == 200 and response.headers["shipway-model-version"] == "1"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert f"Shipway serving on http://127.0.0.1:{port}" in output
    assert "churn: version 1 ready in" in output
    assert "Traceback" not in output
