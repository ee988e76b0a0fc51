"""Shipway: one paved road from a training run to governed, monitored production."""

from __future__ import annotations

from typing import Any

from shipway.core.errors import (
    AlreadyExists,
    Conflict,
    GateFailed,
    IntegrityError,
    InvalidInput,
    MissingDependency,
    NotFound,
    PermissionDenied,
    ShipwayError,
    Unauthenticated,
    Unavailable,
)
from shipway.tracking import (
    Run,
    RunRecord,
    active_run,
    download_artifacts,
    get_run,
    list_experiments,
    metric_history,
    search_runs,
    seed,
    start_run,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Conflict",
    "GateFailed",
    "IntegrityError",
    "InvalidInput",
    "MissingDependency",
    "NotFound",
    "PermissionDenied",
    "Run",
    "RunRecord",
    "ShipwayError",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "active_run",
    "download_artifacts",
    "get_run",
    "list_experiments",
    "log_dataset",
    "metric_history",
    "search_runs",
    "seed",
    "start_run",
]


def log_dataset(data: Any, name: str, target: str | None = None) -> Any:
    """Version a DataFrame, pyarrow Table or .parquet/.csv file outside any run."""
    from shipway.data import log_dataset as _log_dataset

    return _log_dataset(data, name=name, target=target)
