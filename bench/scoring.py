"""Batch scoring: ``shipway.serving.batch.score`` against plain MLflow scoring a Parquet file by chunks.

Run by hand from the repository root::

    .venv/bin/python bench/scoring.py            # full run: 1,000,000 rows, ~3 min on 2 cores
    .venv/bin/python bench/scoring.py --quick    # smoke run: 200,000 rows
    .venv/bin/python bench/scoring.py --only shipway

The input is one Parquet file (pyarrow's defaults) of N rows: an ``id`` column and 20 standard-normal
float features ``f0``..``f19``, written once by this script in a fresh folder under ``bench/.work``.
The model is the same on both sides: a scikit-learn ``LogisticRegression`` fitted on the first 10,000
rows against a seeded linear rule, registered with those rows' first 100 as its input example (so both
tools check a signature on every chunk). Each tool runs in its own fresh worker process (MLflow with
the interpreter of ``bench/.venvs/mlflow``, the environment ``tracking.py`` and ``registry.py`` use)
on a fresh store; registering is untimed.

Timed, each the median of ``repeats`` runs after one untimed warm-up run in the same process, wall
time of the whole call:

* MLflow: ``mlflow.pyfunc.load_model("models:/churn/1")``, then for each 100,000-row batch of
  ``pyarrow.parquet.ParquetFile.iter_batches``: ``to_pandas``, ``predict`` on the 20 features, and
  the batch plus a ``prediction`` column written with one ``ParquetWriter``. One process: MLflow
  has no batch scorer without Spark (``spark_udf``), so this is what a user writes by hand. It does
  not resume.
* Shipway: ``score("churn/1", input, output, workers=W, progress=False)`` for W = 1 and 2 (the
  same 100,000-row chunks; it loads and checks the model, keeps resumable parts, and combines them
  into one file). With ``workers=2``, ``score`` times the first chunk and starts no worker processes
  when the rest would take less than starting them (about 2 s): the row "2 workers, as asked" is
  what a user gets, and the row "2 worker processes, forced" sets that threshold to 0 so that every
  run starts two fresh worker processes.
* The floor: in the Shipway worker, the whole file as one DataFrame and one ``predict`` call on it,
  by scikit-learn alone and by Shipway's ``LoadedModel.predict`` (signature checks included), with
  no reading or writing.

The table shows rows/s and how many times faster Shipway is than MLflow. The script checks that both
tools wrote the same predictions. Results go to ``bench/results/scoring.json``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _harness
from _harness import NAMES, Bench, fmt_ratio, fmt_value, progress, render_table

RESULTS_FILE = _harness.BENCH_DIR / "results" / "scoring.json"
WORKER_TIMEOUT_S = 3600
FULL = {"rows": 1_000_000, "features": 20, "chunk_rows": 100_000, "repeats": 3, "seed": 7}
QUICK = {**FULL, "rows": 200_000, "repeats": 2}


# ---------------------------------------------------------------------------------------------
# Worker code, copied verbatim into the worker scripts (see ``worker_source``); it may use only the
# standard library, numpy, pandas, pyarrow, scikit-learn and the tool measured.
# ---------------------------------------------------------------------------------------------


def make_model(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """The LogisticRegression both tools register, fitted on the input's first 10,000 rows, and those rows."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    names = [f"f{i}" for i in range(cfg["features"])]
    first = next(pq.ParquetFile(cfg["input"]).iter_batches(batch_size=10_000, columns=names))
    frame = first.to_pandas()
    weights = np.random.default_rng(cfg["seed"]).normal(size=len(names))
    return LogisticRegression(max_iter=1000).fit(frame, (frame.to_numpy() @ weights > 0).astype(int)), frame


def timed(run: Any, repeats: int) -> dict[str, Any]:
    """Median wall time of ``repeats`` calls of ``run()`` after one untimed warm-up call."""
    run()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(samples), "samples_s": samples}


