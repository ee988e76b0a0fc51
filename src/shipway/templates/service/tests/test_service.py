import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import client
import httpx
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import shipway

ROOT = Path(__file__).resolve().parents[1]


def script_env(**variables: str) -> dict[str, str]:
    env = {**os.environ, **variables}
    # The `shipway` command of the interpreter running the tests, wherever it is installed.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def deployed(shipway_home: Path) -> int:
    """A tiny model registered as the client's MODEL, prod pointing at it, deployed by deploy.sh."""
    data = load_breast_cancer(as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data.data, data.target)
    version = shipway.register_model(model, name=client.MODEL, input_example=data.data.head(20))
    shipway.set_alias(client.MODEL, "prod", version.version)
    done = subprocess.run(
        ["bash", str(ROOT / "deploy.sh")], env=script_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return version.version


@pytest.fixture
def server(deployed: int, tmp_path: Path) -> Iterator[str]:
    """serve.sh on a free loopback port, once the deployed version is warm."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        ["bash", str(ROOT / "serve.sh")], env=script_env(PORT=str(port)), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/v2/models/{client.MODEL}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_the_client_calls_both_endpoints(server: str) -> None:
    rows = client.example_rows(5)
    predictions = client.predict(server, rows)
    assert len(predictions) == 5 and set(predictions) <= {0, 1}
    assert client.infer(server, rows) == predictions

    # A row the signature refuses comes back as an error that names the column.
    del rows[0]["mean radius"]
    with pytest.raises(RuntimeError, match="mean radius"):
        client.predict(server, rows)
