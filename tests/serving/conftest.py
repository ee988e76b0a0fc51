"""Registered models and a real inference server (uvicorn on a loopback port, in a thread)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pandas as pd
import pytest
from servers import ThreadedServer

import shipway
from shipway.serving import ServingApp, ServingConfig


@pytest.fixture(scope="session")
def churn_data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "charges": rng.normal(70, 20, n).round(2),
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    y = ((frame["tenure"] < 20) & (frame["charges"] > 60)).astype(int).to_numpy()
    return frame, y


def _pipeline(model):  # type: ignore[no-untyped-def]
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "charges"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    return Pipeline([("prep", prep), ("model", model)])


@pytest.fixture(scope="session")
def classifier(churn_data):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    frame, y = churn_data
    return _pipeline(LogisticRegression(max_iter=500)).fit(frame, y)


@pytest.fixture(scope="session")
def regressor(churn_data):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import GradientBoostingRegressor

    frame, _ = churn_data
    target = frame["charges"] * 0.1 + frame["tenure"]
    return _pipeline(GradientBoostingRegressor(n_estimators=20, random_state=0)).fit(frame, target)


@pytest.fixture
def churn(churn_data, classifier) -> str:  # type: ignore[no-untyped-def]
    """`churn` version 1 registered with a signature, and aliased prod."""
    frame, _ = churn_data
    shipway.register_model(classifier, name="churn", input_example=frame.head(50))
    shipway.set_alias("churn", "prod", 1)
    return "churn"


@dataclass
class Running:
    app: ServingApp
    url: str
    client: httpx.Client
    port: int


@pytest.fixture
def start_server() -> Iterator[Callable[..., Running]]:
    """Start a ServingApp under uvicorn on a free loopback port; stopped at teardown."""
    started: list[tuple[ThreadedServer, httpx.Client]] = []

    def start(app: ServingApp | None = None, **config: object) -> Running:
        app = app or ServingApp(ServingConfig(**config))  # type: ignore[arg-type]
        server = ThreadedServer(app)
        client = httpx.Client(base_url=server.url, timeout=30)
        started.append((server, client))
        return Running(app, server.url, client, server.port)

    yield start
    for server, client in started:
        client.close()
        server.stop(timeout=10)
