"""One served model version: loaded through the registry, warmed, then checking and predicting in batches.

A host is immutable once ready: routing points at hosts, and swapping versions swaps which host an
endpoint's table entry names, so a request keeps the host it started with until it is answered.

Batches are checked against the signature as one frame (the registry's ``validate`` costs about
the same for 1 row as for 64); when a batch fails the check, or the model raises on it, each
request is retried on its own, so one bad request fails alone with its own error.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from shipway.core.errors import InvalidInput, Unavailable
from shipway.registry import LoadedModel, Signature, load_model, validate
from shipway.serving.batching import BatchConfig, Batcher, Overloaded
from shipway.serving.metrics import BoundMetrics, ServingMetrics
from shipway.serving.protocol import RequestError, Table, mismatch, model_metadata
from shipway.store import Store

# A warm-up value per signature column kind, when a column has no categories to take one from.
_WARM_VALUES: dict[str, Any] = {
    "integer": 0,
    "float": 0.0,
    "boolean": False,
    "string": "",
    "datetime": "1970-01-01",
}
WARM_CALLS = 3
# What scikit-learn says when an estimator fitted on named columns gets a plain array: the array
# fast path (below) passes one on purpose, with the columns in the order the estimator learnt.
_NAMES_WARNING = "X does not have valid feature names"


def _quiet_feature_names() -> None:
    """Silence that one scikit-learn warning, ahead of every other filter (again, if another was put
    in front of it or the filters were reset, as pytest does around each test)."""
    first = warnings.filters[0] if warnings.filters else None
    if first is not None and first[0] == "ignore" and getattr(first[1], "pattern", None) == _NAMES_WARNING:
        return
    warnings.filterwarnings("ignore", message=_NAMES_WARNING, category=UserWarning, module=r"sklearn\.")


def warm_table(signature: Signature) -> Table:
    """A one-row table built from a signature: the first category, else a zero of the column's type."""
    columns = {}
    for spec in signature.inputs:
        value = spec.categories[0] if spec.categories else _WARM_VALUES.get(spec.kind, "")
        column = np.empty(1, dtype=object) if isinstance(value, str) else np.asarray([value])
        column[0] = value
        columns[spec.name] = column
    return Table(columns, 1)


