"""Starting, logging to and ending runs."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from shipway.client.mode import remote_client
from shipway.core.actor import current_actor
from shipway.core.clock import now_ms
from shipway.core.errors import Conflict, InvalidInput
from shipway.core.ids import new_id
from shipway.core.names import check_name
from shipway.store import Store, audit, get_store, schema
from shipway.store.db import insert_for
from shipway.tracking import lineage
from shipway.tracking.experiments import ensure_experiment
from shipway.tracking.metrics import FLUSH_POINTS, RunBuffer, writer

if TYPE_CHECKING:
    from shipway.client import Client
    from shipway.data import DatasetVersion
    from shipway.tracking.artifacts import ArtifactEntry

_INSERT_RUN = schema.runs.insert()
_INSERT_PARAMS = schema.params.insert()

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
STATUSES = (RUNNING, FINISHED, FAILED, KILLED)
MAX_KEY = 256
MAX_PARAM_VALUE = 8000

_active: list[Run] = []
_active_lock = threading.Lock()
_uncaught: list[BaseException] = []
_terminated: list[int] = []  # the signal number, once SIGTERM arrived


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_int(value: object, what: str, low: int = INT64_MIN) -> int:
    """An integer that fits the store's 64-bit columns, or InvalidInput naming ``what``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidInput(f"{what} must be an integer, not {value!r}.")
    number = int(value)  # type: ignore[call-overload]
    if not low <= number <= INT64_MAX:
        raise InvalidInput(f"{what} must be between {low} and {INT64_MAX}, not {number}.")
    return number


