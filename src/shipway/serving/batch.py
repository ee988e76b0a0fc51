"""Batch scoring: a Parquet or CSV file in, the model's predictions out as Parquet, chunk by chunk.

The input is streamed in chunks of ``chunk_rows`` rows; each chunk is checked against the
version's signature, scored (in worker processes, or in this one) and written to its own part
file under ``<output>.parts/`` under a temporary name and then renamed, so a part that exists is
complete. ``manifest.json`` there records what the parts were made from (the input's
fingerprint, the version's manifest digest, the chunk size, columns and output kind) and
``done.jsonl`` one line per finished chunk. Running the same call again after a crash or Ctrl-C
skips the finished chunks; if the input, the version or the settings changed, the old parts are
discarded and scoring starts over. When every chunk is done the parts become the output (one
file, or a directory of Parquet part files) by a rename, and the parts folder is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shipway.core.errors import (
    Conflict,
    InvalidInput,
    MissingDependency,
    NotFound,
    PermissionDenied,
    ShipwayError,
)

__all__ = ["DEFAULT_CHUNK_ROWS", "ScoreReport", "ScoringInterrupted", "score"]

DEFAULT_CHUNK_ROWS = 100_000
PREDICTION = "prediction"
_FINGERPRINT_BYTES = 1 << 20  # the input is fingerprinted by size, mtime and its first and last MiB
_MANIFEST, _DONE, _LOCK = "manifest.json", "done.jsonl", "lock"
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz")
# Arrow types for the CSV columns the signature describes, so every block of a streamed CSV reads alike.
_CSV_TYPES = {"integer": "int64", "float": "float64", "boolean": "bool_", "string": "string"}
# About what starting a worker process costs (an interpreter, imports, loading and checking the
# model) on a busy two-core machine; scoring work shorter than this is done without workers.
_WORKER_START_S = 2.0


@dataclass(frozen=True)
class ScoreReport:
    """What a batch-scoring call did."""

    model_uri: str
    output: Path
    rows: int
    chunks: int
    resumed_chunks: int
    resumed_rows: int
    seconds: float
    workers: int
    backend: str
    restarted: str | None = None  # why parts an earlier run left were discarded, if they were

    @property
    def rows_per_s(self) -> float:
        """Rows scored by this call (resumed ones excluded) per second of its wall time."""
        return (self.rows - self.resumed_rows) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: rows, chunks, speed and where the output went."""
        resumed = f", {self.resumed_chunks:,} resumed" if self.resumed_chunks else ""
        return (
            f"Scored {_count(self.rows, 'row')} in {_count(self.chunks, 'chunk')}{resumed} with "
            f"{self.model_uri} in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s, "
            f"{_count(self.workers, 'worker')}) -> {self.output}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class ScoringInterrupted(KeyboardInterrupt):
    """Ctrl-C during scoring; finished chunks are kept and the message says how to resume."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------------------------
# The input: a Parquet file read by batches, or a CSV file read by blocks, re-cut into chunks.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    path: Path
    format: str  # parquet | csv
    names: tuple[str, ...]
    total_rows: int | None  # unknown for CSV until it is read

    def batches(self, columns: list[str], types: dict[str, str]) -> Iterator[Any]:
        """Record batches of ``columns``, streamed; an unreadable stretch says where it starts."""
        import pyarrow as pa

        if self.format == "parquet":
            import pyarrow.parquet as pq

            reader: Iterable[Any] = pq.ParquetFile(self.path).iter_batches(batch_size=65_536, columns=columns)
        else:
            import pyarrow.csv as pacsv

            column_types = {c: getattr(pa, t)() for c, t in types.items() if c in columns}
            reader = pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(block_size=8 << 20),
                convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=column_types),
            )
        rows, batches = 0, iter(reader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowInvalid) as exc:
                raise InvalidInput(f"Cannot read {self.path.name} after row {rows:,}: {exc}") from None
            rows += batch.num_rows
            yield batch

    def chunks(self, columns: list[str], types: dict[str, str], chunk_rows: int) -> Iterator[Any]:
        """Tables of exactly ``chunk_rows`` rows (the last may be shorter), whatever the file's batches,
        so chunk N always holds the same rows."""
        import pyarrow as pa

        pending: list[Any] = []
        count = 0
        for batch in self.batches(columns, types):
            while batch.num_rows:
                take = min(chunk_rows - count, batch.num_rows)
                pending.append(batch.slice(0, take))
                count += take
                batch = batch.slice(take)
                if count == chunk_rows:
                    yield pa.Table.from_batches(pending)
                    pending, count = [], 0
        if count:
            yield pa.Table.from_batches(pending)


def _open_source(path: Path) -> _Source:
    if not path.exists():
        raise NotFound(f"No input file at {path}.")
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory; give one .parquet or .csv file as the input.")
    name = path.name.lower()
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return _Source(path, "parquet", tuple(meta.schema_arrow.names), meta.metadata.num_rows)
        if name.endswith(_CSV_SUFFIXES):
            import pyarrow.csv as pacsv

            with pacsv.open_csv(path) as reader:
                return _Source(path, "csv", tuple(reader.schema.names), None)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InvalidInput(f"Cannot read {path}: {exc}") from None
    raise InvalidInput(
        f"Cannot tell the format of {path.name}: batch scoring reads Parquet "
        f"({', '.join(_PARQUET_SUFFIXES)}) and CSV ({', '.join(_CSV_SUFFIXES)}) files. "
        "Rename the file to match what it holds."
    )


def _fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and a SHA-256 of the first and last MiB: cheap for a file of any size,
    and a file rewritten in place changes at least its modification time."""
    st = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_FINGERPRINT_BYTES))
        if st.st_size > _FINGERPRINT_BYTES:
            f.seek(max(_FINGERPRINT_BYTES, st.st_size - _FINGERPRINT_BYTES))
            digest.update(f.read())
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_head_tail": digest.hexdigest()}


