"""Side-by-side benchmark of Shipway's experiment tracking against MLflow (latest from PyPI).

Run by hand from the repository root::

    .venv/bin/python bench/tracking.py            # full run, ~10-15 min (MLflow is the slow side)
    .venv/bin/python bench/tracking.py --quick    # smoke run, ~1-2 min
    .venv/bin/python bench/tracking.py --only shipway

MLflow is installed into its own virtual environment at ``bench/.venvs/mlflow`` (created on first
use, reused afterwards). Every workload runs in a fresh worker process on a fresh SQLite file in a
fresh folder under ``bench/.work``: MLflow with the interpreter of that environment, Shipway with
the interpreter running this script. Workers are built from the ``*_worker`` functions below
(their source is written to a file in the workload's folder) and report timings as one JSON line
on stdout. One-time work (creating and migrating the database, the first run of a process) is
done before any clock starts.

Workloads, the same on both sides:

1. metric points logged one call per point (10 runs x 10 metrics x 1,000 steps), until run end;
2. the same points through each tool's batch call (MLflow ``log_batch`` of up to 1,000 metrics,
   Shipway ``run.log_metrics({...10 keys...}, step=step)``);
3. 1,000 runs with 20 params and 5 metrics each;
4. search over 10,000 runs (filtered + ordered, ordered only): median of 5 after a warm-up.

The table shows each figure and how many times faster Shipway is. Results also go to
``bench/results/tracking.json``.
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness
from _harness import NAMES, Bench, Row, fmt_ratio, fmt_value, progress, render_table

RESULTS_FILE = _harness.BENCH_DIR / "results" / "tracking.json"
WORKER_TIMEOUT_S = 3 * 3600

FULL = {
    "metric_runs": 10,
    "metric_keys": 10,
    "metric_steps": 1000,
    "param_runs": 1000,
    "params_per_run": 20,
    "metrics_per_run": 5,
    "search_runs": 10_000,
    "search_repeats": 5,
    "search_limit": 100,
    "batch_max": 1000,
    "seed": 42,
}
QUICK = {**FULL, "metric_steps": 100, "param_runs": 100, "search_runs": 1000}

FILTER_MLFLOW = "metrics.auc > 0.8 and params.depth = '6'"
FILTER_SHIPWAY = "metrics.auc > 0.8 and params.depth = 6"


# ---------------------------------------------------------------------------------------------
# Worker code. These functions, and ``emit`` and ``progress`` from ``_harness``, are copied verbatim
# into the worker script (see ``worker_source``) and run in a fresh interpreter; they may use only the
# standard library and the tool measured.
# ---------------------------------------------------------------------------------------------


def search_rows(n: int, seed: int) -> list[tuple[int, float, float, float]]:
    """The (depth, lr, auc, loss) of each search run; identical for both tools."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        depth = rng.randint(1, 10)
        lr = round(10 ** rng.uniform(-4, -1), 6)
        auc = rng.uniform(0.5, 1.0)
        loss = rng.uniform(0.05, 1.0)
        rows.append((depth, lr, auc, loss))
    return rows


def time_queries(queries: dict[str, Callable[[], list[float]]], repeats: int) -> dict[str, Any]:
    """Median wall time of each query after one warm-up call, plus what it returned."""
    out: dict[str, Any] = {}
    for name, query in queries.items():
        top = query()  # warm-up
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            top = query()
            samples.append((time.perf_counter() - t0) * 1000)
        out[f"{name}_ms"] = statistics.median(samples)
        out[f"{name}_samples_ms"] = samples
        out[f"{name}_count"] = len(top)
        out[f"{name}_top_auc"] = top
    return out


def rate(count: int, seconds: float, unit: str) -> dict[str, Any]:
    return {"count": count, "seconds": seconds, "rate": count / seconds, "unit": unit}


