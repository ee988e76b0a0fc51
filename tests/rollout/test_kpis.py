"""Delivery KPIs read off real rollouts (SQLite and PostgreSQL), and `shipway kpis`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

import pytest
import sqlalchemy as sa
from sklearn.dummy import DummyClassifier

import shipway
from shipway import governance
from shipway.core.errors import InvalidInput
from shipway.rollout import delivery_kpis
from shipway.rollout import deployments as dep
from shipway.rollout.analysis import ArmWindow
from shipway.rollout.deployments import RolloutConfig
from shipway.store import Store, schema


def _version(store: Store, *, with_run: bool) -> int:
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    if with_run:
        with shipway.start_run(experiment="churn", store=store):
            version = shipway.register_model(model, name="churn", store=store)
    else:
        version = shipway.register_model(model, name="churn", store=store)
    assert governance.promote("churn", version.version, "prod", store=store).status == "completed"
    return version.version


def _canary(store: Store) -> dep.Deployment:
    config = RolloutConfig(steps=(50, 100), step_duration_ms=0, min_requests=200)
    return dep.deploy("churn", "prod", config=config, store=store)


def _trained_at(store: Store, version: int) -> int:
    v, runs = schema.model_versions, schema.runs
    with store.read() as conn:
        row = conn.execute(
            sa.select(v.c.created_at, runs.c.start_time)
            .select_from(v.outerjoin(runs, runs.c.id == v.c.run_id))
            .where(v.c.version == version)
        ).one()
    return row.start_time if row.start_time is not None else row.created_at


def test_kpis_count_deployments_failures_lead_time_and_restore(store: Store) -> None:
    _version(store, with_run=True)
    dep.deploy("churn", "prod", store=store)  # the first deployment: succeeds at once
    _version(store, with_run=False)
    d = _canary(store)  # rolled back by the controller on its errors
    dep.record_window(store, d.rollout_id, 0, "stable", "w", ArmWindow(requests=2000, errors=10))
    dep.record_window(store, d.rollout_id, 0, "candidate", "w", ArmWindow(requests=2000, errors=200))
    assert [e.action for e in dep.tick(store=store)] == ["rollback"]
    _version(store, with_run=True)
    _canary(store)
    dep.abort_rollout("churn", store=store)  # aborted by a person: a failed change too
    _canary(store)
    dep.promote_rollout("churn", store=store)  # version 3 reaches all traffic
    _version(store, with_run=False)
    _canary(store)  # still in progress

    kpis = delivery_kpis("prod", store=store)
    history = {(r["to_version"], r["outcome"]): r for r in dep.history("churn", store=store)}
    succeeded = [history[(1, "succeeded")], history[(3, "succeeded")]]
    failed = [history[(2, "rolled_back")], history[(3, "aborted")]]
    assert (kpis.deployments, kpis.changes, kpis.failed_changes, kpis.in_progress) == (2, 4, 2, 1)
    assert kpis.change_failure_rate == 0.5
    lead = [(r["ended_at"] - _trained_at(store, r["to_version"])) / 1000 for r in succeeded]
    assert kpis.lead_time_median_s == pytest.approx(median(lead))
    assert kpis.time_to_restore_median_s == pytest.approx(
        median((r["ended_at"] - r["started_at"]) / 1000 for r in failed)
    )
    assert kpis.deployments_per_day == pytest.approx(2 / 30)

    # One model, and a window that ends before anything happened.
    assert delivery_kpis("prod", model="churn", store=store).deployments == 2
    empty = delivery_kpis("prod", since="1h", until=succeeded[0]["started_at"] - 1, store=store)
    assert (empty.deployments, empty.change_failure_rate, empty.lead_time_median_s) == (0, None, None)
    assert delivery_kpis("staging", store=store).changes == 0
    with pytest.raises(InvalidInput, match="no model named 'fraud'"):
        delivery_kpis("prod", model="fraud", store=store)
    with pytest.raises(InvalidInput, match="not a duration"):
        delivery_kpis("prod", since="a month", store=store)
    with pytest.raises(InvalidInput, match="longer than nothing"):
        delivery_kpis("prod", since="0d", store=store)


def test_kpis_command(shipway_home: Path) -> None:
    _version(shipway.store.get_store(), with_run=True)
    dep.deploy("churn", "prod")
    env = {**os.environ, "SHIPWAY_HOME": str(shipway_home), "COLUMNS": "160"}
    shown = subprocess.run([sys.executable, "-m", "shipway", "kpis"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "Delivery KPIs of prod, last 30d" in shown.stdout and "0% (0 of 1 changes)" in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "shipway", "kpis", "--model", "churn", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert json.loads(as_json.stdout)["deployments"] == 1
    bad = subprocess.run(
        [sys.executable, "-m", "shipway", "kpis", "--since", "forever"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "not a duration" in bad.stderr and "Traceback" not in bad.stderr
