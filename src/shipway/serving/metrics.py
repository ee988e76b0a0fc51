"""Prometheus metrics of the inference server, per endpoint (``model``), ``version`` and ``arm``.

Each app owns its registry, so several apps (or tests) in one process never share counters.
A host binds its label values once (:meth:`ServingMetrics.bind`), which keeps label lookups
off the request path; the queue depth is read from the queue when Prometheus scrapes.

Request counters and latencies carry an ``arm`` label: the label of the arm that answered
(``stable``, ``candidate``), ``pinned`` when the client named the version, ``shadow`` for
mirrored copies. Arm labels come from the routing, never from clients, so the set stays small.
Batch sizes, predict times and queue depth are per version: a batch mixes requests of all arms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from shipway.core.latency import LATENCY_BUCKETS

__all__ = ["CONTENT_TYPE", "ArmMetrics", "BoundMetrics", "ServingMetrics"]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class ArmMetrics:
    """One (version, arm)'s request metric children, labels already applied."""

    requests: Any
    latency: Any
    errors: Callable[[str], Any]


class BoundMetrics:
    """One version's metric children, labels already applied; :meth:`arm` adds the arm's."""

    def __init__(self, metrics: ServingMetrics, model: str, version: str) -> None:
        self._metrics, self.model, self.version = metrics, model, version
        self.predict_latency = metrics.predict_latency.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)
        self._arms: dict[str, ArmMetrics] = {}

    def arm(self, label: str) -> ArmMetrics:
        """The request metrics of this version answering as ``label``."""
        found = self._arms.get(label)
        if found is None:
            m, model, version = self._metrics, self.model, self.version
            errors = m.errors
            found = self._arms[label] = ArmMetrics(
                requests=m.requests.labels(model, version, label),
                latency=m.latency.labels(model, version, label),
                errors=lambda code: errors.labels(model, version, label, code),
            )
        return found

    def shadow(self, result: str) -> Any:
        """The counter of copies mirrored to this version: ``answered``, ``failed`` or ``dropped``."""
        return self._metrics.shadow_requests.labels(self.model, self.version, result)

    def shadow_rows(self, agreement: str) -> Any:
        """The counter of shadow rows that ``agreed`` or ``disagreed`` with the answer returned."""
        return self._metrics.shadow_rows.labels(self.model, self.version, agreement)


class ServingMetrics:
    """Counters, histograms and gauges for every endpoint and version an app serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "version"]
        arm_labels = [*labels, "arm"]
        r = self.registry
        self.requests = Counter(
            "shipway_serving_requests",
            "Prediction requests answered, successful or not.",
            arm_labels,
            registry=r,
        )
        self.errors = Counter(
            "shipway_serving_errors",
            "Prediction requests that failed, by stable error code.",
            [*arm_labels, "code"],
            registry=r,
        )
        self.latency = Histogram(
            "shipway_serving_request_duration_seconds",
            "Time from a prediction request's arrival to its response, in seconds.",
            arm_labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_requests = Counter(
            "shipway_serving_shadow_requests",
            "Requests copied to a shadow version, by what became of the copy: answered, failed, or "
            "dropped because too many copies were in flight.",
            [*labels, "result"],
            registry=r,
        )
        self.shadow_rows = Counter(
            "shipway_serving_shadow_rows",
            "Rows a shadow version answered, by whether its answer agreed with the one returned.",
            [*labels, "agreement"],
            registry=r,
        )
        self.predict_latency = Histogram(
            "shipway_serving_predict_duration_seconds",
            "Time of one batched predict call (validation included), in seconds.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "shipway_serving_batch_size_rows",
            "Rows per batched predict call.",
            labels,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "shipway_serving_queue_depth", "Requests waiting to be batched.", labels, registry=r
        )
        self.load_seconds = Gauge(
            "shipway_serving_model_load_seconds",
            "Seconds taken to load (digests verified) and warm a version.",
            labels,
            registry=r,
        )
        self.ready = Gauge(
            "shipway_serving_model_ready",
            "1 when a version is loaded, warmed and serving.",
            labels,
            registry=r,
        )

    def bind(self, model: str, version: str, queue_depth: Callable[[], float]) -> BoundMetrics:
        """Children for one version; the queue depth gauge calls ``queue_depth`` at scrape time."""
        self.queue_depth.labels(model, version).set_function(queue_depth)
        return BoundMetrics(self, model, version)

    def error(self, model: str, version: str, code: str) -> None:
        """Count a failed request that never reached a version (unknown model, bad path...)."""
        self.errors.labels(model, version, "", code).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
