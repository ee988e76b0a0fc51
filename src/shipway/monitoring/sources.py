"""What live monitoring reads: the model version(s) a reference names, a time window, the version's
reference profile, and the prediction log's batches with their metadata columns found by name."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from shipway.core.errors import InvalidInput, NotFound
from shipway.data.reference import Profile

if TYPE_CHECKING:
    import pyarrow as pa

    from shipway.registry import ModelVersion
    from shipway.store import Store

T = TypeVar("T")
_WINDOW = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_WINDOW = timedelta(days=400)
LOG_METADATA_KEY = b"shipway.prediction_log"
PREFETCH = 2  # batches of the log read ahead while the current one is profiled
PREDICTION = "prediction"


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


def parse_window(window: str | timedelta) -> timedelta:
    """``15m``, ``1h``, ``24h``, ``7d`` (any whole number of m, h, d or w), or a timedelta."""
    if isinstance(window, timedelta):
        length = window
    else:
        m = _WINDOW.match(window) if isinstance(window, str) else None
        if m is None:
            raise InvalidInput(
                f"Window {window!r} is not a duration: use a whole number and a unit, such as 15m, 1h, "
                "24h or 7d."
            )
        length = timedelta(**{_UNITS[m[2]]: int(m[1])})
    if length <= timedelta(0) or length > MAX_WINDOW:
        raise InvalidInput(f"Window {window!r} must be longer than 0 and at most {MAX_WINDOW.days} days.")
    return length


def parse_instant(value: datetime | str | None) -> datetime:
    """A moment in UTC: a datetime (naive ones are UTC), an ISO 8601 text, or None for now."""
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{value!r} is not a date and time: use ISO 8601, such as 2024-05-01T12:00 (UTC)."
            ) from None
    if not isinstance(value, datetime):
        raise InvalidInput(f"until must be a datetime or an ISO 8601 text, not {type(value).__name__}.")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """The half-open time range [start, end) of a report, and its length as the user wrote it."""

    start: datetime
    end: datetime
    label: str

    @classmethod
    def ending(cls, window: str | timedelta, until: datetime | str | None) -> Window:
        length = parse_window(window)
        end = parse_instant(until)
        label = window if isinstance(window, str) else _label(length)
        return cls(end - length, end, label.strip())

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def before(self) -> Window:
        """The window of the same length just before this one."""
        return Window(self.start - self.length, self.start, self.label)

    def describe(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC ({self.label})"

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "window": self.label}


def _label(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


# ---------------------------------------------------------------------------------------------
# Which versions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A model and, when the reference named one (``churn@prod``, ``churn/3``), its version."""

    name: str
    version: ModelVersion | None
    text: str

    @property
    def version_label(self) -> str | None:
        """The version as the prediction log writes it (``"3"``), or None for every version."""
        return str(self.version.version) if self.version is not None else None


def resolve_target(model_ref: str, version: int | str | None, store: Store) -> Target:
    """The model and version ``churn@prod``, ``churn/3``, ``churn`` or ``models:/…`` names; NotFound for
    an unknown model, version or alias. ``NAME@ENV`` of a model deployed in ``ENV`` names the version
    its deployment serves (see :func:`_serving_version`)."""
    from shipway.registry import get_version, list_versions, parse_model_uri

    if not isinstance(model_ref, str) or not model_ref.strip():
        raise InvalidInput("Name a model: NAME@ALIAS (churn@prod), NAME/VERSION (churn/3) or NAME.")
    text = model_ref.strip()
    uri = text if text.startswith("models:/") else f"models:/{text}"
    try:
        name, number, alias = parse_model_uri(uri)
    except InvalidInput:
        raise InvalidInput(
            f"{model_ref!r} does not name a model: use NAME@ALIAS (churn@prod), NAME/VERSION (churn/3) "
            "or NAME for every version."
        ) from None
    if version is not None:
        try:
            wanted = int(version)
        except (TypeError, ValueError):
            raise InvalidInput(f"version must be a version number, not {version!r}.") from None
        if number is not None and number != wanted:
            raise InvalidInput(f"{model_ref!r} names version {number}, but version={wanted} was given.")
        if alias is not None:
            raise InvalidInput(f"{model_ref!r} names a version by its alias; leave out version={wanted}.")
        number = wanted
    if number is None and alias is None:
        list_versions(name, store=store)  # NotFound for an unknown model, naming the registered ones
        return Target(name, None, text)
    if alias is not None:
        serving = _serving_version(name, alias, store)
        if serving is not None:
            return Target(name, get_version(name, serving, store=store), text)
    return Target(name, get_version(name, number, alias=alias, store=store), text)


