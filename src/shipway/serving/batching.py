"""Adaptive batching: concurrent requests for one version share one vectorized predict call.

Requests queue per version. A drain task takes everything queued (up to ``max_batch_size`` rows;
a larger request runs alone, never split), optionally waits up to ``max_wait_ms`` for the batch to
fill, and hands the batch to the host in one call. With the default wait of 0 nothing is delayed:
batches form from the requests that arrived while the previous call ran, so a lone client pays no
batching latency and a busy server amortises its per-call cost.

The call runs on the event loop when the version's recent batches took less than
``inline_below_ms`` (no thread hand-off for fast models), and otherwise on a dedicated thread, so
a slow model never stalls health checks, metrics or other models. The queue is bounded: beyond
``max_queue`` waiting requests a submit raises :class:`Overloaded` (503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shipway.core.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class BatchConfig:
    """How one version batches: sizes in rows, times in milliseconds, queue in requests."""

    max_batch_size: int = 64
    max_wait_ms: float = 0.0
    max_queue: int = 256
    inline_below_ms: float = 5.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise InvalidInput(f"--max-batch-size must be at least 1, not {self.max_batch_size}.")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise InvalidInput(f"--max-wait-ms must be between 0 and 10000, not {self.max_wait_ms}.")
        if self.max_queue < 1:
            raise InvalidInput(f"--max-queue must be at least 1, not {self.max_queue}.")


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 with ``Retry-After``."""

    def __init__(self, depth: int, retry_after: int) -> None:
        super().__init__(f"{depth} requests are already waiting for this model; retry in {retry_after} s.")
        self.retry_after = retry_after


@dataclass(slots=True)
class _Item(Generic[T]):
    payload: T
    rows: int
    future: asyncio.Future[Any]
    arrived: float


def _wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


class Batcher(Generic[T]):
    """Queues items for one version and runs them through ``run`` in batches.

    ``run(items)`` returns one result per item, in order; a result that is an exception instance
    fails only its own item. ``on_batch(rows, seconds)`` observes every call.
    """

    def __init__(
        self,
        run: Callable[[list[T]], list[Any]],
        config: BatchConfig,
        *,
        on_batch: Callable[[int, float], None] | None = None,
        estimate_seconds: float = 0.0,
    ) -> None:
        self._run = run
        self.config = config
        self._on_batch = on_batch
        self._queue: deque[_Item[T]] = deque()
        self._rows = 0
        self._task: asyncio.Task[None] | None = None
        self._fill: asyncio.Future[Any] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Seconds per call, smoothed; seeded from warm-up so the first call is placed right.
        self.estimate = estimate_seconds

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being predicted)."""
        return len(self._queue)

    async def submit(self, payload: T, rows: int) -> Any:
        """Queue one request's rows and wait for its result."""
        if len(self._queue) >= self.config.max_queue:
            calls_ahead = len(self._queue) / self.config.max_batch_size + 1
            raise Overloaded(len(self._queue), max(1, math.ceil(calls_ahead * self.estimate)))
        loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(_Item(payload, rows, future, loop.time()))
        self._rows += rows
        if self._fill is not None and self._rows >= self.config.max_batch_size:
            _wake(self._fill)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    def _take(self) -> list[_Item[T]]:
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        limit = self.config.max_batch_size
        while self._queue and rows + self._queue[0].rows <= limit:
            item = self._queue.popleft()
            rows += item.rows
            batch.append(item)
        self._rows -= rows
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.config.max_wait_ms / 1000
        try:
            while self._queue:
                if wait and self._rows < self.config.max_batch_size:
                    delay = self._queue[0].arrived + wait - loop.time()
                    if delay > 0:
                        self._fill = loop.create_future()
                        timer = loop.call_later(delay, _wake, self._fill)
                        await self._fill
                        timer.cancel()
                        self._fill = None
                batch = self._take()
                payloads = [item.payload for item in batch]
                started = time.perf_counter()
                try:
                    if self.estimate * 1000 < self.config.inline_below_ms:
                        results = self._run(payloads)
                    else:
                        if self._executor is None:
                            self._executor = ThreadPoolExecutor(1, thread_name_prefix="shipway-predict")
                        results = await loop.run_in_executor(self._executor, self._run, payloads)
                except Exception as exc:  # run() reports per-item failures itself; this is a bug
                    results = [exc] * len(batch)
                seconds = time.perf_counter() - started
                self.estimate = seconds if not self.estimate else 0.8 * self.estimate + 0.2 * seconds
                if self._on_batch is not None:
                    self._on_batch(sum(item.rows for item in batch), seconds)
                for item, result in zip(batch, results, strict=True):
                    if item.future.done():  # the caller went away
                        continue
                    if isinstance(result, BaseException):
                        item.future.set_exception(result)
                    else:
                        item.future.set_result(result)
        finally:
            self._task = None

    def close(self) -> None:
        """Let the predict thread end after its current call; a later batch starts a new one.

        Safe from any thread: while the event loop runs, the executor is shut down on the loop,
        so a drain cannot hand a batch to an executor shut down under it.
        """
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                loop.call_soon_threadsafe(self._shutdown_executor)
                return
            except RuntimeError:  # the loop closed meanwhile: nothing can be draining
                pass
        self._shutdown_executor()

    def _shutdown_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
