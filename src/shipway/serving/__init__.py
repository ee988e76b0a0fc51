"""Serving: an inference ASGI app for registered versions (Open Inference Protocol v2 and plain JSON),
adaptive batching, an atomically swapped routing table (weights, sticky keys, shadows), Prometheus
metrics, and serving every deployment of an environment as the store describes it.

Runs on the core install; the ``serve`` extra (``pip install "shipway[serve]"``) adds uvloop and
httptools, which make uvicorn faster.
"""

from typing import Any

from shipway.core.errors import MissingDependency

try:
    import orjson  # noqa: F401
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency.for_extra("serve", exc.name or "orjson", "Serving models") from exc

from shipway.serving.app import PredictionEvent, ServingApp, ServingConfig
from shipway.serving.batching import BatchConfig
from shipway.serving.follow import Target, TargetSync
from shipway.serving.host import ModelHost
from shipway.serving.protocol import RequestError
from shipway.serving.routing import Arm, Endpoint, RolloutRef, Router, RoutingTable, stable_fraction
from shipway.serving.serve import ServePlan, parse_target, resolve_targets, serve, serve_deployments
from shipway.serving.shadow import agreement
from shipway.serving.sync import DeploymentSync
from shipway.serving.windows import WindowRecorder

__all__ = [
    "Arm",
    "BatchConfig",
    "DeploymentSync",
    "Endpoint",
    "ModelHost",
    "PredictionEvent",
    "PredictionLog",
    "RequestError",
    "RolloutRef",
    "Router",
    "RoutingTable",
    "ServePlan",
    "ServingApp",
    "ServingConfig",
    "Target",
    "TargetSync",
    "WindowRecorder",
    "agreement",
    "iter_prediction_batches",
    "parse_target",
    "read_predictions",
    "resolve_targets",
    "serve",
    "serve_deployments",
    "stable_fraction",
]

# The prediction log needs pyarrow's parquet writer: imported on first use, not with the server.
_PREDLOG = {
    "PredictionLog": "predlog",
    "iter_prediction_batches": "predlog_read",
    "read_predictions": "predlog_read",
}


def __getattr__(name: str) -> Any:
    if name in _PREDLOG:
        import importlib

        return getattr(importlib.import_module(f"shipway.serving.{_PREDLOG[name]}"), name)
    raise AttributeError(f"module 'shipway.serving' has no attribute {name!r}")
