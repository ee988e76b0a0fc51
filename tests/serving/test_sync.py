"""Serving what the store says: the sync loads before it routes, follows every change, keeps hosts warm."""

from __future__ import annotations

import pandas as pd
import pytest

import shipway
from shipway import governance
from shipway.rollout import RolloutConfig, abort_rollout, deploy, get_deployment, promote_rollout
from shipway.serving import DeploymentSync, RolloutRef, ServingApp
from shipway.store import Store


def _arms(app: ServingApp) -> list[tuple[str, float, str, float]]:
    return [(a.host.label, a.weight, a.label, a.mirror) for a in app.router.table.endpoints["churn"].arms]


@pytest.fixture
def registered(store: Store, churn_data, classifier, regressor):  # type: ignore[no-untyped-def]
    example = churn_data[0].head(50)
    for model in (classifier, regressor):
        shipway.register_model(model, name="churn", input_example=example, store=store)
    assert governance.promote("churn", 1, "prod", store=store).status == "completed"
    deploy("churn", "prod", store=store)
    return example


def test_the_sync_routes_each_change_and_reuses_warm_hosts(store: Store, registered: pd.DataFrame) -> None:
    app = ServingApp(store=store)
    seen = []
    sync = DeploymentSync(app, "prod", store=store, on_change=lambda d, e: seen.append((d.generation, e)))
    assert sync.sync() == ["churn"]
    assert _arms(app) == [("1", 100.0, "stable", 0.0)]
    assert app.router.table.endpoints["churn"].rollout is None
    assert sync.sync() == [], "an unchanged generation costs one query and changes nothing"
    stable = app.router.table.endpoints["churn"].arms[0].host

    governance.promote("churn", 2, "prod", store=store)
    config = RolloutConfig(steps=(10, 100), sticky_key="customer_id")
    d = deploy("churn", "prod", config=config, store=store)
    assert sync.sync() == ["churn"]
    endpoint = app.router.table.endpoints["churn"]
    assert _arms(app) == [("1", 90.0, "stable", 0.0), ("2", 10.0, "candidate", 0.0)]
    assert endpoint.rollout == RolloutRef(d.rollout_id, 0)  # type: ignore[arg-type]
    assert (endpoint.sticky_header, endpoint.sticky_field) == ("customer_id", "customer_id")
    assert endpoint.arms[0].host is stable, "stable was not reloaded"

    abort_rollout("churn", "prod", store=store)
    sync.sync()
    assert _arms(app) == [("1", 100.0, "stable", 0.0)] and app.router.table.endpoints["churn"].rollout is None

    d = deploy("churn", "prod", config=RolloutConfig(strategy="shadow", mirror=30), store=store)
    sync.sync()
    assert _arms(app) == [("1", 100.0, "stable", 0.0), ("2", 0.0, "candidate", 30.0)]
    promote_rollout("churn", "prod", store=store)
    sync.sync()
    assert _arms(app) == [("2", 100.0, "stable", 0.0)]
    assert [g for g, _ in seen] == [
        get_deployment("churn", store=store).generation - n for n in (4, 3, 2, 1, 0)
    ]


def test_a_candidate_that_does_not_load_gets_no_traffic(store: Store, registered: pd.DataFrame) -> None:
    # A python-function model does not load without --trust: the sync keeps serving stable alone.
    shipway.register_model(
        lambda frame: [0] * len(frame), name="churn", input_example=registered, store=store
    )
    governance.promote("churn", 3, "prod", store=store)
    app = ServingApp(store=store)
    errors = []
    sync = DeploymentSync(app, "prod", store=store, on_error=lambda m, uri, exc: errors.append(uri))
    deploy("churn", "prod", config=RolloutConfig(steps=(50, 100)), store=store)
    sync.sync()
    assert errors == ["models:/churn/3"]
    assert _arms(app) == [("1", 100.0, "stable", 0.0)]
    sync.sync()
    assert errors == ["models:/churn/3"], "not retried before retry_after"
    abort_rollout("churn", "prod", store=store)
    sync.sync()
    assert _arms(app) == [("1", 100.0, "stable", 0.0)] and errors == ["models:/churn/3"]


def test_an_endpoint_whose_stable_does_not_load_answers_503_with_why(store: Store, churn_data) -> None:  # type: ignore[no-untyped-def]
    shipway.register_model(lambda frame: [0] * len(frame), name="churn", store=store)
    governance.promote("churn", 1, "prod", store=store)
    deploy("churn", "prod", store=store)
    app = ServingApp(store=store)
    DeploymentSync(app, "prod", store=store, on_error=lambda *a: None).sync()
    endpoint = app.router.table.endpoints["churn"]
    assert not endpoint.ready and "v1 could not be loaded" in (endpoint.problem or "")


def test_deployments_are_known_before_they_are_loaded(store: Store, registered: pd.DataFrame) -> None:
    app = ServingApp(store=store)
    DeploymentSync(app, "prod", store=store).announce()
    endpoint = app.router.table.endpoints["churn"]
    assert not endpoint.ready and endpoint.problem == "loading the prod deployment"
