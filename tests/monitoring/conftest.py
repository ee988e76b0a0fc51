"""A churn model registered from a run that logged its training data, served by a real server whose
prediction log is written to the test's artifact store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from servers import ThreadedServer

import shipway
from shipway.serving import PredictionLog, ServingApp, ServingConfig


def churn_frame(n: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    """Customers; ``shift`` moves charges up by that many standard deviations."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "charges": (rng.normal(70, 20, n) + 20 * shift).round(2),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def churned(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["tenure"] < 20) & (frame["charges"] > 60)).astype(int).to_numpy()


@pytest.fixture(scope="session")
def customers() -> Callable[..., pd.DataFrame]:
    """churn_frame(n, seed, shift=0.0): customers, charges shifted by ``shift`` standard deviations."""
    return churn_frame


@pytest.fixture(scope="session")
def training() -> tuple[pd.DataFrame, np.ndarray]:
    frame = churn_frame(3_000, 0)
    return frame, churned(frame)


@pytest.fixture(scope="session")
def fitted(training):  # type: ignore[no-untyped-def]
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, y = training
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "charges"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    return Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=500))]).fit(frame, y)


@pytest.fixture
def churn(training, fitted) -> str:  # type: ignore[no-untyped-def]
    """`churn` version 1, trained in a run that logged its training dataset, aliased prod."""
    frame, y = training
    with shipway.start_run(experiment="churn") as run:
        run.log_dataset(frame.assign(churned=y), name="churn-train", role="train", target="churned")
    shipway.register_model(fitted, "churn", run=run, input_example=frame.head(50))
    shipway.set_alias("churn", "prod", 1)
    return "churn"


@dataclass
class Served:
    """A running server with a prediction log; ``predict`` returns the answer's request id."""

    app: ServingApp
    log: PredictionLog
    client: httpx.Client
    ids: list[str] = field(default_factory=list)

    def predict(self, frame: pd.DataFrame, *, rows: int = 100, model: str = "churn") -> list[str]:
        """Send ``frame`` in requests of ``rows`` rows; the request ids, in order."""
        ids = []
        for start in range(0, len(frame), rows):
            records = frame.iloc[start : start + rows].to_dict("records")
            answer = self.client.post(f"/v1/models/{model}/predict", json={"records": records})
            assert answer.status_code == 200, answer.text
            ids.append(answer.headers["shipway-request-id"])
        self.ids += ids
        return ids

    def send(self, records: list[dict[str, Any]], model: str = "churn") -> httpx.Response:
        return self.client.post(f"/v1/models/{model}/predict", json={"records": records})

    def flush(self) -> None:
        self.log.flush()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Start a ServingApp with a prediction log under uvicorn on a loopback port."""
    started: list[tuple[uvicorn.Server, threading.Thread, Served]] = []

    def start(*deployments: tuple[str, str], **config: Any) -> Served:
        app = ServingApp(ServingConfig(**config))
        log = PredictionLog(flush_seconds=3600)
        app.listeners.append(log)
        for endpoint, uri in deployments:
            app.deploy(endpoint, uri)
        server = ThreadedServer(app)
        served = Served(app, log, httpx.Client(base_url=server.url, timeout=30))
        started.append((server, served))
        return served

    yield start
    for server, served in started:
        served.client.close()
        server.stop(timeout=10)
        served.log.flush()
