"""Shadow traffic: copies of answered requests sent to a version whose answers are never returned.

A copy is made after the caller has been answered, runs as its own task, and is dropped, never
queued, when too many copies are already in flight (or the shadow version's own queue is full):
a slow or failing shadow costs the caller nothing. Its answer is compared row by row with the
one the caller got (:func:`agreement`), and both go to the app's listeners as a
:class:`PredictionEvent` with ``mirrored=True``, which is how a rollout's candidate window fills.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from shipway.serving.protocol import RequestError, Table

if TYPE_CHECKING:
    from shipway.serving.app import PredictionEvent
    from shipway.serving.host import ModelHost
    from shipway.serving.routing import Arm, RolloutRef

log = logging.getLogger("shipway.serving")

SHADOW_ARM = "shadow"  # the metrics' arm label of mirrored copies


def _array(predictions: Any) -> np.ndarray:
    if hasattr(predictions, "to_numpy") and hasattr(predictions, "columns"):
        return np.asarray(predictions.to_numpy())
    return np.asarray(predictions)


def agreement(answered: Any, shadow: Any) -> tuple[int, int]:
    """(rows whose answers agree, rows compared): numbers within a relative 1e-6, others equal."""
    a, b = _array(answered), _array(shadow)
    rows = len(a) if a.ndim else 1
    if a.shape != b.shape:
        return 0, rows
    try:
        if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
            same = np.isclose(a, b, rtol=1e-6, atol=1e-12, equal_nan=True)
        else:
            same = np.asarray(a == b, dtype=bool)
    except (TypeError, ValueError):  # values that cannot be compared disagree
        return 0, rows
    if same.ndim > 1:
        same = same.reshape(len(same), -1).all(axis=1)
    return int(np.count_nonzero(same)), rows


class Mirror:
    """Sends copies to shadow arms with at most ``limit`` in flight; the rest are dropped."""

    def __init__(self, limit: int, emit: Callable[[PredictionEvent], None]) -> None:
        self.limit = limit
        self._emit = emit
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def send(
        self,
        endpoint: str,
        arm: Arm,
        table: Table,
        answered: Any,
        overhead: float,
        request_id: str | None,
        rollout: RolloutRef | None,
    ) -> None:
        """Copy one answered request to ``arm`` in the background (or drop it when too many are in flight)."""
        host = arm.host
        if len(self._tasks) >= self.limit:
            if host.metrics is not None:
                host.metrics.shadow("dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._run(endpoint, arm, host, table, answered, overhead, request_id, rollout)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        endpoint: str,
        arm: Arm,
        host: ModelHost,
        table: Table,
        answered: Any,
        overhead: float,
        request_id: str | None,
        rollout: RolloutRef | None,
    ) -> None:
        from shipway.serving.app import PredictionEvent

        metrics = host.metrics
        started = time.perf_counter()
        try:
            predictions = await host.predict(table)
        except RequestError as err:
            seconds = overhead + time.perf_counter() - started
            if err.code == "overloaded":  # its queue is full: drop, never delay
                if metrics is not None:
                    metrics.shadow("dropped").inc()
                return
            if metrics is not None:
                m = metrics.arm(SHADOW_ARM)
                m.requests.inc()
                m.errors(err.code).inc()
                m.latency.observe(seconds)
                metrics.shadow("failed").inc()
            event = PredictionEvent(
                endpoint,
                host.label,
                arm.label,
                request_id,
                table.columns,
                None,
                seconds,
                error=err.code,
                status=err.status,
                rollout=rollout,
                mirrored=True,
                signature=host.signature,
            )
        except Exception:  # a bug: the caller was answered long ago, so only log it
            log.exception("shadow prediction on %s version %s failed", endpoint, host.label)
            return
        else:
            seconds = overhead + time.perf_counter() - started
            agreed, compared = agreement(answered, predictions)
            if metrics is not None:
                m = metrics.arm(SHADOW_ARM)
                m.requests.inc()
                m.latency.observe(seconds)
                metrics.shadow("answered").inc()
                if agreed:
                    metrics.shadow_rows("agreed").inc(agreed)
                if compared - agreed:
                    metrics.shadow_rows("disagreed").inc(compared - agreed)
            event = PredictionEvent(
                endpoint,
                host.label,
                arm.label,
                request_id,
                table.columns,
                predictions,
                seconds,
                rollout=rollout,
                mirrored=True,
                agreement=(agreed, compared),
                signature=host.signature,
            )
        self._emit(event)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for copies in flight (at shutdown, so their windows count)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