def _serving_version(name: str, environment: str, store: Store) -> int | None:
    """The stable version of ``name``'s deployment in ``environment``, if it has one.

    ``churn@prod`` of a deployed model means the traffic prod serves: after a rollback, the alias
    (governance's record) still names the candidate, but the stable version answers.
    """
    from shipway.rollout import get_deployment

    try:
        return get_deployment(name, environment, store=store).stable_version
    except NotFound:
        return None


def newest_version(name: str, labels: set[str], store: Store) -> ModelVersion:
    """Of the versions of ``name`` whose labels are in ``labels``, the newest (else the newest of all)."""
    from shipway.registry import get_version

    numbers = sorted((int(v) for v in labels if v.isdigit()), reverse=True)
    for number in numbers:
        try:
            return get_version(name, number, store=store)
        except NotFound:
            continue
    return get_version(name, store=store)


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A version's reference profile and what it was made from."""

    profile: Profile
    source: str  # "training dataset churn-train version 2"
    target: str | None  # the dataset's target column (not a feature)


def reference_of(version: ModelVersion, store: Store) -> Reference:
    """The profile of ``version``'s training dataset: stored, or built now and stored (NotFound when
    its run logged no training dataset)."""
    from shipway.data.dataset_profiles import dataset_profile, training_dataset
    from shipway.data.datasets import get_dataset

    train = training_dataset(version.lineage)
    if train is None:
        how = (
            "its run logged no training dataset"
            if version.run_id
            else "it was registered without a run, so its training data is unknown"
        )
        raise NotFound(
            f"{version.uri} has no reference profile: {how}. Log the training data in the run that "
            "trains the model (run.log_dataset(frame, name=..., role='train')) and register from that "
            "run, or pass reference= (a DataFrame, parquet path or Profile) to compare with."
        )
    dataset = get_dataset(train["name"], train["version"], store=store)
    profile = dataset_profile(dataset, store=store)
    target = train.get("target") or dataset.schema.get("target")
    return Reference(profile, f"training dataset {dataset.name!r} version {dataset.version}", target)


def given_reference(reference: Any) -> Reference:
    """A reference passed by the caller: a Profile, a DataFrame, an Arrow table or a parquet path."""
    import os

    if isinstance(reference, Profile):
        return Reference(reference, "the reference given", None)
    if isinstance(reference, str | os.PathLike):
        return Reference(Profile.from_parquet(reference), f"the reference file {reference}", None)
    if hasattr(reference, "columns") or hasattr(reference, "column_names"):
        return Reference(Profile.from_frame(reference), "the reference given", None)
    raise InvalidInput(
        f"reference must be a Profile, a pandas DataFrame, an Arrow table or a parquet path, "
        f"not {type(reference).__name__}."
    )


def input_columns(version: ModelVersion) -> list[str] | None:
    """The signature's input columns that the prediction log keeps (not the PII ones); None without
    a signature."""
    if not version.schema:
        return None
    return [c["name"] for c in version.schema.get("inputs", []) if not c.get("pii")]


def pii_columns(version: ModelVersion) -> list[str]:
    if not version.schema:
        return []
    return [c["name"] for c in version.schema.get("inputs", []) if c.get("pii")]


# ---------------------------------------------------------------------------------------------
# The prediction log
# ---------------------------------------------------------------------------------------------