# ---------------------------------------------------------------------------------------------
# Part files: Arrow IPC (LZ4) when the parts are combined into one Parquet file afterwards, which
# writes and reads ~6x faster than Parquet; Parquet when the parts are the output.
# ---------------------------------------------------------------------------------------------


def _part_path(parts: Path, index: int, suffix: str) -> Path:
    return parts / f"part-{index:06d}.{suffix}"


def _writer_options(schema: Any) -> dict[str, Any]:
    """Dictionary-encode every column but floating-point ones: floats seldom repeat, so their
    dictionary only grows until the row group ends, making each write ~7x slower and larger."""
    import pyarrow as pa

    return {"use_dictionary": [f.name for f in schema if not pa.types.is_floating(f.type)]}


def _write_part(table: Any, path: Path) -> None:
    """Write ``table`` to ``path`` under a temporary name, then rename: the part is whole or absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if path.suffix == ".parquet":
        pq.write_table(table, tmp, **_writer_options(table.schema))
    else:
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        with pa.ipc.new_file(tmp, table.schema, options=options) as writer:
            writer.write_table(table)
    os.replace(tmp, path)


def _read_part(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.read_table(path)
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _part_schema(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.read_schema(path)
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema


def _part_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows if path.suffix == ".parquet" else _read_part(path).num_rows


# ---------------------------------------------------------------------------------------------
# Scoring one chunk: the same code in this process, in a worker process and in a Ray actor.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything a worker needs to score chunks; plain data, so it crosses a process boundary."""

    uri: str  # the resolved models:/NAME/VERSION, never an alias that could move mid-run
    trust: bool
    features: tuple[str, ...]
    passthrough: tuple[str, ...]
    proba: tuple[str, ...] | None  # probability column names, in predict_proba's column order
    metadata: dict[str, str]
    csv_types: dict[str, str]  # Arrow types of the CSV columns the signature describes
    parts: str = ""
    suffix: str = "arrow"