def shipway_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Register the model, then time the floor and ``score`` with 1 and 2 workers."""
    import pyarrow.parquet as pq

    import shipway
    from shipway.serving.batch import score

    model, example = make_model(cfg)
    shipway.register_model(model, name="churn", input_example=example.head(100))
    rows, out = cfg["rows"], {}

    loaded = shipway.load_model("models:/churn/1")
    frame = pq.read_table(cfg["input"], columns=list(example.columns)).to_pandas()
    for name, predict in (("floor_sklearn", loaded.model.predict), ("floor_shipway", loaded.predict)):
        result = timed(lambda predict=predict: predict(frame), cfg["repeats"])
        out[name] = {**result, "rows_per_s": rows / result["seconds"]}
        progress(f"shipway {name}: {rows / result['seconds']:,.0f} rows/s")

    import shipway.serving.batch as batch

    for key, workers, start_s in (("workers_1", 1, None), ("workers_2", 2, None), ("forced_2", 2, 0.0)):
        target = str(Path(cfg["tmp"]) / f"shipway-{key}.parquet")
        if start_s is not None:
            batch._WORKER_START_S = start_s  # the benchmark's knob: always start the workers
        used: list[int] = []

        def run(workers: int = workers, target: str = target, used: list[int] = used) -> None:
            chunk_rows = cfg["chunk_rows"]
            report = score(
                "churn/1", cfg["input"], target, chunk_rows=chunk_rows, workers=workers, progress=False
            )
            used.append(report.workers)

        result = timed(run, cfg["repeats"])
        out[key] = {**result, "rows_per_s": rows / result["seconds"], "output": target, "workers_used": used}
        progress(f"shipway score, {key}: {rows / result['seconds']:,.0f} rows/s (worker processes: {used})")
    return out


def mlflow_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Log and register the model, then time chunked pyfunc scoring of the file."""
    import logging
    import warnings

    import mlflow
    import mlflow.sklearn
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    tmp = Path(cfg["tmp"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    mlflow.create_experiment("bench", artifact_location=str(tmp / "artifacts"))
    mlflow.set_experiment("bench")
    model, example = make_model(cfg)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model, name="model", registered_model_name="churn", input_example=example.head(100)
        )
    features, target = list(example.columns), str(tmp / "mlflow.parquet")

    def run() -> None:
        scorer = mlflow.pyfunc.load_model("models:/churn/1")
        writer = None
        for batch in pq.ParquetFile(cfg["input"]).iter_batches(batch_size=cfg["chunk_rows"]):
            frame = batch.to_pandas()
            scored = pa.Table.from_batches([batch]).append_column(
                "prediction", pa.array(scorer.predict(frame[features]))
            )
            writer = writer or pq.ParquetWriter(target, scored.schema)
            writer.write_table(scored)
        writer.close()

    result = timed(run, cfg["repeats"])
    progress(f"mlflow chunked pyfunc: {cfg['rows'] / result['seconds']:,.0f} rows/s")
    return {"chunked": {**result, "rows_per_s": cfg["rows"] / result["seconds"], "output": target}}


WORKER_IMPORTS = """\
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
"""
WORKERS = {"shipway": shipway_worker, "mlflow": mlflow_worker}


# ---------------------------------------------------------------------------------------------
# The parent.
# ---------------------------------------------------------------------------------------------


def write_input(path: Path, sizes: dict[str, Any]) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(sizes["seed"])
    n, k = sizes["rows"], sizes["features"]
    values = rng.normal(size=(n, k))
    pq.write_table(pa.table({"id": np.arange(n), **{f"f{i}": values[:, i] for i in range(k)}}), path)


def ensure_mlflow_venv() -> tuple[Path, str]:
    """Reuse bench/.venvs/mlflow if MLflow, scikit-learn and pyarrow import there; else install them."""

    def install(python: Path) -> None:
        if not python.exists():
            _harness.create_mlflow_venv(python)
        _harness.pip_install(python, "mlflow", "scikit-learn", "pyarrow")

    failure = f"MLflow, scikit-learn or pyarrow does not import in {_harness.MLFLOW_VENV}; see pip's output."
    return _harness.ensure_mlflow_venv(("sklearn", "pyarrow", "mlflow"), install, failure)


def run_worker(tool: str, python: Path, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    script = tmp / f"{tool}_worker.py"
    script.write_text(_harness.worker_script(WORKER_IMPORTS, (make_model, timed), WORKERS[tool]))
    env = _harness.worker_env(tool, tmp / f"{tool}-home")
    return _harness.run_script(python, script, cfg, tmp, env, WORKER_TIMEOUT_S, f"{tool} worker")


def same_predictions(paths: list[str]) -> bool:
    import pyarrow.parquet as pq

    first, *rest = (pq.read_table(p, columns=["id", "prediction"]) for p in paths)
    return all(first.equals(other) for other in rest)


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    run = Bench.start(description, "200,000 rows, 2 repeats", argv, FULL, QUICK, ensure_mlflow_venv)
    with _harness.fresh_dir("both", "scoring") as tmp:
        data = tmp / "input.parquet"
        write_input(data, run.sizes)
        cfg = {**run.sizes, "input": str(data)}
        for tool in run.tools:
            print(f"[{NAMES[tool]}] scoring {run.sizes['rows']:,} rows ...", flush=True)
            load = os.getloadavg()
            result = run_worker(tool, run.pythons[tool], cfg, tmp)
            result["load_average"] = {"before": load, "after": os.getloadavg()}
            run.results[tool]["scoring"] = result
        outputs = [
            r["output"]
            for t in run.tools
            for r in run.results[t]["scoring"].values()
            if isinstance(r, dict) and "output" in r
        ]
        warnings = [] if same_predictions(outputs) else ["the tools' outputs hold different predictions"]

    rows: list[tuple[str, str, str]] = [
        ("MLflow pyfunc by 100,000-row chunks, 1 process", "mlflow", "chunked"),
        ("Shipway score, 1 worker", "shipway", "workers_1"),
        ("Shipway score, 2 workers, as asked", "shipway", "workers_2"),
        ("Shipway score, 2 worker processes, forced", "shipway", "forced_2"),
        ("floor: scikit-learn predict, whole frame in memory", "shipway", "floor_sklearn"),
        ("floor: Shipway LoadedModel.predict, whole frame in memory", "shipway", "floor_shipway"),
    ]
    mlflow = run.results.get("mlflow", {}).get("scoring", {}).get("chunked", {}).get("rows_per_s")
    body, table = [], []
    for label, tool, key in rows:
        if tool not in run.tools:
            continue
        rate = run.results[tool]["scoring"][key]["rows_per_s"]
        ratio = rate / mlflow if mlflow and tool == "shipway" and not key.startswith("floor") else None
        body.append([label, fmt_value(rate, "rows/s"), fmt_ratio(ratio)])
        table.append({"workload": label, "rows_per_s": rate, "ratio_vs_mlflow": ratio})
    run.print_title()
    print(render_table(["workload", "rows/s", "vs MLflow"], body))
    return run.finish(RESULTS_FILE, table, warnings)


if __name__ == "__main__":
    sys.exit(main())
