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

import argparse
import inspect
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
MLFLOW_VENV = BENCH_DIR / ".venvs" / "mlflow"
WORK_DIR = BENCH_DIR / ".work"
RESULTS_FILE = BENCH_DIR / "results" / "tracking.json"
RESULT_PREFIX = "BENCH_RESULT "
TIMES = "\u00d7"
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


@dataclass(frozen=True)
class Row:
    """One line of the result table, read from the workers' JSON."""

    label: str
    workload: str
    field: str
    unit: str
    higher_is_better: bool


# ---------------------------------------------------------------------------------------------
# Worker code. These functions are copied verbatim into the worker script (see ``worker_source``)
# and run in a fresh interpreter; they may use only the standard library and the tool measured.
# ---------------------------------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    """Report a workload's figures to the parent process as one JSON line on stdout."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def progress(message: str) -> None:
    print(f"    {message}", file=sys.stderr, flush=True)


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


WORKER_HEADER = f"""\
from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULT_PREFIX = {RESULT_PREFIX!r}
"""
WORKER_HELPERS = (emit, progress, search_rows, time_queries, rate)
WORKERS = {"shipway": shipway_worker, "mlflow": mlflow_worker}


def worker_source(tool: str) -> str:
    """The text of a standalone worker script for ``tool``."""
    main = WORKERS[tool]
    parts = [WORKER_HEADER, *(inspect.getsource(f) for f in (*WORKER_HELPERS, main))]
    parts.append(f'if __name__ == "__main__":\n    emit({main.__name__}(json.loads(sys.argv[1])))\n')
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The parent: environments, running workers, the table.
# ---------------------------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def mlflow_version(python: Path) -> str | None:
    """MLflow's version in the environment of ``python``, or None if it does not import."""
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
        env=worker_env("mlflow", None),
    )
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None


def ensure_mlflow_venv() -> tuple[Path, str]:
    """Create (or reuse) bench/.venvs/mlflow with the latest MLflow; its python and MLflow version."""
    python = venv_python(MLFLOW_VENV)
    version = mlflow_version(python)
    if version is not None:
        print(f"Reusing {MLFLOW_VENV.relative_to(BENCH_DIR.parent)} (MLflow {version}).", flush=True)
        return python, version
    if MLFLOW_VENV.exists():
        print(f"{MLFLOW_VENV} exists but does not import mlflow; recreating it.", flush=True)
        shutil.rmtree(MLFLOW_VENV)
    print(f"Creating {MLFLOW_VENV} and installing the latest MLflow (a minute or two)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "mlflow"], check=True)
    version = mlflow_version(python)
    if version is None:
        raise SystemExit(f"MLflow was installed into {MLFLOW_VENV} but does not import; see pip's output.")
    return python, version


def worker_env(tool: str, tmp: Path | None) -> dict[str, str]:
    """The environment of a worker: no outside tracking settings, no telemetry."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SHIPWAY_", "MLFLOW_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"})
    if tool == "shipway" and tmp is not None:
        env["SHIPWAY_HOME"] = str(tmp)
    return env


def run_worker(tool: str, python: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one workload in a fresh process on a fresh folder; the worker's JSON result."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tool}-{cfg['workload']}-", dir=WORK_DIR))
    try:
        script = tmp / "worker.py"
        script.write_text(worker_source(tool), encoding="utf-8")
        proc = subprocess.run(
            [str(python), str(script), json.dumps({**cfg, "tmp": str(tmp)})],
            cwd=tmp,
            env=worker_env(tool, tmp),
            stdout=subprocess.PIPE,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:])
        raise SystemExit(f"{tool} worker for {cfg['workload']} failed (exit {proc.returncode}); see above.")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


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


def fmt_value(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 10 else f"{value:,.1f} ms"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def fmt_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}{TIMES}"
    return f"{ratio:.1f}{TIMES}" if ratio >= 10 else f"{ratio:.2f}{TIMES}"


def render_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and runs: a smoke run")
    parser.add_argument("--only", choices=sorted(WORKERS), help="run one tool alone")
    args = parser.parse_args(argv)

    import shipway

    sizes = QUICK if args.quick else FULL
    tools = [args.only] if args.only else ["mlflow", "shipway"]
    pythons: dict[str, Path] = {"shipway": Path(sys.executable)}
    versions = {"shipway": shipway.__version__, "python": platform.python_version()}
    if "mlflow" in tools:
        pythons["mlflow"], versions["mlflow"] = ensure_mlflow_venv()
    names = {"mlflow": "MLflow", "shipway": "Shipway"}
    print(" | ".join(f"{names[t]} {versions[t]}" for t in tools) + f" | Python {versions['python']}")
    print(f"Mode: {'quick' if args.quick else 'full'}; {os.cpu_count()} CPUs; {platform.platform()}\n")

    rows = table_rows(sizes)
    results: dict[str, dict[str, Any]] = {t: {} for t in tools}
    started = time.perf_counter()
    for workload in dict.fromkeys(r.workload for r in rows):
        for tool in tools:
            print(f"[{names[tool]}] {workload} ...", flush=True)
            t0 = time.perf_counter()
            res = run_worker(
                tool,
                pythons[tool],
                {
                    **sizes,
                    "workload": workload,
                    "filter_mlflow": FILTER_MLFLOW,
                    "filter_shipway": FILTER_SHIPWAY,
                },
            )
            results[tool][workload] = res
            figures = [fmt_value(res[r.field], r.unit) for r in rows if r.workload == workload]
            print(f"    {', '.join(figures)}  (worker took {time.perf_counter() - t0:.0f} s)", flush=True)

    header = ["workload", *(names[t] for t in tools)]
    if len(tools) == 2:
        header.append("ratio (Shipway / MLflow speed)")
    body, table = [], []
    for r in rows:
        values = {t: results[t][r.workload][r.field] for t in tools}
        cells = [r.label, *(fmt_value(values[t], r.unit) for t in tools)]
        ratio = None
        if len(tools) == 2:
            ml, sw = values["mlflow"], values["shipway"]
            ratio = sw / ml if r.higher_is_better else ml / sw
            cells.append(fmt_ratio(ratio))
        body.append(cells)
        table.append({"workload": r.label, "unit": r.unit, **values, "ratio": ratio})

    warnings = check_results(results)
    title = " vs ".join(f"{names[t]} {versions[t]}" for t in tools)
    mode = "quick" if args.quick else "full"
    print(f"\n{title} ({mode}, total {time.perf_counter() - started:.0f} s)\n")
    print(render_table(header, body))
    for w in warnings:
        print(f"WARNING: {w}")

    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "mode": "quick" if args.quick else "full",
                "versions": versions,
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "sizes": sizes,
                "table": table,
                "warnings": warnings,
                "results": results,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\nWrote {RESULTS_FILE.relative_to(BENCH_DIR.parent)}")
    return 1 if warnings else 0


if __name__ == "__main__":
    sys.exit(main())