def shipway_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one workload against Shipway (SHIPWAY_HOME points at a fresh folder)."""
    import shipway

    # One-time work: create and migrate the database, capture lineage and the environment.
    with shipway.start_run(experiment="warmup", name="warmup"):
        pass

    workload = cfg["workload"]
    keys = [f"m{k}" for k in range(cfg["metric_keys"])]
    runs, steps = cfg["metric_runs"], cfg["metric_steps"]

    if workload in ("metrics_single", "metrics_batch"):
        single = workload == "metrics_single"
        t0 = time.perf_counter()
        for i in range(runs):
            with shipway.start_run(experiment="bench", name=f"r{i}") as run:
                if single:
                    for step in range(steps):
                        for k, key in enumerate(keys):
                            run.log_metric(key, step * 0.001 + k, step=step)
                else:
                    for step in range(steps):
                        run.log_metrics({key: step * 0.001 + k for k, key in enumerate(keys)}, step=step)
        result = rate(runs * steps * len(keys), time.perf_counter() - t0, "points/s")
        stored = sum(len(shipway.metric_history(run.id, key)) for key in keys)
        result["stored_points_last_run"] = stored
        result["expected_points_last_run"] = steps * len(keys)
        return result

    if workload == "runs":
        n, n_params, n_metrics = cfg["param_runs"], cfg["params_per_run"], cfg["metrics_per_run"]
        t0 = time.perf_counter()
        for i in range(n):
            with shipway.start_run(experiment="bench", name=f"r{i}") as run:
                run.log_params({f"p{j}": i * 0.5 + j for j in range(n_params)})
                run.log_metrics({f"m{j}": i * 0.001 + j for j in range(n_metrics)})
        result = rate(n, time.perf_counter() - t0, "runs/s")
        record = shipway.get_run(run.id)
        result["stored_last_run"] = [len(record.params), len(record.metrics)]
        result["expected_last_run"] = [n_params, n_metrics]
        return result

    if workload == "search":
        rows = search_rows(cfg["search_runs"], cfg["seed"])
        t0 = time.perf_counter()
        for i, (depth, lr, auc, loss) in enumerate(rows):
            with shipway.start_run(experiment="bench", name=f"s{i}") as run:
                run.log_params({"depth": depth, "lr": lr})
                run.log_metrics({"auc": auc, "loss": loss})
            if (i + 1) % max(1, len(rows) // 5) == 0:
                progress(f"shipway setup: {i + 1:,}/{len(rows):,} runs ({time.perf_counter() - t0:.0f} s)")
        setup = rate(len(rows), time.perf_counter() - t0, "runs/s")
        limit = cfg["search_limit"]

        def filtered() -> list[float]:
            found = shipway.search_runs(
                "bench", filter=cfg["filter_shipway"], order_by="metrics.auc desc", limit=limit
            )
            return [r.metrics["auc"] for r in found]

        def ordered() -> list[float]:
            found = shipway.search_runs("bench", order_by="metrics.auc desc", limit=limit)
            return [r.metrics["auc"] for r in found]

        result = time_queries({"filtered": filtered, "ordered": ordered}, cfg["search_repeats"])
        result["setup"] = setup
        return result

    raise SystemExit(f"unknown workload {workload!r}")


def mlflow_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one workload against MLflow on a fresh SQLite file in ``cfg['tmp']``."""
    import logging

    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

    tmp = Path(cfg["tmp"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    client = MlflowClient()
    # One-time work: create and migrate the database, the first run of the process.
    warmup = mlflow.create_experiment("warmup", artifact_location=str(tmp / "artifacts" / "warmup"))
    with mlflow.start_run(experiment_id=warmup, run_name="warmup"):
        pass
    exp = mlflow.create_experiment("bench", artifact_location=str(tmp / "artifacts" / "bench"))

    workload = cfg["workload"]
    keys = [f"m{k}" for k in range(cfg["metric_keys"])]
    runs, steps = cfg["metric_runs"], cfg["metric_steps"]

    if workload in ("metrics_single", "metrics_batch"):
        single = workload == "metrics_single"
        steps_per_call = max(1, cfg["batch_max"] // len(keys))
        t0 = time.perf_counter()
        for i in range(runs):
            with mlflow.start_run(experiment_id=exp, run_name=f"r{i}") as run:
                if single:
                    for step in range(steps):
                        for k, key in enumerate(keys):
                            mlflow.log_metric(key, step * 0.001 + k, step=step)
                else:
                    for first in range(0, steps, steps_per_call):
                        ts = int(time.time() * 1000)
                        batch = [
                            Metric(key, step * 0.001 + k, ts, step)
                            for step in range(first, min(first + steps_per_call, steps))
                            for k, key in enumerate(keys)
                        ]
                        client.log_batch(run.info.run_id, metrics=batch)
        result = rate(runs * steps * len(keys), time.perf_counter() - t0, "points/s")
        stored = sum(len(client.get_metric_history(run.info.run_id, key)) for key in keys)
        result["stored_points_last_run"] = stored
        result["expected_points_last_run"] = steps * len(keys)
        return result

    if workload == "runs":
        n, n_params, n_metrics = cfg["param_runs"], cfg["params_per_run"], cfg["metrics_per_run"]
        t0 = time.perf_counter()
        for i in range(n):
            with mlflow.start_run(experiment_id=exp, run_name=f"r{i}") as run:
                mlflow.log_params({f"p{j}": i * 0.5 + j for j in range(n_params)})
                mlflow.log_metrics({f"m{j}": i * 0.001 + j for j in range(n_metrics)})
        result = rate(n, time.perf_counter() - t0, "runs/s")
        data = client.get_run(run.info.run_id).data
        result["stored_last_run"] = [len(data.params), len(data.metrics)]
        result["expected_last_run"] = [n_params, n_metrics]
        return result

    if workload == "search":
        rows = search_rows(cfg["search_runs"], cfg["seed"])
        t0 = time.perf_counter()
        for i, (depth, lr, auc, loss) in enumerate(rows):
            run_id = client.create_run(exp, run_name=f"s{i}").info.run_id
            ts = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=[Metric("auc", auc, ts, 0), Metric("loss", loss, ts, 0)],
                params=[Param("depth", str(depth)), Param("lr", str(lr))],
            )
            client.set_terminated(run_id)
            if (i + 1) % max(1, len(rows) // 20) == 0:
                elapsed = time.perf_counter() - t0
                progress(
                    f"mlflow setup: {i + 1:,}/{len(rows):,} runs ({elapsed:.0f} s, "
                    f"~{(len(rows) - i - 1) * elapsed / (i + 1):.0f} s left)"
                )
        setup = rate(len(rows), time.perf_counter() - t0, "runs/s")
        limit = cfg["search_limit"]

        def filtered() -> list[float]:
            found = mlflow.search_runs(
                experiment_ids=[exp],
                filter_string=cfg["filter_mlflow"],
                order_by=["metrics.auc DESC"],
                max_results=limit,
                output_format="list",
            )
            return [r.data.metrics["auc"] for r in found]

        def ordered() -> list[float]:
            found = mlflow.search_runs(
                experiment_ids=[exp], order_by=["metrics.auc DESC"], max_results=limit, output_format="list"
            )
            return [r.data.metrics["auc"] for r in found]

        result = time_queries({"filtered": filtered, "ordered": ordered}, cfg["search_repeats"])
        result["setup"] = setup
        return result

    raise SystemExit(f"unknown workload {workload!r}")


WORKER_IMPORTS = """\
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
"""
WORKER_HELPERS = (search_rows, time_queries, rate)
WORKERS = {"shipway": shipway_worker, "mlflow": mlflow_worker}


def worker_source(tool: str) -> str:
    """The text of a standalone worker script for ``tool``."""
    return _harness.worker_script(WORKER_IMPORTS, WORKER_HELPERS, WORKERS[tool])


# ---------------------------------------------------------------------------------------------
# The parent: environments, running workers, the table.
# ---------------------------------------------------------------------------------------------


def install_mlflow(python: Path) -> None:
    """Install the latest MLflow into a new bench/.venvs/mlflow, replacing one that does not import it."""
    if _harness.MLFLOW_VENV.exists():
        print(f"{_harness.MLFLOW_VENV} exists but does not import mlflow; recreating it.", flush=True)
        shutil.rmtree(_harness.MLFLOW_VENV)
    _harness.create_mlflow_venv(python)
    _harness.pip_install(python, "mlflow")


def ensure_mlflow_venv() -> tuple[Path, str]:
    """Create (or reuse) bench/.venvs/mlflow with the latest MLflow; its python and MLflow version."""
    failure = f"MLflow was installed into {_harness.MLFLOW_VENV} but does not import; see pip's output."
    return _harness.ensure_mlflow_venv(("mlflow",), install_mlflow, failure)


def run_worker(tool: str, python: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one workload in a fresh process on a fresh folder; the worker's JSON result."""
    with _harness.fresh_dir(tool, cfg["workload"]) as tmp:
        script = tmp / "worker.py"
        script.write_text(worker_source(tool), encoding="utf-8")
        return _harness.run_script(
            python,
            script,
            cfg,
            tmp,
            _harness.worker_env(tool, tmp),
            WORKER_TIMEOUT_S,
            f"{tool} worker for {cfg['workload']}",
        )


def table_rows(sizes: dict[str, Any]) -> list[Row]:
    points = sizes["metric_runs"] * sizes["metric_keys"] * sizes["metric_steps"]
    n_search = sizes["search_runs"]
    return [
        Row(f"{points:,} metric points, one call each", "metrics_single", "rate", "points/s", True),
        Row(f"{points:,} metric points, batch API", "metrics_batch", "rate", "points/s", True),
        Row(
            f"{sizes['param_runs']:,} runs x {sizes['params_per_run']} params + "
            f"{sizes['metrics_per_run']} metrics",
            "runs",
            "rate",
            "runs/s",
            True,
        ),
        Row(f"search {n_search:,} runs: filter + order", "search", "filtered_ms", "ms", False),
        Row(f"search {n_search:,} runs: order only", "search", "ordered_ms", "ms", False),
    ]


def check_results(results: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings for lost points or runs and for search answers that differ between the tools."""
    warnings = []
    for tool, by_workload in results.items():
        for workload, res in by_workload.items():
            for stored, expected in (
                ("stored_points_last_run", "expected_points_last_run"),
                ("stored_last_run", "expected_last_run"),
            ):
                if stored in res and res[stored] != res[expected]:
                    warnings.append(f"{tool} {workload}: stored {res[stored]}, expected {res[expected]}")
    if {"mlflow", "shipway"} <= results.keys() and "search" in results["mlflow"]:
        for query in ("filtered", "ordered"):
            a = [round(x, 9) for x in results["mlflow"]["search"][f"{query}_top_auc"]]
            b = [round(x, 9) for x in results["shipway"]["search"][f"{query}_top_auc"]]
            if a != b:
                warnings.append(
                    f"search {query}: MLflow and Shipway returned different runs "
                    f"({len(a)} vs {len(b)} results)"
                )
    return warnings


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    run = Bench.start(
        description, "fewer points and runs: a smoke run", argv, FULL, QUICK, ensure_mlflow_venv
    )
    rows = table_rows(run.sizes)
    for workload in dict.fromkeys(r.workload for r in rows):
        for tool in run.tools:
            print(f"[{NAMES[tool]}] {workload} ...", flush=True)
            t0 = time.perf_counter()
            res = run_worker(
                tool,
                run.pythons[tool],
                {
                    **run.sizes,
                    "workload": workload,
                    "filter_mlflow": FILTER_MLFLOW,
                    "filter_shipway": FILTER_SHIPWAY,
                },
            )
            run.results[tool][workload] = res
            figures = [fmt_value(res[r.field], r.unit) for r in rows if r.workload == workload]
            print(f"    {', '.join(figures)}  (worker took {time.perf_counter() - t0:.0f} s)", flush=True)

    header = ["workload", *(NAMES[t] for t in run.tools)]
    if len(run.tools) == 2:
        header.append("ratio (Shipway / MLflow speed)")
    body, table = [], []
    for r in rows:
        values = {t: run.results[t][r.workload][r.field] for t in run.tools}
        cells = [r.label, *(fmt_value(values[t], r.unit) for t in run.tools)]
        ratio = None
        if len(run.tools) == 2:
            ratio = r.ratio(values["mlflow"], values["shipway"])
            cells.append(fmt_ratio(ratio))
        body.append(cells)
        table.append({"workload": r.label, "unit": r.unit, **values, "ratio": ratio})

    warnings = check_results(run.results)
    run.print_title()
    print(render_table(header, body))
    return run.finish(RESULTS_FILE, table, warnings)


if __name__ == "__main__":
    sys.exit(main())