def log_batches(
    name: str,
    window: Window,
    *,
    version: str | None,
    store: Store,
    include_mirrored: bool = False,
) -> Iterator[LogBatch]:
    """The logged rows of ``name`` (``version`` or every version) in ``window``, batch by batch."""
    try:
        from shipway.serving import iter_prediction_batches
    except ImportError as err:  # the serve extra is missing
        from shipway.core.errors import MissingDependency

        raise MissingDependency.for_extra(
            "serve", err.name or "orjson", "Reading the prediction log"
        ) from err
    batches = iter_prediction_batches(
        name,
        since=window.start,
        until=window.end,
        version=version,
        include_mirrored=include_mirrored,
        store=store,
    )
    for batch in prefetched(batches, PREFETCH):
        yield LogBatch(batch)


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced in a thread up to ``depth`` ahead: fetching and decoding the next file
    (which releases the GIL) overlaps with profiling this one. An error is raised where it would
    have been; stopping early stops the thread."""
    import queue
    import threading

    if depth < 1:
        yield from items
        return
    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer("item", item):
                    return
            offer("end", None)
        except BaseException as err:  # handed to the consumer, raised there
            offer("error", err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # the reader's open files and temporary folders, now, on this thread

    thread = threading.Thread(target=produce, name="shipway-log-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ahead.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                ahead.get_nowait()
        thread.join(timeout=5)


class LogBatch:
    """One batch of the prediction log, with its metadata and prediction columns found by name (the
    log renames a metadata column to ``_time`` and so on when a feature has its name)."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch = batch
        info: dict[str, Any] = {}
        raw = (batch.schema.metadata or {}).get(LOG_METADATA_KEY)
        if raw:
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
        self.renamed: dict[str, str] = dict(info.get("renamed") or {})
        names = batch.schema.names
        listed = info.get("predictions")
        if isinstance(listed, list) and all(isinstance(p, str) for p in listed):
            self.predictions = [p for p in listed if p in names]
        else:
            self.predictions = [n for n in names if n == PREDICTION or n.startswith(PREDICTION + ".")]
        listed_features = info.get("features")
        if isinstance(listed_features, list):
            self.features = [f for f in listed_features if f in names]
        else:
            meta = {self.meta_name(m) for m in _METADATA}
            self.features = [n for n in names if n not in meta and n not in self.predictions]

    def __len__(self) -> int:
        return self.batch.num_rows

    def meta_name(self, name: str) -> str:
        return self.renamed.get(name, name)

    def meta(self, name: str) -> Any:
        """A metadata column (``status``, ``arm``, ...) by its usual name, or None if absent."""
        real = self.meta_name(name)
        return self.batch.column(real) if real in self.batch.schema.names else None

    def prediction_name(self, column: str) -> str:
        """A prediction column under its logged name, as reports show it (``prediction.proba``)."""
        for usual, real in self.renamed.items():
            if real == column:
                return usual
        return column

    def filter(self, mask: Any) -> LogBatch:
        return self._with(self.batch.filter(mask))

    def head(self, rows: int) -> LogBatch:
        return self._with(self.batch.slice(0, rows))

    def _with(self, batch: pa.RecordBatch) -> LogBatch:
        out = LogBatch.__new__(LogBatch)
        out.batch = batch
        out.renamed, out.predictions, out.features = self.renamed, self.predictions, self.features
        return out


_METADATA = (
    "request_id",
    "row",
    "time",
    "model",
    "version",
    "arm",
    "status",
    "error",
    "latency_ms",
    "mirrored",
    "rollout_id",
)


def answered(batch: LogBatch) -> LogBatch:
    """The rows the version answered (status 200); refused and failed requests are left out."""
    import pyarrow.compute as pc

    status = batch.meta("status")
    if status is None:
        return batch
    ok = pc.fill_null(pc.equal(status, 200), False)
    return batch if pc.all(ok).as_py() else batch.filter(ok)  # most batches: no copy


def not_answered(batch: LogBatch) -> LogBatch:
    """The rows of requests the server refused or failed (their inputs are logged as sent)."""
    import pyarrow.compute as pc

    status = batch.meta("status")
    if status is None:
        return batch.head(0)
    refused = pc.fill_null(pc.not_equal(status, 200), False)
    return batch.filter(refused) if pc.any(refused).as_py() else batch.head(0)


def no_predictions(target: Target, window: Window) -> NotFound:
    which = f"version {target.version.version}" if target.version is not None else "any version"
    return NotFound(
        f"No predictions of {target.name!r} ({which}) were logged from {window.describe()}: there is "
        "nothing to compare. Check that the model is served with the prediction log on, or widen "
        "--window (or move --until)."
    )
