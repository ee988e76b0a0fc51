"""Per-arm windows: what each arm of a rollout served in this worker, saved for the controller.

A :class:`WindowRecorder` is an app listener. Each request routed by a table that belongs to a
rollout step (``Endpoint.rollout``) is counted in the window of its (rollout, step, arm): its
latency, whether it failed, and its first row's prediction; a shadow's copy counts for the arm it
was mirrored to, with its agreement. Every ``interval`` seconds, and at shutdown, the windows
that changed are saved with ``record_window`` under this worker's name; each saved window is
cumulative for the step, so saving twice never counts twice, and the controller adds the
workers' windows up.

What counts against a version: a 5xx (the model raised, returned the wrong number of rows, or
its queue was full) is an error of the arm that handled it. A 4xx (malformed body, wrong types,
a column the signature does not take) is the client's mistake and is not counted at all: it
would have failed on either version. Requests that named a version (``/versions/{v}/``) are not
counted either: the client chose the arm, so they say nothing about random assignment.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import socket
import threading
import time
from typing import Any, Self

import numpy as np

from shipway.rollout import ArmWindow, read_window, record_agreement, record_window
from shipway.serving.app import PredictionEvent
from shipway.store import Store

log = logging.getLogger("shipway.serving")

ROLES = frozenset({"stable", "candidate"})
FORGET_AFTER_S = 120.0  # a step's window idle this long is dropped from memory once saved


def default_worker() -> str:
    """This process's name in the windows and traffic tables: ``hostname:pid:suffix``, with a
    random suffix drawn once per process, so that two replicas with the same hostname and pid
    (containers on the host network, each pid 1) never write each other's rows."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_suffix(pid)}"


@functools.cache
def _suffix(pid: int) -> str:
    # Keyed by pid: a forked child draws its own.
    return secrets.token_hex(3)


def first_prediction(predictions: Any) -> Any:
    """A request's first prediction as a plain value (None for outputs of several columns)."""
    if predictions is None:
        return None
    if hasattr(predictions, "iloc") and hasattr(predictions, "columns"):
        if predictions.shape[1] != 1 or not len(predictions):
            return None
        value = predictions.iloc[0, 0]
    else:
        array = np.asarray(predictions)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1 or not len(array):
            return None
        value = array[0]
    return value.item() if isinstance(value, np.generic) else value


class PeriodicSaver:
    """A listener that saves what it counted every ``interval`` seconds in a daemon thread, and
    once more at :meth:`stop`; subclasses set ``thread_name`` and define ``flush``."""

    thread_name = "shipway-saver"
    interval: float

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> int:
        raise NotImplementedError

    def start(self) -> Self:
        """Save every ``interval`` seconds in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and save what is left."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self.flush()


class WindowRecorder(PeriodicSaver):
    """Counts requests into per-arm windows and saves them to the store in the background."""

    thread_name = "shipway-windows"

    def __init__(self, store: Store, *, worker: str | None = None, interval: float = 1.0) -> None:
        self.store = store
        self.worker = worker or default_worker()
        self.interval = interval
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int, str], ArmWindow] = {}
        self._agreement: dict[tuple[str, int], list[int]] = {}
        self._dirty: set[tuple[Any, ...]] = set()
        self._touched: dict[tuple[Any, ...], float] = {}
        self._rng = random.Random()
        super().__init__()

    # -- counting: on the event loop, a few microseconds -------------------------------------

    def __call__(self, event: PredictionEvent) -> None:
        rollout = event.rollout
        if rollout is None or event.arm not in ROLES or 400 <= event.status < 500:
            return
        error = event.error is not None
        prediction = None if error else first_prediction(event.predictions)
        key = (rollout.id, rollout.step, event.arm)
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = ArmWindow()
            try:
                window.record(event.seconds * 1000, error=error, prediction=prediction, rng=self._rng)
            except (TypeError, ValueError):  # a prediction that is neither a class nor a number
                window.record(event.seconds * 1000, error=error, rng=self._rng)
            self._dirty.add(key)
            if event.agreement is not None:
                pair = self._agreement.setdefault((rollout.id, rollout.step), [0, 0])
                pair[0] += event.agreement[0]
                pair[1] += event.agreement[1]
                self._dirty.add((rollout.id, rollout.step))

    def window(self, rollout_id: str, step: int, arm: str) -> ArmWindow:
        """A copy of this worker's window (what the next save will write)."""
        with self._lock:
            found = self._windows.get((rollout_id, step, arm))
            return ArmWindow.from_dict(found.to_dict()) if found is not None else ArmWindow()

    # -- saving: on the recorder's thread ------------------------------------------------------

    def flush(self) -> int:
        """Save every window that changed since the last save; how many were saved."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            windows = {k: ArmWindow.from_dict(self._windows[k].to_dict()) for k in dirty if len(k) == 3}
            agreements = {k: tuple(self._agreement[k]) for k in dirty if len(k) == 2}
        saved = 0
        now = time.monotonic()
        for key, window in windows.items():
            rollout_id, step, arm = key
            try:
                if key not in self._touched:
                    # A worker restarted under the name it had (one given explicitly; a default
                    # name is new in every process) carries on from what it saved before, instead
                    # of overwriting it with a smaller count.
                    before = read_window(self.store, rollout_id, step, arm, self.worker)
                    if before is not None:
                        with self._lock:
                            merged = before.merge(self._windows[key])
                            self._windows[key] = merged
                        window = ArmWindow.from_dict(merged.to_dict())
                record_window(self.store, rollout_id, step, arm, self.worker, window)
            except Exception:
                log.exception("could not save the %s window of rollout %s step %s", arm, rollout_id, step)
                with self._lock:
                    self._dirty.add(key)
                continue
            self._touched[key] = now
            saved += 1
        for akey, (agreed, compared) in agreements.items():
            try:
                record_agreement(self.store, akey[0], akey[1], self.worker, agreed, compared)
            except Exception:
                log.exception("could not save the shadow agreement of rollout %s", akey[0])
                with self._lock:
                    self._dirty.add(akey)
                continue
            self._touched[akey] = now
        self._forget(now)
        return saved

    def _forget(self, now: float) -> None:
        """Drop windows of steps that ended long ago (saved, and idle for FORGET_AFTER_S)."""
        with self._lock:
            stale = [k for k, t in self._touched.items() if now - t > FORGET_AFTER_S and k not in self._dirty]
            for key in stale:
                del self._touched[key]
                if len(key) == 3:
                    self._windows.pop(key, None)  # type: ignore[arg-type]
                else:
                    self._agreement.pop(key, None)  # type: ignore[arg-type]
