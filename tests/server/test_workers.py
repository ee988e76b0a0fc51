"""`shipway server --workers 2` as real processes on loopback: both serve the same store, with tokens."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from servers import free_port, wait_for_port
from sklearn.dummy import DummyClassifier

import shipway
from shipway import governance
from shipway.store import Store


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in found.read_text().split()] if found.exists() else []


def test_two_workers_serve_the_store_and_check_tokens(store: Store) -> None:
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="churn")
    _, secret = governance.create_token(role="viewer", store=store)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipway", "server", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        wait_for_port(port)
        base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {secret}"}
        deadline = time.monotonic() + 60
        while len(_children(proc.pid)) < 2:  # two workers (plus, on Linux, a resource tracker)
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/api/v1/models").status_code == 401
            for _ in range(20):
                response = client.get("/api/v1/models/churn/versions/1", headers=headers)
                assert response.status_code == 200 and response.json()["version"] == 1
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "workers:   2 processes" in out
    assert "Traceback" not in err
