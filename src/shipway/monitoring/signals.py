"""The metrics alert rules can watch, and how each is measured over a rule's window.

Traffic metrics come from the per-minute traffic counters serving workers save
(:mod:`shipway.monitoring.traffic`): ``requests`` (answered in the window), ``error_rate`` (share
of them that failed with a server error) and ``latency_p50_ms`` / ``latency_p95_ms`` /
``latency_p99_ms`` (interpolated within the latency histogram's buckets, as Prometheus'
``histogram_quantile`` does). Drift metrics come from the prediction log of the rule's
``model@environment`` (:func:`shipway.monitoring.live.live_drift`): ``drift_share`` (share of
features drifted from the version's reference) and ``drifted_columns`` (how many); quality metrics
from the labels sent back for those predictions (:func:`shipway.monitoring.quality.live_quality`):
``accuracy``, ``f1``, ``auc``, ``rmse``, ``mae``. A metric without data in the window (no
requests, no logged predictions, no labels yet) has no value, and a rule never fires on no value;
``requests`` always has one (zero when nothing was answered), so ``requests below N`` catches
traffic that stopped. Traffic metrics count the rule's environment only, as drift and quality
read its ``model@environment``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shipway.core.errors import InvalidInput, MissingDependency, NotFound
from shipway.monitoring.traffic import Totals, window_totals
from shipway.store import Store

if TYPE_CHECKING:
    from shipway.monitoring.alerts import Rule

__all__ = ["METRICS", "Metric", "check_metric", "measure"]


@dataclass(frozen=True)
class Metric:
    """A metric rules can name: where it comes from and how it is read for a rule at ``now``."""

    name: str
    source: str  # traffic | drift | quality
    description: str
    read: Callable[[Store, Rule, int], float | None]
    min_window_ms: int = 60_000
    prometheus: bool = False  # whether export-rules can write it against /metrics


def _window(store: Store, rule: Rule, now: int, bounds: list[int] | None = None) -> Totals:
    """The totals of the rule's window: its model's traffic in its environment only."""
    env, windows = rule.environment, {"w": rule.window_ms}
    return window_totals(store, rule.model, windows, environment=env, bounds=bounds, now=now)["w"]


def _requests(store: Store, rule: Rule, now: int) -> float | None:
    return float(_window(store, rule, now, bounds=[]).requests)


def _error_rate(store: Store, rule: Rule, now: int) -> float | None:
    return _window(store, rule, now, bounds=[]).error_rate


def _latency(q: float) -> Callable[[Store, Rule, int], float | None]:
    def read(store: Store, rule: Rule, now: int) -> float | None:
        return _window(store, rule, now).quantile_ms(q)

    return read


def _live(module: str) -> Any:
    try:
        return importlib.import_module(f"shipway.monitoring.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"shipway.monitoring.{module}":
            raise
        raise MissingDependency(
            f"Drift and quality alerts need shipway.monitoring.{module}, which this Shipway does not "
            "have; watch a traffic metric instead."
        ) from None


def _span(rule: Rule, now: int) -> dict[str, Any]:
    return {
        "window": timedelta(milliseconds=rule.window_ms),
        "until": datetime.fromtimestamp(now / 1000, tz=UTC),
    }


def _no_predictions(exc: NotFound) -> bool:
    # Nothing logged in the window is no data; an unknown model, alias or reference is a mistake
    # the monitor reports (shipway.monitoring.sources.no_predictions words the first).
    return exc.message.startswith("No predictions of")


def _drift(attribute: str) -> Callable[[Store, Rule, int], float | None]:
    def read(store: Store, rule: Rule, now: int) -> float | None:
        live = _live("live")
        try:
            report = live.live_drift(f"{rule.model}@{rule.environment}", store=store, **_span(rule, now))
        except NotFound as exc:
            if _no_predictions(exc):
                return None
            raise
        value = getattr(report, attribute)
        return float(len(value) if attribute == "drifted_columns" else value)

    return read


def _quality(metric: str) -> Callable[[Store, Rule, int], float | None]:
    def read(store: Store, rule: Rule, now: int) -> float | None:
        quality = _live("quality")
        try:
            report = quality.live_quality(f"{rule.model}@{rule.environment}", store=store, **_span(rule, now))
        except NotFound as exc:
            if _no_predictions(exc):
                return None
            raise
        overall = report.overall
        value = overall.metrics.get(metric) if overall.labelled else None
        return None if value is None or math.isnan(value) else float(value)

    return read


_QUALITY = {
    "accuracy": "share of labelled predictions that were right",
    "f1": "F1 score of labelled predictions (binary, or macro-averaged)",
    "auc": "ROC AUC of labelled predictions (needs a logged score)",
    "rmse": "root mean squared error of labelled predictions",
    "mae": "mean absolute error of labelled predictions",
}


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("requests", "traffic", "requests answered in the window", _requests, prometheus=True),
        Metric(
            "error_rate", "traffic", "share of requests that failed with a 5xx", _error_rate, prometheus=True
        ),
        Metric("latency_p50_ms", "traffic", "median latency, ms", _latency(0.5), prometheus=True),
        Metric("latency_p95_ms", "traffic", "95th percentile latency, ms", _latency(0.95), prometheus=True),
        Metric("latency_p99_ms", "traffic", "99th percentile latency, ms", _latency(0.99), prometheus=True),
        Metric(
            "drift_share",
            "drift",
            "share of features drifted from the version's reference",
            _drift("share_drifted"),
            min_window_ms=300_000,
        ),
        Metric(
            "drifted_columns",
            "drift",
            "number of features drifted from the version's reference",
            _drift("drifted_columns"),
            min_window_ms=300_000,
        ),
        *(
            Metric(name, "quality", text, _quality(name), min_window_ms=300_000)
            for name, text in _QUALITY.items()
        ),
    )
}


def check_metric(name: str) -> str:
    """``name`` if rules can watch it; else InvalidInput listing the metrics."""
    if name not in METRICS:
        raise InvalidInput(f"Unknown metric {name!r}; alert rules can watch: {', '.join(METRICS)}.")
    return name


def measure(store: Store, rule: Rule, now: int) -> float | None:
    """The value of ``rule``'s metric over its window ending at ``now`` (None: no data)."""
    return METRICS[check_metric(rule.metric)].read(store, rule, now)