def check_key(key: object, what: str) -> str:
    """Validate a metric, param or tag key."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or key != key.strip():
        raise InvalidInput(
            f"{what} key {key!r} is not allowed: use a non-empty string of at most {MAX_KEY} "
            "characters without leading or trailing spaces."
        )
    if any(ord(c) < 32 for c in key):
        raise InvalidInput(f"{what} key {key!r} contains control characters; remove them.")
    return key


def _param_row(run_id: str, key: str, value: Any) -> dict[str, Any]:
    check_key(key, "Param")
    if isinstance(value, bool) or value is None:
        text, num = str(value), None
    elif isinstance(value, int | float):
        text, num = str(value), float(value)
    else:
        text = str(value)
        try:
            num = float(text)
        except ValueError:
            num = None
    if num is not None and not math.isfinite(num):
        num = None
    if len(text) > MAX_PARAM_VALUE:
        raise InvalidInput(
            f"Param {key!r} is {len(text)} characters long; the limit is {MAX_PARAM_VALUE}. "
            "Log large values as an artifact instead."
        )
    return {"run_id": run_id, "key": key, "value": text, "num": num}


class Run:
    """A run being recorded by this process; use it as a context manager or call :meth:`end`."""

    def __init__(
        self,
        store: Store | None,
        run_id: str,
        experiment: str,
        name: str,
        user: str,
        client: Client | None = None,
    ) -> None:
        # Exactly one of ``store`` (embedded mode) and ``client`` (SHIPWAY_URI) is set.
        self.store = store
        self._client = client
        self.id = run_id
        self.experiment = experiment
        self.name = name
        self._buffer = RunBuffer(store, run_id, client)
        self._next_step: dict[str, int] = {}
        self._checked_keys: set[str] = set()
        self._params: dict[str, str] = {}
        self._ended = False
        self.status = RUNNING
        # Who started the run; the run's end is recorded in the audit log under the same name,
        # even when an exit hook or the writer thread ends it.
        self.user = user

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.experiment}/{self.name} {self.status}>"

    # -- metrics: the hot path ------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Record one value; it is buffered in memory and written in the background."""
        if self._ended:
            raise Conflict(f"Run {self.id} has ended; start a new run to log more metrics.")
        if key not in self._checked_keys:
            check_key(key, "Metric")
            self._checked_keys.add(key)
        try:
            v: float | None = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(f"Metric {key!r} got {value!r}, which is not a number.") from None
        if v != v:  # NaN is stored as NULL
            v = None
        if step is None:
            step = self._next_step.get(key, 0)
        elif step.__class__ is not int or not INT64_MIN <= step <= INT64_MAX:
            step = check_int(step, f"Metric {key!r}: step")
        self._next_step[key] = step + 1
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        elif timestamp.__class__ is not int or not 0 <= timestamp <= INT64_MAX:
            timestamp = check_int(timestamp, f"Metric {key!r}: timestamp (milliseconds since the epoch)", 0)
        points = self._buffer.points
        points.append((key, v, step, timestamp))
        if len(points) >= FLUSH_POINTS:
            writer.nudge()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record several metrics at the same step and time, in one append to the buffer."""
        if self._ended:
            raise Conflict(f"Run {self.id} has ended; start a new run to log more metrics.")
        if not isinstance(metrics, Mapping):
            raise InvalidInput(f"log_metrics takes a mapping of name to value, not {metrics!r}.")
        if step is not None and (step.__class__ is not int or not INT64_MIN <= step <= INT64_MAX):
            step = check_int(step, "step")
        timestamp = time.time_ns() // 1_000_000
        next_step = self._next_step
        batch = []
        for key, value in metrics.items():
            if key not in self._checked_keys:
                check_key(key, "Metric")
                self._checked_keys.add(key)
            try:
                v: float | None = float(value)
            except (TypeError, ValueError, OverflowError):
                raise InvalidInput(f"Metric {key!r} got {value!r}, which is not a number.") from None
            s = next_step.get(key, 0) if step is None else step
            batch.append((key, None if v != v else v, s, timestamp))
        for key, _, s, _ in batch:
            next_step[key] = s + 1
        points = self._buffer.points
        points.extend(batch)
        if len(points) >= FLUSH_POINTS:
            writer.nudge()

    def flush(self) -> int:
        """Write buffered metrics now (normally the background writer and ``end`` do this)."""
        return writer.flush(self._buffer)

    # -- params and tags ------------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        """Record one hyperparameter; params cannot change once logged."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters in one write; a changed value is refused."""
        if not isinstance(params, Mapping):
            raise InvalidInput(f"log_params takes a mapping of name to value, not {params!r}.")
        self._check_open()
        rows = []
        for key, value in params.items():
            row = _param_row(self.id, key, value)
            known = self._params.get(key)
            if known is not None:
                if known != row["value"]:
                    raise Conflict(
                        f"Param {key!r} of run {self.id} is already {known!r}; params cannot "
                        f"change (got {row['value']!r}). Log it under another name or start a new run."
                    )
                continue
            rows.append(row)
        if not rows:
            return
        if self._client is not None:
            self._client.log_run(self.id, params={r["key"]: r["value"] for r in rows})
        else:
            insert_params(self.store, self.id, rows)  # type: ignore[arg-type]
        self._params.update({r["key"]: r["value"] for r in rows})

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (tags, unlike params, may be changed)."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags in one write."""
        self._check_open()
        if self._client is not None:
            if not isinstance(tags, Mapping):
                raise InvalidInput(f"Tags are a mapping of name to value, not {tags!r}.")
            self._client.log_run(self.id, tags={check_key(k, "Tag"): str(v) for k, v in tags.items()})
        else:
            write_tags(self.store, self.id, tags)  # type: ignore[arg-type]

    # -- datasets and artifacts -----------------------------------------------------------------

    def log_dataset(
        self, data: Any, name: str, role: str = "train", target: str | None = None
    ) -> DatasetVersion:
        """Version ``data`` by content hash, store it, and link it to this run under ``role``."""
        from shipway.data import link_dataset, log_dataset

        self._check_open()
        if self._client is not None:
            return self._client.log_dataset(data, name, target, run_id=self.id, role=role)
        version = log_dataset(data, name=name, target=target, store=self.store)
        link_dataset(self.store, self.id, version, role=role, target=target)
        return version

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> list[ArtifactEntry]:
        """Store a file or a folder (recursively) among this run's artifacts."""
        from shipway.tracking.artifacts import log_artifact

        self._check_open()
        if self._client is not None:
            return self._client.log_artifact(self.id, local_path, artifact_path)
        return log_artifact(self.store, self.id, local_path, artifact_path)  # type: ignore[arg-type]

    # -- lifecycle ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._ended:
            raise Conflict(f"Run {self.id} has already ended as {self.status}.")

    def end(self, status: str = FINISHED, error: str | None = None) -> None:
        """Flush every buffered point and record the final status; idempotent."""
        if self._ended:
            return
        if status not in (FINISHED, FAILED, KILLED):
            raise InvalidInput(f"A run ends as FINISHED, FAILED or KILLED, not {status!r}.")
        finish = {"status": status, "end_time": now_ms(), "error": error, "actor": self.user}
        writer.flush(self._buffer, finish=finish)
        writer.unregister(self._buffer)
        self._ended = True
        self.status = status
        with _active_lock:
            if self in _active:
                _active.remove(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None) and not _terminated):
            self.end(FINISHED)
        elif isinstance(exc, KeyboardInterrupt):
            self.end(KILLED, error="KeyboardInterrupt")
        elif isinstance(exc, SystemExit) and _terminated:
            self.end(KILLED, error="terminated by SIGTERM")
        else:
            self.end(FAILED, error=describe_error(exc))