def _where(index: int | None, start: int, rows: int) -> str:
    if index is None:
        return f"a batch of {rows:,} rows"
    return f"chunk {index} (rows {start:,} to {start + rows - 1:,}, counting from 0)"


class _Scorer:
    """A loaded model and a plan: turns an input table into the output table."""

    def __init__(self, plan: _Plan, loaded: Any) -> None:
        self.plan = plan
        self.loaded = loaded

    def scored(self, table: Any, index: int | None = None, start: int = 0) -> Any:
        import numpy as np
        import pyarrow as pa

        plan, rows = self.plan, table.num_rows
        try:
            frame = table.select(list(plan.features)).to_pandas()
            outputs = _prediction_columns(self.loaded.predict(frame), rows)
            if plan.proba is not None:
                proba = np.asarray(self.loaded.predict_proba(frame))
                outputs += [(name, pa.array(proba[:, i])) for i, name in enumerate(plan.proba)]
        except InvalidInput as exc:
            where = _where(index, start, rows)
            raise InvalidInput(f"In {where}: {exc.message}", details=exc.details) from None
        except ShipwayError:
            raise
        except Exception as exc:  # the model's own failure: say where, keep its message
            where = _where(index, start, rows)
            raise ShipwayError(f"The model failed on {where}: {type(exc).__name__}: {exc}") from None
        clash = sorted({n for n, _ in outputs} & set(plan.passthrough))
        if clash:
            raise InvalidInput(f"The input already has columns {clash}; leave them out with --columns.")
        names = [*plan.passthrough, *(n for n, _ in outputs)]
        out = pa.table([table.column(c) for c in plan.passthrough] + [a for _, a in outputs], names=names)
        return out.replace_schema_metadata(plan.metadata)

    def write_part(self, index: int, start: int, table: Any) -> int:
        """Score the chunk into its part file; the rows written."""
        out = self.scored(table, index, start)
        _write_part(out, _part_path(Path(self.plan.parts), index, self.plan.suffix))
        return out.num_rows


def _prediction_columns(pred: Any, rows: int) -> list[tuple[str, Any]]:
    """``prediction`` for one output per row; ``prediction_<name or i>`` for several."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if isinstance(pred, pd.DataFrame):
        named = [(str(c), pred[c].to_numpy()) for c in pred.columns]
    else:
        arr = np.asarray(pred)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim not in (1, 2):
            raise ShipwayError(f"The model returned an array of shape {arr.shape}; expected one row per row.")
        named = [("", arr)] if arr.ndim == 1 else [(str(i), arr[:, i]) for i in range(arr.shape[1])]
    if any(len(values) != rows for _, values in named):
        raise ShipwayError(f"The model returned {len(named[0][1]):,} predictions for {rows:,} rows.")
    if len(named) == 1:
        return [(PREDICTION, pa.array(named[0][1]))]
    return [(f"{PREDICTION}_{name}", pa.array(values)) for name, values in named]


def _to_ipc(table: Any) -> bytes:
    # Arrow IPC, not pickle: pickling a sliced table sends the whole buffers it was cut from.
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


_worker: _Scorer | None = None


def _init_worker(plan: _Plan, threads: int) -> None:
    """Load the model once per worker process; Ctrl-C is the parent's to handle."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):  # N workers with all-core BLAS each would oversubscribe
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    import shipway

    _worker = _Scorer(plan, shipway.load_model(plan.uri, trust=plan.trust))


def _score_in_worker(index: int, start: int, data: bytes) -> int:
    import pyarrow as pa

    assert _worker is not None, "the pool initializer loads the model"
    return _worker.write_part(index, start, pa.ipc.open_stream(data).read_all())


# ---------------------------------------------------------------------------------------------
# The parts folder: the record of an unfinished run, and the one writer's lock on it.
# ---------------------------------------------------------------------------------------------