def _already_valid(signature: Signature) -> Any:
    """A check that a table is exactly what ``validate`` would hand back unchanged, for the hot path.

    The registry's ``validate`` stays the one authority: it casts and explains everything else.
    This only recognises the common case it would pass through untouched (every column present
    with the expected dtype, no missing values where none are allowed, strings within their
    categories), and skips its per-column pandas work there, which costs about 70 us a column.
    Integers arriving for a float column are widened exactly as ``validate`` widens them.
    """
    specs = [
        (c.name, c.kind, c.nullable, frozenset(c.categories) if c.categories else None)
        for c in signature.inputs
    ]
    names = {c.name for c in signature.inputs}

    def check(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        if len(columns) != len(specs) or columns.keys() != names:
            return None
        out = {}
        for name, kind, nullable, categories in specs:
            column = columns[name]
            dtype = column.dtype
            if kind == "float":
                if dtype.kind == "i" and dtype.itemsize == 8:
                    column = column.astype(np.float64)
                elif dtype != np.float64 or (not nullable and np.isnan(column).any()):
                    return None
            elif kind == "integer":
                if dtype != np.int64:
                    return None
            elif kind == "boolean":
                if dtype != np.bool_:
                    return None
            elif kind == "string" and dtype.kind == "O":
                for value in column:
                    if type(value) is not str:
                        if value is None and nullable:
                            continue
                        return None
                    if categories is not None and value not in categories:
                        return None
            else:
                return None
            out[name] = column
        return out

    return check


def _model_error(exc: Exception) -> RequestError:
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > 300:
        text = text[:297] + "..."
    return RequestError(500, "model_error", f"The model raised while predicting on valid input: {text}")


class ModelHost:
    """A loaded, warmed version behind one endpoint, with its own batch queue and metrics."""

    def __init__(
        self,
        endpoint: str,
        loaded: LoadedModel,
        config: BatchConfig | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.loaded = loaded
        self.version = loaded.version
        self.label = str(loaded.version.version)
        self.signature: Signature | None = loaded.version.model_signature
        self.columns = tuple(c.name for c in self.signature.inputs) if self.signature else None
        self._ndarray = self.signature is not None and self.signature.input_kind == "ndarray"
        self._fast = _already_valid(self.signature) if self.signature is not None else None
        self.load_seconds: float | None = None
        self.metrics: BoundMetrics | None = None
        # Set at warm-up when the model answers a 2-D array exactly as it answers the frame.
        self._as_array = False
        self._batcher: Batcher[Table] = Batcher(self._run, config or BatchConfig(), on_batch=self._observe)
        if metrics is not None:
            self.metrics = metrics.bind(endpoint, self.label, lambda: self._batcher.depth)
            self._all_metrics = metrics

    @classmethod
    def load(
        cls,
        endpoint: str,
        uri: str,
        *,
        config: BatchConfig | None = None,
        metrics: ServingMetrics | None = None,
        trust: bool = False,
        store: Store | None = None,
    ) -> ModelHost:
        """Load ``uri`` through the registry (digests verified, unsafe pickles refused) and warm it."""
        started = time.perf_counter()
        host = cls(endpoint, load_model(uri, trust=trust, store=store), config, metrics)
        host.warm()
        host.load_seconds = time.perf_counter() - started
        if metrics is not None:
            metrics.load_seconds.labels(endpoint, host.label).set(host.load_seconds)
        return host

    @property
    def uri(self) -> str:
        return self.version.uri

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a predict call."""
        return self._batcher.depth

    def warm(self) -> None:
        """Predict on a row built from the signature, so the first real request pays no first-call cost."""
        if self.signature is None:
            return  # nothing to build a row from; the first request warms the model
        table = warm_table(self.signature)
        for _ in range(WARM_CALLS):
            started = time.perf_counter()
            (result,) = self._run([table])
            self._batcher.estimate = time.perf_counter() - started
            if isinstance(result, Exception):
                raise Unavailable(
                    f"{self.uri} failed its warm-up prediction on a row built from its signature "
                    f"({result}). It was not put into service; check that the model predicts on "
                    f"{dict((k, v[0]) for k, v in table.columns.items())}."
                )
        self._as_array = self._array_answers_alike(table)

    def _array_answers_alike(self, table: Table) -> bool:
        """Whether checked rows can go to the model as one 2-D array instead of a DataFrame.

        scikit-learn spends about a millisecond checking a DataFrame's columns and dtypes on every
        predict, whatever its size: most of a one-row request. An estimator fitted on exactly the
        signature's columns, in that order, all numeric, turns the frame into the same array itself,
        so it gets the array directly. Anything else (a pipeline selecting columns by name, text,
        categories) keeps the DataFrame, as does a model whose answers on the warm-up row differ.
        """
        import pandas as pd

        if self.version.flavor != "sklearn" or self.signature is None or self._ndarray or self._fast is None:
            return False
        names = getattr(self.loaded.model, "feature_names_in_", None)
        if names is None or tuple(str(n) for n in names) != self.columns:
            return False
        if any(spec.kind not in ("integer", "float") for spec in self.signature.inputs):
            return False
        valid = self._fast(table.columns)
        if valid is None:
            return False
        _quiet_feature_names()
        try:
            framed = np.asarray(self.loaded.model.predict(pd.DataFrame(valid)))
            arrayed = np.asarray(self.loaded.model.predict(self._array(valid)))
        except Exception:
            return False
        return framed.shape == arrayed.shape and bool(np.array_equal(framed, arrayed))

    def _array(self, valid: dict[str, np.ndarray]) -> np.ndarray:
        assert self.columns is not None  # only called once the signature is known
        return np.column_stack([valid[name] for name in self.columns])

    def _set_ready(self, value: int) -> None:
        if self.metrics is not None:
            self._all_metrics.ready.labels(self.endpoint, self.label).set(value)

    def activate(self) -> None:
        """Mark the version as routed (its ready gauge reads 1)."""
        self._set_ready(1)

    def retire(self) -> None:
        """Mark the version as no longer routed (requests already queued still finish)."""
        self._set_ready(0)
        self._batcher.close()

    def metadata(self, name: str, versions: list[str]) -> dict[str, Any]:
        """V2 model metadata for this version's signature."""
        return model_metadata(name, versions, self.version.flavor, self.signature)

    async def predict(self, table: Table) -> Any:
        """Predictions for one request's rows, batched with concurrent requests."""
        try:
            return await self._batcher.submit(table, table.rows)
        except Overloaded as exc:
            raise RequestError(
                503, "overloaded", str(exc), headers=[(b"retry-after", str(exc.retry_after).encode())]
            ) from None

    def _observe(self, rows: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.observe(rows)
            self.metrics.predict_latency.observe(seconds)

    # -- the batch call: runs on the event loop or the predict thread ---------------------------

    def _frame(self, columns: dict[str, np.ndarray]) -> Any:
        import pandas as pd

        if self._fast is not None:
            valid = self._fast(columns)
            if valid is not None:
                if self._as_array:
                    _quiet_feature_names()
                    return self._array(valid)
                frame = pd.DataFrame(valid)
                return frame.to_numpy() if self._ndarray else frame
        frame = pd.DataFrame(columns)
        if self.signature is None:
            return frame
        try:
            checked = validate(frame, self.signature)
        except InvalidInput as exc:
            details = [{"field": d.get("column"), "problem": d.get("problem")} for d in (exc.details or [])]
            raise mismatch(exc.message, details) from None
        except (TypeError, ValueError, OverflowError) as exc:  # a value pandas cannot even compare
            raise mismatch(f"The input could not be checked against the model's signature: {exc}") from None
        return checked.to_numpy() if self._ndarray else checked

    def _predict(self, columns: dict[str, np.ndarray], rows: int) -> Any:
        frame = self._frame(columns)
        try:
            out = self.loaded.model.predict(frame)
        except Exception as exc:  # the model's own failure on input that passed the signature
            raise _model_error(exc) from None
        if not (hasattr(out, "iloc") and hasattr(out, "columns")):
            out = np.asarray(out)
        if out.ndim == 0 or len(out) != rows:
            raise RequestError(
                500,
                "model_error",
                f"The model returned {'a scalar' if out.ndim == 0 else len(out)} prediction(s) "
                f"for {rows} row(s).",
            )
        return out

    def _one(self, table: Table) -> Any:
        try:
            return self._predict(table.columns, table.rows)
        except RequestError as exc:
            return exc
        except Exception as exc:  # never let one request's oddity escape as a 500 with no code
            return _model_error(exc)

    def _run(self, tables: list[Table]) -> list[Any]:
        """One result per table: predictions, or the RequestError that request gets."""
        if len(tables) == 1:
            return [self._one(tables[0])]
        keys = tables[0].columns.keys()
        if any(t.columns.keys() != keys for t in tables):
            return [self._one(t) for t in tables]
        merged = {k: np.concatenate([t.columns[k] for t in tables]) for k in keys}
        total = sum(t.rows for t in tables)
        try:
            out = self._predict(merged, total)
        except Exception:
            return [self._one(t) for t in tables]  # find the request(s) at fault
        results, start = [], 0
        frame_like = hasattr(out, "iloc")
        for t in tables:
            stop = start + t.rows
            results.append(out.iloc[start:stop] if frame_like else out[start:stop])
            start = stop
        return results