def describe_error(exc: BaseException) -> str:
    """The exception and the last frames of its traceback, as stored on a failed run."""
    lines = traceback.format_exception(exc)
    text = "".join(lines[-12:])
    return text[-4000:]


def insert_params(store: Store, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Insert checked param rows; a key logged before (by anyone) is a Conflict."""
    try:
        with store.write() as conn:
            conn.execute(_INSERT_PARAMS, rows)
    except sa.exc.IntegrityError:
        raise Conflict(
            f"Some of params {', '.join(r['key'] for r in rows)} were already logged to run "
            f"{run_id} by another process; params cannot change."
        ) from None


def param_rows(run_id: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Checked rows for the ``params`` table."""
    return [_param_row(run_id, key, value) for key, value in params.items()]


def write_tags(store: Store, run_id: str, tags: Mapping[str, Any]) -> None:
    """Insert or replace tags of a run."""
    if not isinstance(tags, Mapping):
        raise InvalidInput(f"Tags are a mapping of name to value, not {tags!r}.")
    rows = [{"run_id": run_id, "key": check_key(k, "Tag"), "value": str(v)} for k, v in tags.items()]
    if not rows:
        return
    insert = insert_for(store.dialect)
    stmt = insert(schema.tags)
    stmt = stmt.on_conflict_do_update(
        index_elements=[schema.tags.c.run_id, schema.tags.c.key],
        set_={"value": stmt.excluded.value},
    )
    with store.write() as conn:
        conn.execute(stmt, rows)


def start_run(
    experiment: str | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    *,
    store: Store | None = None,
) -> Run:
    """Start recording a run in ``experiment`` (created on first use) and capture its lineage."""
    experiment = experiment or os.environ.get("SHIPWAY_EXPERIMENT") or "default"
    check_name(experiment)
    if name is not None:
        check_name(name, "run")
    client = remote_client(store)
    if client is not None:
        captured = lineage.capture(None)
        _, packages = lineage.environment()
        pid = os.getpid()
        created = client.create_run(
            experiment,
            name,
            {
                "lineage": captured,
                "packages": packages,
                "pid": pid,
                "pid_started": lineage.process_started(pid),
            },
        )
        run = Run(None, created["id"], experiment, created["name"], created["user"], client=client)
    else:
        store = store or get_store()
        actor = current_actor().name
        run_id, name = create_run(store, experiment, name, actor)
        run = Run(store, run_id, experiment, name, actor)
    writer.register(run._buffer)
    with _active_lock:
        _active.append(run)
    _install_exit_hooks()
    if tags:
        run.set_tags(tags)
    return run


def create_run(
    store: Store,
    experiment: str,
    name: str | None,
    actor: str,
    *,
    captured: dict[str, Any] | None = None,
    packages: list[str] | None = None,
    pid: int | None = None,
    pid_started: int | None = None,
) -> tuple[str, str]:
    """Insert a RUNNING run and its audit entry; returns (run id, run name).

    Without ``captured`` the lineage is this process's; the server passes what a remote client
    captured in its own process (the environment hash is recomputed from ``packages`` here, so
    a client cannot file a package list under another environment's hash).
    """
    run_id = new_id()
    name = name if name is not None else f"run-{run_id[-8:]}"
    cache = store.cache
    exp_id = cache.get(("experiment", experiment))
    if exp_id is None:
        exp_id = cache[("experiment", experiment)] = ensure_experiment(store, experiment)
    if captured is None:
        captured = lineage.capture(store.settings.home)
        env_hash, packages = lineage.environment()
        pid = os.getpid()
        pid_started = lineage.process_started(pid)
    else:
        packages = sorted(set(packages or []))
        env_hash = lineage.environment_hash(packages)
        captured = {**captured, "environment": {"hash": env_hash, "packages": len(packages)}}
    row = {
        "id": run_id,
        "experiment_id": exp_id,
        "name": name,
        "status": RUNNING,
        "start_time": now_ms(),
        "user": actor,
        "host": captured.get("host"),
        "pid": pid,
        "pid_started": pid_started,
        "heartbeat_at": now_ms(),
        "environment_hash": env_hash,
        "lineage": captured,
    }
    with store.write() as conn:
        if ("environment", env_hash) not in cache:
            insert = insert_for(store.dialect)
            conn.execute(
                insert(schema.environments)
                .values(hash=env_hash, packages=packages, created_at=now_ms())
                .on_conflict_do_nothing(index_elements=[schema.environments.c.hash])
            )
        conn.execute(_INSERT_RUN, row)
        audit.append(
            conn, "run.created", f"run/{run_id}", {"experiment": experiment, "name": name}, actor=actor
        )
    cache[("environment", env_hash)] = True
    return run_id, name


def active_run() -> Run | None:
    """The most recently started run of this process that has not ended, if any."""
    with _active_lock:
        return _active[-1] if _active else None


def flush_if_live(run_id: str) -> None:
    """Make this process's own buffered points for ``run_id`` visible to readers."""
    with _active_lock:
        runs = [r for r in _active if r.id == run_id]
    for r in runs:
        r.flush()


_hooks_installed = False


def _install_exit_hooks() -> None:
    # A script that starts a run without `with` and crashes should leave FAILED, not RUNNING.
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _uncaught.append(exc)
        previous(exc_type, exc, tb)

    sys.excepthook = hook
    import atexit

    atexit.register(_end_open_runs)
    _install_sigterm_handler()


def _install_sigterm_handler() -> None:
    # SIGTERM (docker stop, Kubernetes, Slurm, plain `kill`) would end the process without
    # running atexit, losing buffered points. Turn it into SystemExit so `with` blocks and the
    # exit hook flush and record KILLED; only when nobody else handles SIGTERM already.
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, _frame: object) -> None:
        _terminated.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def _end_open_runs() -> None:
    with _active_lock:
        open_runs = list(_active)
    for run in reversed(open_runs):
        try:
            if _terminated:
                run.end(KILLED, error="terminated by SIGTERM")
            elif _uncaught:
                run.end(FAILED, error=describe_error(_uncaught[-1]))
            else:
                run.end(FINISHED)
        except Exception as exc:  # the interpreter is exiting; say so instead of a traceback
            print(f"shipway: could not end run {run.id}: {exc}", file=sys.stderr)
