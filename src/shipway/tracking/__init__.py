"""Experiment tracking: runs, params, buffered metrics, tags, datasets, artifacts, lineage, search."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shipway.client.mode import remote_client
from shipway.store import Store, get_store
from shipway.tracking import records as _records
from shipway.tracking import search as _search
from shipway.tracking.artifacts import ArtifactEntry, list_artifacts
from shipway.tracking.artifacts import download_artifacts as _download_artifacts
from shipway.tracking.experiments import Experiment
from shipway.tracking.experiments import list_experiments as _list_experiments
from shipway.tracking.lineage import capture as capture_lineage
from shipway.tracking.lineage import current_user, seed
from shipway.tracking.metrics import MetricPoint
from shipway.tracking.records import DatasetUse, RunRecord
from shipway.tracking.runs import STATUSES, Run, active_run, start_run
from shipway.tracking.search import ATTRIBUTES, Page, parse_filter

__all__ = [
    "ATTRIBUTES",
    "STATUSES",
    "ArtifactEntry",
    "DatasetUse",
    "Experiment",
    "MetricPoint",
    "Page",
    "Run",
    "RunRecord",
    "active_run",
    "capture_lineage",
    "current_user",
    "download_artifacts",
    "get_run",
    "list_artifacts",
    "list_experiments",
    "metric_history",
    "parse_filter",
    "search_runs",
    "seed",
    "start_run",
]


def get_run(run_id: str, *, store: Store | None = None) -> RunRecord:
    """Status, params, latest metrics, tags, lineage, datasets and artifacts of one run."""
    client = remote_client(store)
    if client is not None:
        return client.get_run(run_id)
    return _records.get_run(store or get_store(), run_id)


def metric_history(run_id: str, key: str, *, store: Store | None = None) -> list[MetricPoint]:
    """Every (step, timestamp, value) of one metric of a run, in step order."""
    client = remote_client(store)
    if client is not None:
        return client.metric_history(run_id, key)
    return _records.metric_history(store or get_store(), run_id, key)


def search_runs(
    experiments: str | Sequence[str] | None = None,
    filter: str | None = None,
    order_by: str | Sequence[str] | None = None,
    limit: int = 100,
    page_token: str | None = None,
    *,
    store: Store | None = None,
) -> Page[RunRecord]:
    """Runs matching a filter such as ``"metrics.auc > 0.8 and params.depth = 6"``, one page."""
    client = remote_client(store)
    if client is not None:
        return client.search_runs(
            experiments, filter=filter, order_by=order_by, limit=limit, page_token=page_token
        )
    return _search.search_runs(
        store or get_store(),
        experiments,
        filter=filter,
        order_by=order_by,
        limit=limit,
        page_token=page_token,
    )


def list_experiments(*, store: Store | None = None) -> list[Experiment]:
    """Every experiment with its number of runs."""
    client = remote_client(store)
    if client is not None:
        return client.list_experiments()
    return _list_experiments(store or get_store())


def download_artifacts(
    run_id: str, dest: str | Path, path: str | None = None, *, store: Store | None = None
) -> list[Path]:
    """Copy a run's artifacts to ``dest`` (each file's digest is checked on the way)."""
    client = remote_client(store)
    if client is not None:
        return client.download_artifacts(run_id, dest, path)
    return _download_artifacts(store or get_store(), run_id, dest, path)
