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
    "load_model",
    "log_dataset",
    "metric_history",
    "register_model",
    "search_runs",
    "seed",
    "set_alias",
    "start_run",
]


_LAZY_SUBMODULES = frozenset(
    {
        "client",
        "core",
        "data",
        "governance",
        "monitoring",
        "registry",
        "rollout",
        "server",
        "serving",
        "store",
        "tracking",
    }
)


def __getattr__(name: str) -> Any:
    # `import shipway` stays light; `shipway.registry.update_version(...)` imports on first use.
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"shipway.{name}")
    raise AttributeError(f"module 'shipway' has no attribute {name!r}")


def register_model(model: Any, name: str, **kwargs: Any) -> Any:
    """Register ``model`` as the next version of ``name`` (see :func:`shipway.registry.register_model`)."""
    from shipway.registry import register_model as _register_model

    return _register_model(model, name, **kwargs)


def load_model(uri: str, *, trust: bool = False, public_key: Any = None) -> Any:
    """Load ``models:/name@alias`` or ``models:/name/3`` with digests verified and pickles refused."""
    from shipway.registry import load_model as _load_model

    return _load_model(uri, trust=trust, public_key=public_key)


def set_alias(name: str, alias: str, version: int) -> None:
    """Point an alias (``staging``, ``champion``…) at a version of a model."""
    from shipway.registry import set_alias as _set_alias

    _set_alias(name, alias, version)


def log_dataset(data: Any, name: str, target: str | None = None) -> Any:
    """Version a DataFrame, pyarrow Table or .parquet/.csv file outside any run."""
    from shipway.data import log_dataset as _log_dataset

    return _log_dataset(data, name=name, target=target)