def _ours(name: str) -> bool:
    return name in (_MANIFEST, _DONE, _LOCK) or name.startswith("part-")


class _Parts:
    """``<output>.parts/``: the key its parts were made with, the finished chunks, and a lock."""

    def __init__(self, root: Path, suffix: str) -> None:
        self.root = root
        self.suffix = suffix
        self.recorded = 0  # chunks finished by this run
        self._lock: Any = None

    def path(self, index: int) -> Path:
        return _part_path(self.root, index, self.suffix)

    def open(self, key: dict[str, Any], resume: bool) -> tuple[dict[int, int], str | None]:
        """Lock the folder; the finished chunks to reuse (index -> rows), and why none are, if so."""
        if self.root.exists() and not all(_ours(p.name) for p in self.root.iterdir()):
            raise Conflict(
                f"{self.root} holds files that batch scoring did not write; move it away or choose "
                "another output."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._acquire()
        for stale in self.root.glob("*.tmp-*"):  # a part half-written when the last run stopped
            stale.unlink()
        manifest, done = self.root / _MANIFEST, self.root / _DONE
        earlier = json.loads(manifest.read_text()) if manifest.exists() else None
        reason = None
        if earlier is not None and resume and earlier.get("key") != key:
            reason = _why_different(earlier.get("key") or {}, key)
        finished = self._finished() if earlier is not None and resume and reason is None else {}
        if not finished:
            for path in self.root.iterdir():
                if path.name != _LOCK:
                    path.unlink()
            _write_atomic(manifest, json.dumps({"key": key, "created_at": time.time()}, indent=2))
            done.touch()
        return finished, reason

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows has no flock; one run per output is on the user
            return
        self._lock = (self.root / _LOCK).open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise Conflict(
                f"Another scoring run is writing {self.root}; wait for it to finish or choose another output."
            ) from None

    def _finished(self) -> dict[int, int]:
        finished: dict[int, int] = {}
        for line in (self.root / _DONE).read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # a line torn by a crash
                entry = json.loads(line)
                finished[int(entry["chunk"])] = int(entry["rows"])
        for index, rows in list(finished.items()):
            try:  # a part that lost its bytes (power lost before the rename reached the disk) is redone
                ok = _part_rows(self.path(index)) == rows
            except (OSError, ValueError):
                ok = False
            if not ok:
                del finished[index]
        return finished

    def record(self, index: int, start: int, rows: int) -> None:
        self.recorded += 1
        with (self.root / _DONE).open("a") as f:
            f.write(json.dumps({"chunk": index, "start": start, "rows": rows}) + "\n")

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _why_different(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("model") != new.get("model"):
        was = (old.get("model") or {}).get("uri", "another version")
        return f"the earlier parts were scored by {was}, now {new['model']['uri']}"
    if old.get("input") != new.get("input"):
        return "the input file changed since the earlier parts were scored"
    return "the chunk size, columns, --proba or output kind differ from the earlier run"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The output: one Parquet file, or a directory of Parquet part files.
# ---------------------------------------------------------------------------------------------


def _check_output(output: Path, source: Path) -> None:
    if output.resolve() == source.resolve():
        raise InvalidInput(f"The output {output} is the input file; write the predictions somewhere else.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionDenied(f"Cannot write {output}: {exc.strerror} ({output.parent}).") from None
    if not os.access(output.parent, os.W_OK):
        raise PermissionDenied(f"Cannot write {output}: {output.parent} is not writable.")
    if output.is_dir() and not all(p.name.startswith("part-") for p in output.iterdir()):
        raise Conflict(f"{output} is a directory with other files in it; choose an empty or new output.")


def _finish(parts: _Parts, chunks: list[int], output: Path, directory: bool) -> int:
    """Turn the parts into the output, which appears by a rename; the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [parts.path(i) for i in chunks]
    schemas = [_part_schema(p) for p in paths]
    schema = schemas[0]
    if any(s != schema for s in schemas):  # e.g. a column all-null in one chunk and typed in another
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"The scored chunks do not share one schema: {exc}") from None
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    rows = 0
    try:
        if directory:
            staging.mkdir()
            for index, path, part_schema in zip(chunks, paths, schemas, strict=True):
                target = _part_path(staging, index, "parquet")
                if part_schema == schema:
                    os.link(path, target)  # the parts stay until the output is in place
                else:
                    pq.write_table(_read_part(path).cast(schema), target, **_writer_options(schema))
                rows += pq.read_metadata(target).num_rows
            if output.exists():  # an earlier output of this command (checked to hold only part files)
                shutil.rmtree(output)
        else:
            with pq.ParquetWriter(staging, schema, **_writer_options(schema)) as writer:
                for path in paths:
                    table = _read_part(path)
                    writer.write_table(table if table.schema == schema else table.cast(schema))
                    rows += table.num_rows
        os.replace(staging, output)
    except BaseException:
        _discard(staging)
        raise
    return rows


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The progress bar.
# ---------------------------------------------------------------------------------------------


class _Progress:
    """A Rich bar with rows done and rows/s, on stderr; does nothing when switched off."""

    def __init__(self, enabled: bool, label: str, total: int | None) -> None:
        self.bar: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class Rows(ProgressColumn):
            def render(self, task: Any) -> Text:
                total = f"/{task.total:,.0f}" if task.total is not None else ""
                return Text(f"{task.completed:,.0f}{total} rows")

        class RowsPerSecond(ProgressColumn):
            def render(self, task: Any) -> Text:
                scored = task.completed - task.fields["resumed"]
                return Text(f"{scored / task.elapsed:,.0f} rows/s" if task.elapsed and scored else "")

        self.bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=24),
            Rows(),
            RowsPerSecond(),
            TimeElapsedColumn(),
            console=Console(stderr=True, highlight=False, markup=False),
        )
        self.task = self.bar.add_task(label, total=total, resumed=0)
        self.bar.start()

    def advance(self, rows: int, *, resumed: bool = False) -> None:
        if self.bar is not None:
            extra = {"resumed": self.bar.tasks[0].fields["resumed"] + rows} if resumed else {}
            self.bar.update(self.task, advance=rows, **extra)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------------------------
# score()
# ---------------------------------------------------------------------------------------------


def score(
    model_uri: str,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int | None = None,
    columns: Iterable[str] | None = None,
    proba: bool = False,
    resume: bool = True,
    backend: str = "local",
    progress: bool = True,
    trust: bool = False,
) -> ScoreReport:
    """Score a Parquet or CSV file with a registered version and write the predictions as Parquet.

    ``model_uri`` is ``NAME@ALIAS``, ``NAME/VERSION``, ``NAME`` or a ``models:/`` URI. ``columns``
    names the input columns copied to the output (default: all of them). An ``output`` ending in
    ``/`` (or an existing directory) gets one Parquet file per chunk instead of a single file.
    """
    started = time.perf_counter()
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # The check multiprocessing makes itself: a worker process is importing the caller's script.
        raise ShipwayError(
            "score() was called while a worker process imported your script: in a script, call it under "
            "`if __name__ == '__main__':` (each worker process imports the script that started it)."
        )
    if chunk_rows < 1:
        raise InvalidInput(f"--chunk-rows must be at least 1, not {chunk_rows}.")
    if workers is not None and workers < 1:
        raise InvalidInput(f"--workers must be at least 1, not {workers}.")
    if backend not in ("local", "ray"):
        raise InvalidInput(f"Unknown backend {backend!r}; use 'local' or 'ray'.")
    directory = str(output).endswith(("/", os.sep)) or Path(output).is_dir()
    source_path, output = Path(input), Path(output)
    source = _open_source(source_path)
    _check_output(output, source_path)
    if backend == "ray":
        _import_ray()  # a missing extra is reported before the model is loaded

    import shipway
    from shipway.serving.serve import parse_target

    loaded = shipway.load_model(parse_target(model_uri).uri, trust=trust)
    plan = _make_plan(loaded, source, columns, proba, trust)
    workers = workers or os.cpu_count() or 1
    if backend == "ray":
        rows = _score_with_ray(plan, source, output, directory, chunk_rows, workers, progress)
        seconds = time.perf_counter() - started
        return ScoreReport(plan.uri, output, rows, -(-rows // chunk_rows), 0, 0, seconds, workers, "ray")

    parts = _Parts(output.with_name(output.name + ".parts"), "parquet" if directory else "arrow")
    plan = replace(plan, parts=str(parts.root), suffix=parts.suffix)
    key = {
        "input": {"format": source.format, **_fingerprint(source_path)},
        "model": {"uri": plan.uri, "manifest_digest": loaded.version.manifest_digest},
        "chunk_rows": chunk_rows,
        "columns": list(plan.passthrough),
        "proba": plan.proba is not None,
        "output": "directory" if directory else "file",
    }
    finished, restarted = parts.open(key, resume)
    if source.total_rows is not None:  # no more workers than chunks left to score
        workers = max(1, min(workers, -(-source.total_rows // chunk_rows) - len(finished)))
    bar = _Progress(progress, plan.uri, source.total_rows)
    try:
        chunks, workers = _run(plan, loaded, source, chunk_rows, workers, finished, parts, bar)
        if not chunks:
            raise InvalidInput(f"{source_path} has no rows; there is nothing to score.")
        rows = _finish(parts, chunks, output, directory)
    except ShipwayError as exc:
        if isinstance(exc, InvalidInput) or not parts.recorded:
            raise
        raise type(exc)(
            f"{exc.message} Kept {_count(parts.recorded, 'finished chunk')} in {parts.root}; running the "
            "same command again resumes after them.",
            details=exc.details,
        ) from None
    except KeyboardInterrupt:
        raise ScoringInterrupted(
            f"Interrupted. Finished chunks are kept in {parts.root}; run the same command again to resume "
            "(--restart starts over)."
        ) from None
    finally:
        bar.stop()
        parts.close()
    shutil.rmtree(parts.root, ignore_errors=True)
    seconds = time.perf_counter() - started
    resumed_rows = sum(finished.values())
    return ScoreReport(
        plan.uri, output, rows, len(chunks), len(finished), resumed_rows, seconds, workers, "local", restarted
    )


def _make_plan(
    loaded: Any, source: _Source, columns: Iterable[str] | None, proba: bool, trust: bool
) -> _Plan:
    version = loaded.version
    signature = version.model_signature
    features = tuple(c.name for c in signature.inputs) if signature is not None else source.names
    missing = [c for c in features if c not in source.names]
    if missing:
        raise InvalidInput(
            f"{source.path.name} lacks columns {version.uri} needs: {missing}. It has {list(source.names)}.",
            details=[{"column": c, "problem": "is missing"} for c in missing],
        )
    passthrough = tuple(source.names if columns is None else columns)
    unknown = [c for c in passthrough if c not in source.names]
    if unknown:
        raise InvalidInput(f"--columns names {unknown}, which {source.path.name} does not have.")
    proba_names = None
    if proba:
        classes = getattr(loaded.model, "classes_", None)
        if not hasattr(loaded.model, "predict_proba") or classes is None:
            raise InvalidInput(
                f"{version.uri} ({version.flavor}) gives no class probabilities; drop --proba."
            )
        proba_names = tuple(f"proba_{c}" for c in classes)
    taken = sorted({PREDICTION, *(proba_names or ())} & set(passthrough))
    if taken:
        raise InvalidInput(f"The input already has columns {taken}; leave them out with --columns.")
    metadata = {
        "shipway.model": version.name,
        "shipway.version": str(version.version),
        "shipway.model_uri": version.uri,
        "shipway.manifest_digest": version.manifest_digest,
    }
    inputs = signature.inputs if signature is not None else ()
    types = {c.name: _CSV_TYPES[c.kind] for c in inputs if c.kind in _CSV_TYPES}
    return _Plan(version.uri, trust, features, passthrough, proba_names, metadata, types)


def _run(
    plan: _Plan,
    loaded: Any,
    source: _Source,
    chunk_rows: int,
    workers: int,
    finished: dict[int, int],
    parts: _Parts,
    bar: _Progress,
) -> tuple[list[int], int]:
    """Score every chunk not finished yet; the indexes of all the chunks, and the workers used.

    The first chunk is scored here and timed: workers start only if the chunks left would take
    this process longer than a worker takes to start.
    """
    read = list(dict.fromkeys([*plan.passthrough, *plan.features]))
    indexes: list[int] = []

    def todo() -> Iterator[tuple[int, int, Any]]:
        for index, table in enumerate(source.chunks(read, plan.csv_types, chunk_rows)):
            indexes.append(index)
            if finished.get(index) == table.num_rows:
                bar.advance(table.num_rows, resumed=True)
            else:
                yield index, index * chunk_rows, table

    def done(index: int, start: int, rows: int) -> None:
        parts.record(index, start, rows)
        bar.advance(rows)

    scorer = _Scorer(plan, loaded)
    tasks = todo()
    for index, start, table in tasks:
        began = time.perf_counter()
        done(index, start, scorer.write_part(index, start, table))
        if workers > 1 and source.total_rows is not None:  # a CSV's length is unknown: assume it is long
            left = -(-source.total_rows // chunk_rows) - len(indexes) - sum(i > index for i in finished)
            if left * (time.perf_counter() - began) * (1 - 1 / workers) < _WORKER_START_S:
                workers = 1
        break
    if workers == 1:
        for index, start, table in tasks:
            done(index, start, scorer.write_part(index, start, table))
    else:
        _run_pool(plan, scorer, tasks, workers, done)
    return indexes, workers


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


_Pending = dict[Future[int], tuple[int, int, Any]]  # a worker's chunk: index, first row, table


def _run_pool(
    plan: _Plan,
    local: _Scorer,
    tasks: Iterator[tuple[int, int, Any]],
    workers: int,
    done: Callable[[int, int, int], None],
) -> None:
    """Score ``tasks`` in ``workers`` spawned processes, each loading the model once.

    Starting a worker (an interpreter, imports, loading and checking the model) takes seconds, so
    until one of them has finished a chunk this process scores chunks too; if it runs out of chunks
    before then, it scores the ones the workers hold and stops them, so a small job is never slower
    for asking for workers.
    """
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(plan, max(1, (os.cpu_count() or 1) // workers)),
    )
    pending: _Pending = {}

    def collect(futures: Iterable[Future[int]]) -> None:
        for future in futures:
            index, start, _ = pending.pop(future)
            done(index, start, future.result())

    def workers_up() -> bool:
        return any(f.done() for f in pending)

    up, submitted = False, 0
    try:
        for index, start, table in tasks:
            up = up or workers_up()
            if not up and len(pending) >= workers:
                done(index, start, local.write_part(index, start, table))
                continue
            while len(pending) >= 2 * workers:  # bounded read-ahead: memory holds a few chunks
                collect(wait(pending, return_when=FIRST_COMPLETED).done)
            # The first submissions start the processes; they inherit an ignored Ctrl-C, which the
            # parent alone handles, from their first instruction on.
            with _ctrl_c_ignored() if submitted < workers else contextlib.nullcontext():
                pending[pool.submit(_score_in_worker, index, start, _to_ipc(table))] = (index, start, table)
            submitted += 1
        if not (up or workers_up()):
            for future, (index, start, table) in list(pending.items()):
                if not future.done():
                    del pending[future]
                    done(index, start, local.write_part(index, start, table))
            _stop(pool, pending, done)
            return
        while pending:
            collect(wait(pending, return_when=FIRST_COMPLETED).done)
    except BrokenProcessPool:
        _stop(pool, pending, done)
        raise ShipwayError(
            "A scoring worker process stopped (out of memory, killed, or it could not load the model: "
            "its error is above). Short of memory, try fewer --workers or a smaller --chunk-rows."
        ) from None
    except BaseException:
        _stop(pool, pending, done)
        raise
    pool.shutdown()


def _stop(pool: ProcessPoolExecutor, pending: _Pending, done: Callable[[int, int, int], None]) -> None:
    """Keep the chunks that finished, and end the workers now rather than after their current chunk."""
    for future, (index, start, _) in list(pending.items()):
        if future.done() and not future.cancelled() and future.exception() is None:
            done(index, start, future.result())
    # The executor has no public way to stop a running task (a chunk cut short is redone on resume),
    # and shutdown() forgets its processes: take them first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# The Ray backend (shipway[ray]): Ray Data reads the input and scores it in actors that each load
# the model once. No resume: Ray retries failed tasks itself.
# ---------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        purpose = "Batch scoring with backend='ray'"
        raise MissingDependency.for_extra("ray", exc.name or "ray", purpose) from None
    return ray


class _RayScorer:
    """A Ray Data actor: loads the model once, then scores each batch it is given."""

    def __init__(self, plan: _Plan) -> None:
        import shipway

        self.scorer = _Scorer(plan, shipway.load_model(plan.uri, trust=plan.trust))

    def __call__(self, batch: Any) -> Any:
        return self.scorer.scored(batch)


def _score_with_ray(
    plan: _Plan, source: _Source, output: Path, directory: bool, chunk_rows: int, workers: int, progress: bool
) -> int:
    """Score with Ray Data; the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ray = _import_ray()
    # The actors reach the same store as this process (on a cluster: PostgreSQL and S3, or a server).
    env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("SHIPWAY_")}}
    if not ray.is_initialized():
        ray.init(runtime_env=env, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    read = list(dict.fromkeys([*plan.passthrough, *plan.features]))
    if source.format == "parquet":
        data = ray.data.read_parquet(str(source.path), columns=read)
    else:
        import pyarrow.csv as pacsv

        types = {c: getattr(pa, t)() for c, t in plan.csv_types.items() if c in read}
        options = pacsv.ConvertOptions(include_columns=read, column_types=types)
        data = ray.data.read_csv(str(source.path), convert_options=options)
    scored = data.map_batches(
        _RayScorer,
        fn_constructor_args=(plan,),
        batch_size=chunk_rows,
        batch_format="pyarrow",
        # An autoscaling pool: a fixed one holding every CPU would starve the read tasks feeding it.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        runtime_env=env,
    )
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    rows, writer = 0, None
    try:
        if directory:
            scored.write_parquet(str(staging))
            rows = sum(pq.read_metadata(p).num_rows for p in staging.glob("*.parquet"))
            if output.exists():
                shutil.rmtree(output)
        else:
            for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
                writer = writer or pq.ParquetWriter(staging, batch.schema, **_writer_options(batch.schema))
                writer.write_table(batch)
                rows += batch.num_rows
            if writer is None:
                raise InvalidInput(f"{source.path} has no rows; there is nothing to score.")
            writer.close()
        os.replace(staging, output)
    except ShipwayError:
        _discard(staging)
        raise
    except Exception as exc:  # a task error from an actor: its cause names the model's failure
        _discard(staging)
        cause = getattr(exc, "cause", None) or exc
        raise ShipwayError(f"Scoring with Ray failed: {getattr(cause, 'message', None) or cause}") from None
    return rows
