"""Side-by-side benchmark of Shipway's model registry against MLflow (latest from PyPI).

Run by hand from the repository root::

    .venv/bin/python bench/registry.py            # full run, ~10 min on 2 cores (nearly all MLflow log_model)
    .venv/bin/python bench/registry.py --quick    # smoke run, ~2 min
    .venv/bin/python bench/registry.py --only shipway

MLflow lives in its own virtual environment at ``bench/.venvs/mlflow`` (the one ``tracking.py``
creates; created here too if missing, with scikit-learn added if MLflow did not pull it in). Every
workload runs in a fresh worker process on a fresh SQLite file in a fresh folder under
``bench/.work``: MLflow with the interpreter of that environment, Shipway with the interpreter running
this script. Workers are built from the ``*_worker`` functions below (their source is written to a file
in the workload's folder) and report timings as one JSON line on stdout. One-time work (creating the
database, importing the ML libraries, the first registration of the process) is done before any clock
starts.

The model is the same on both sides: a scikit-learn ``LogisticRegression`` fitted on a seeded
synthetic DataFrame of 4 float columns and 500 rows. Workloads:

1. log and register 100 versions of ``churn`` (MLflow: ``mlflow.sklearn.log_model(model, name="model",
   registered_model_name="churn")`` inside one ``mlflow.start_run()``; Shipway:
   ``shipway.register_model(model, name="churn")``);
2. move the alias ``staging`` 100 times, alternating between versions 2 and 1 (MLflow:
   ``MlflowClient().set_registered_model_alias``; Shipway: ``shipway.set_alias``), mean per move;
3. cold load + first prediction: a new ``python -c`` process imports the tool and pandas, loads
   ``models:/churn@staging``, predicts one row and exits; wall time from spawn to exit, median of 11
   after one untimed warm-up spawn. For Shipway, two more programs are timed the same way:
   ``import shipway`` alone, and the import floor, ``import pandas, sklearn.linear_model``: what any
   tool must import to predict with this model, so no loader can be faster than it.

The table shows each figure, how many times faster Shipway is, and the targets of the registry
issue. Results also go to ``bench/results/registry.json``, with the spread of each cold load and
the machine's load average before and after each workload (on a shared machine other processes
slow the spawns down; compare figures only between runs at a similar load).
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _harness
from _harness import NAMES, RESULT_PREFIX, Bench, Row, fmt_ratio, fmt_value, progress, render_table

RESULTS_FILE = _harness.BENCH_DIR / "results" / "registry.json"
WORKER_TIMEOUT_S = 3600
CHILD_TIMEOUT_S = 300

FULL = {"versions": 100, "alias_moves": 100, "cold_loads": 11, "rows": 500, "seed": 42}
QUICK = {**FULL, "versions": 10, "alias_moves": 10, "cold_loads": 2}

# The one row both tools predict in the cold-load child (columns as in ``make_model``).
ONE_ROW = {"f0": 0.25, "f1": -1.5, "f2": 0.75, "f3": 2.0}

# The libraries any tool must import to predict with the model: the floor under a cold load.
IMPORT_FLOOR_CODE = "import pandas, sklearn.linear_model"

# Targets from the registry issue.
TARGET_REGISTER_RATIO = 10.0  # Shipway's versions/s >= 10x MLflow's
TARGET_ALIAS_MS = 2.0  # Shipway's mean alias move < 2 ms
TARGET_COLD_S = 1.2  # Shipway's cold load + first prediction < 1.2 s wall


# ---------------------------------------------------------------------------------------------
# Worker code. These functions, and ``emit`` and ``progress`` from ``_harness``, are copied verbatim
# into the worker script (see ``worker_source``) and run in a fresh interpreter; they may use only the
# standard library, numpy, pandas, scikit-learn and the tool measured.
# ---------------------------------------------------------------------------------------------


def make_model(rows: int, seed: int) -> Any:
    """A LogisticRegression fitted on a seeded DataFrame of 4 float columns; identical for both tools."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)), columns=[f"f{i}" for i in range(4)])
    logits = frame @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(scale=0.5, size=rows)
    return LogisticRegression(max_iter=1000).fit(frame, (logits > 0).astype(int))


def predict_row(model: Any, row: dict[str, float]) -> list[Any]:
    """``model``'s prediction for ``row`` as a JSON-able list."""
    import numpy as np
    import pandas as pd

    return np.asarray(model.predict(pd.DataFrame({k: [v] for k, v in row.items()}))).ravel().tolist()


def summarize_ms(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "mean_ms": statistics.fmean(samples),
        "median_ms": statistics.median(samples),
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max_ms": ordered[-1],
        "samples_ms": samples,
    }


def shipway_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one workload against Shipway (SHIPWAY_HOME points at a fresh folder)."""
    import shipway

    model = make_model(cfg["rows"], cfg["seed"])
    # One-time work: create and migrate the database, import skops, the first registration.
    shipway.register_model(model, name="warmup")
    workload = cfg["workload"]

    if workload == "register":
        n = cfg["versions"]
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            t1 = time.perf_counter()
            last = shipway.register_model(model, name="churn")
            samples.append((time.perf_counter() - t1) * 1000)
        seconds = time.perf_counter() - t0
        return {
            "count": n,
            "seconds": seconds,
            "rate": n / seconds,
            "unit": "versions/s",
            **summarize_ms(samples),
            "last_version": last.version,
            "expected_last_version": n,
        }

    if workload == "alias":
        v1 = shipway.register_model(model, name="churn").version
        v2 = shipway.register_model(model, name="churn").version
        shipway.set_alias("churn", "staging", v1)  # creates the alias; not timed
        samples = []
        for i in range(cfg["alias_moves"]):
            version = v2 if i % 2 == 0 else v1
            t0 = time.perf_counter()
            shipway.set_alias("churn", "staging", version)
            samples.append((time.perf_counter() - t0) * 1000)
        from shipway.registry import resolve

        found = resolve("models:/churn@staging").version
        return {**summarize_ms(samples), "alias_version": found, "expected_alias_version": version}

    if workload == "cold_setup":
        version = shipway.register_model(model, name="churn").version
        shipway.set_alias("churn", "staging", version)
        return {"version": version, "prediction": predict_row(model, cfg["one_row"])}

    raise SystemExit(f"unknown workload {workload!r}")


def mlflow_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one workload against MLflow on a fresh SQLite file in ``cfg['tmp']``."""
    import logging
    import warnings

    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    tmp = Path(cfg["tmp"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    mlflow.create_experiment("bench", artifact_location=str(tmp / "artifacts"))
    mlflow.set_experiment("bench")
    client = MlflowClient()
    model = make_model(cfg["rows"], cfg["seed"])

    def log(registered: str) -> Any:
        try:
            return mlflow.sklearn.log_model(model, name="model", registered_model_name=registered)
        except TypeError:  # MLflow 2: no ``name``
            return mlflow.sklearn.log_model(model, artifact_path="model", registered_model_name=registered)

    # One-time work: create and migrate the database, the first run and registration of the process.
    with mlflow.start_run(run_name="warmup"):
        log("warmup")
    workload = cfg["workload"]

    if workload == "register":
        n = cfg["versions"]
        samples = []
        with mlflow.start_run(run_name="register"):
            t0 = time.perf_counter()
            for i in range(n):
                t1 = time.perf_counter()
                last = log("churn")
                samples.append((time.perf_counter() - t1) * 1000)
                if (i + 1) % max(1, n // 5) == 0:
                    progress(f"mlflow: {i + 1}/{n} versions ({time.perf_counter() - t0:.0f} s)")
            seconds = time.perf_counter() - t0
        return {
            "count": n,
            "seconds": seconds,
            "rate": n / seconds,
            "unit": "versions/s",
            **summarize_ms(samples),
            "last_version": int(last.registered_model_version),
            "expected_last_version": n,
        }

    if workload == "alias":
        with mlflow.start_run(run_name="alias"):
            v1 = int(log("churn").registered_model_version)
            v2 = int(log("churn").registered_model_version)
        client.set_registered_model_alias("churn", "staging", v1)  # creates the alias; not timed
        samples = []
        for i in range(cfg["alias_moves"]):
            version = v2 if i % 2 == 0 else v1
            t0 = time.perf_counter()
            client.set_registered_model_alias("churn", "staging", version)
            samples.append((time.perf_counter() - t0) * 1000)
        found = int(client.get_model_version_by_alias("churn", "staging").version)
        return {**summarize_ms(samples), "alias_version": found, "expected_alias_version": version}

    if workload == "cold_setup":
        with mlflow.start_run(run_name="cold"):
            version = int(log("churn").registered_model_version)
        client.set_registered_model_alias("churn", "staging", version)
        return {"version": version, "prediction": predict_row(model, cfg["one_row"])}

    raise SystemExit(f"unknown workload {workload!r}")


WORKER_IMPORTS = """\
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
"""
WORKER_HELPERS = (make_model, predict_row, summarize_ms)
WORKERS = {"shipway": shipway_worker, "mlflow": mlflow_worker}


def worker_source(tool: str) -> str:
    """The text of a standalone worker script for ``tool``."""
    return _harness.worker_script(WORKER_IMPORTS, WORKER_HELPERS, WORKERS[tool])


# The cold-load child: ``python -c`` with this code. Phase times are taken inside the child from its
# first statement; the parent measures the wall time from spawn to exit.
COLD_LOAD_CODE = {
    "shipway": (
        "import shipway",
        "m = shipway.load_model('models:/churn@staging')",
    ),
    "mlflow": (
        "import mlflow",
        "m = mlflow.pyfunc.load_model('models:/churn@staging')",
    ),
}


def cold_load_code(tool: str) -> str:
    """The ``python -c`` program that imports ``tool``, loads the model and predicts one row."""
    import_line, load_line = COLD_LOAD_CODE[tool]
    return "\n".join(
        [
            "import time",
            "t0 = time.perf_counter()",
            import_line,
            "t1 = time.perf_counter()",
            "import pandas as pd",
            f"df = pd.DataFrame({{k: [v] for k, v in {ONE_ROW!r}.items()}})",
            "t2 = time.perf_counter()",
            load_line,
            "t3 = time.perf_counter()",
            "p = m.predict(df)",
            "t4 = time.perf_counter()",
            "import json, sys, numpy",
            "print(" + repr(RESULT_PREFIX) + " + json.dumps({'import_s': t1 - t0, 'pandas_row_s': t2 - t1,"
            " 'load_s': t3 - t2, 'predict_s': t4 - t3, 'in_process_s': t4 - t0,"
            " 'prediction': numpy.asarray(p).ravel().tolist(), 'torch_imported': 'torch' in sys.modules}),"
            " flush=True)",
        ]
    )


# ---------------------------------------------------------------------------------------------
# The parent: environments, running workers and children, the table.
# ---------------------------------------------------------------------------------------------


def install_mlflow(python: Path) -> None:
    """Install MLflow and scikit-learn into bench/.venvs/mlflow, creating it if missing."""
    if not python.exists():
        _harness.create_mlflow_venv(python)
    print(f"Installing MLflow and scikit-learn into {_harness.MLFLOW_VENV}...", flush=True)
    _harness.pip_install(python, "mlflow", "scikit-learn")


def ensure_mlflow_venv() -> tuple[Path, str]:
    """Create (or reuse) bench/.venvs/mlflow with MLflow and scikit-learn; its python and MLflow version."""
    failure = f"MLflow or scikit-learn does not import in {_harness.MLFLOW_VENV}; see pip's output."
    return _harness.ensure_mlflow_venv(("sklearn", "mlflow"), install_mlflow, failure)


def worker_env(tool: str, tmp: Path | None) -> dict[str, str]:
    """The environment of a worker or child: ``_harness.worker_env``, and for MLflow the tracking URI
    of the SQLite file in ``tmp``."""
    env = _harness.worker_env(tool, tmp)
    if tmp is not None and tool != "shipway":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    return env


def run_worker(tool: str, python: Path, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run one workload in a fresh process in ``tmp``; the worker's JSON result."""
    script = tmp / "worker.py"
    script.write_text(worker_source(tool), encoding="utf-8")
    out_file = tmp / "worker.out"
    # MLflow prints a few lines per registration on stderr: pass on only the worker's progress lines,
    # and keep the rest for when the worker fails.
    tail: collections.deque[str] = collections.deque(maxlen=60)
    with out_file.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [str(python), str(script), json.dumps({**cfg, "tmp": str(tmp)})],
            cwd=tmp,
            env=worker_env(tool, tmp),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("    "):
                print(line, end="", flush=True)
            else:
                tail.append(line)
        returncode = proc.wait(timeout=WORKER_TIMEOUT_S)
    stdout = out_file.read_text(encoding="utf-8")
    result = _harness.parse_result(stdout)
    if returncode != 0 or result is None:
        sys.stderr.write("".join(tail) + stdout[-4000:])
        raise SystemExit(f"{tool} worker for {cfg['workload']} failed (exit {returncode}); see above.")
    return result


def spawn(tool: str, python: Path, code: str, tmp: Path) -> tuple[float, dict[str, Any] | None]:
    """Run ``python -c code`` in ``tmp``; its wall time from spawn to exit and its JSON line, if any."""
    env = worker_env(tool, tmp)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(python), "-c", code],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"{tool} child failed (exit {proc.returncode}); see above.")
    return wall, _harness.parse_result(proc.stdout)


def time_spawns(tool: str, python: Path, code: str, tmp: Path, n: int) -> dict[str, Any]:
    """Median wall time of ``n`` spawns of ``python -c code`` after one untimed warm-up spawn."""
    spawn(tool, python, code, tmp)  # warm-up: page cache, bytecode caches
    walls, reports = [], []
    for _ in range(n):
        wall, report = spawn(tool, python, code, tmp)
        walls.append(wall)
        if report is not None:
            reports.append(report)
    ordered = sorted(walls)
    out: dict[str, Any] = {
        "wall_s": statistics.median(walls),
        "wall_min_s": ordered[0],
        "wall_max_s": ordered[-1],
        "samples_s": walls,
    }
    if reports:
        for phase in ("import_s", "pandas_row_s", "load_s", "predict_s", "in_process_s"):
            out[f"{phase[:-2]}_median_s"] = statistics.median(r[phase] for r in reports)
        out["startup_exit_median_s"] = statistics.median(
            w - r["in_process_s"] for w, r in zip(walls, reports, strict=True)
        )
        out["predictions"] = [r["prediction"] for r in reports]
        out["torch_imported"] = any(r["torch_imported"] for r in reports)
        out["phases"] = reports
    return out


def cold_load(tool: str, python: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Register one version aliased ``staging`` in a fresh folder, then time cold loads from it."""
    with _harness.fresh_dir(tool, "cold_load") as tmp:
        setup = run_worker(tool, python, {**cfg, "workload": "cold_setup", "one_row": ONE_ROW}, tmp)
        result = time_spawns(tool, python, cold_load_code(tool), tmp, cfg["cold_loads"])
        result["setup"] = setup
        if tool == "shipway":
            result["import_only"] = time_spawns(tool, python, "import shipway", tmp, cfg["cold_loads"])
            result["import_only_wall_s"] = result["import_only"]["wall_s"]
            result["import_floor"] = time_spawns(tool, python, IMPORT_FLOOR_CODE, tmp, cfg["cold_loads"])
            result["import_floor_wall_s"] = result["import_floor"]["wall_s"]
    return result


def table_rows(sizes: dict[str, Any]) -> list[Row]:
    n = sizes["cold_loads"]
    return [
        Row(f"log + register {sizes['versions']} versions", "register", "rate", "versions/s", True),
        Row(f"move an alias, mean of {sizes['alias_moves']}", "alias", "mean_ms", "ms", False),
        Row(f"cold load + 1st prediction, new process (median of {n})", "cold_load", "wall_s", "s", False),
        Row(
            f"`import shipway` alone, new process (median of {n})",
            "cold_load",
            "import_only_wall_s",
            "s",
            False,
        ),
        Row(
            f"import floor: `{IMPORT_FLOOR_CODE}`, new process (median of {n})",
            "cold_load",
            "import_floor_wall_s",
            "s",
            False,
        ),
    ]


def target_for(workload: str, field: str, shipway: float | None, ratio: float | None) -> tuple[str, str]:
    """The issue's target for a row and whether this run met it ("yes", "NO", or "-" when not measured)."""
    if workload == "register":
        met = None if ratio is None else ratio >= TARGET_REGISTER_RATIO
        verdict = "-" if met is None else ("yes" if met else "NO")
        return f"\u2265 {TARGET_REGISTER_RATIO:g}{_harness.TIMES} MLflow", verdict
    if workload == "alias" and shipway is not None:
        return f"< {TARGET_ALIAS_MS:g} ms", "yes" if shipway < TARGET_ALIAS_MS else "NO"
    if workload == "cold_load" and field == "wall_s" and shipway is not None:
        return f"< {TARGET_COLD_S:g} s", "yes" if shipway < TARGET_COLD_S else "NO"
    return "", ""


def breakdown_table(results: dict[str, dict[str, Any]], tools: list[str]) -> str:
    """Where the cold-load wall time goes: the median of each phase, measured inside the child."""
    phases = [
        ("interpreter start + exit (wall - in-process)", "startup_exit_median_s"),
        ("import the tool", "import_median_s"),
        ("import pandas + build the row", "pandas_row_median_s"),
        ("load models:/churn@staging", "load_median_s"),
        ("first predict", "predict_median_s"),
        ("wall, spawn to exit", "wall_s"),
        ("wall, fastest spawn", "wall_min_s"),
        ("wall, slowest spawn", "wall_max_s"),
    ]
    body = [
        [label, *(fmt_value(results[t]["cold_load"].get(key), "s") for t in tools)] for label, key in phases
    ]
    return render_table(["cold load phase (median)", *(NAMES[t] for t in tools)], body)


def check_results(results: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings for missing versions, aliases pointing elsewhere and predictions that differ."""
    warnings = []
    for tool, by_workload in results.items():
        reg, alias, cold = by_workload["register"], by_workload["alias"], by_workload["cold_load"]
        if reg["last_version"] != reg["expected_last_version"]:
            warnings.append(f"{tool} register: last version {reg['last_version']}, expected {reg['count']}")
        if alias["alias_version"] != alias["expected_alias_version"]:
            found, wanted = alias["alias_version"], alias["expected_alias_version"]
            warnings.append(f"{tool} alias: staging -> {found}, expected {wanted}")
        expected = cold["setup"]["prediction"]
        if any(p != expected for p in cold.get("predictions", [])):
            warnings.append(f"{tool} cold load: predicted {cold['predictions']}, the fitted model {expected}")
    if {"mlflow", "shipway"} <= results.keys():
        a = results["mlflow"]["cold_load"]["setup"]["prediction"]
        b = results["shipway"]["cold_load"]["setup"]["prediction"]
        if a != b:
            warnings.append(f"cold load: MLflow's model predicts {a}, Shipway's {b} (different models?)")
    return warnings


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    quick_help = "10 versions, 10 alias moves, 2 cold loads"
    run = Bench.start(description, quick_help, argv, FULL, QUICK, ensure_mlflow_venv)
    rows = table_rows(run.sizes)
    for workload in ("register", "alias", "cold_load"):
        for tool in run.tools:
            print(f"[{NAMES[tool]}] {workload} ...", flush=True)
            t0 = time.perf_counter()
            load_before = os.getloadavg()
            cfg = {**run.sizes, "workload": workload}
            if workload == "cold_load":
                res = cold_load(tool, run.pythons[tool], cfg)
            else:
                with _harness.fresh_dir(tool, workload) as tmp:
                    res = run_worker(tool, run.pythons[tool], cfg, tmp)
            res["load_average"] = {"before": load_before, "after": os.getloadavg()}
            run.results[tool][workload] = res
            figures = [
                f"{r.label}: {fmt_value(res[r.field], r.unit)}"
                for r in rows
                if r.workload == workload and r.field in res
            ]
            took = time.perf_counter() - t0
            load = f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}"
            print(f"    {'; '.join(figures)}  (took {took:.0f} s, {load})", flush=True)

    both = len(run.tools) == 2
    header = ["workload", *(NAMES[t] for t in run.tools)]
    if both:
        header.append("ratio (Shipway / MLflow speed)")
    header += ["target (issue)", "met"]
    body, table = [], []
    for r in rows:
        values = {t: run.results[t][r.workload].get(r.field) for t in run.tools}
        ratio = None
        if both and None not in values.values():
            ratio = r.ratio(values["mlflow"], values["shipway"])
        cells = [r.label, *(fmt_value(values[t], r.unit) for t in run.tools)]
        if both:
            cells.append(fmt_ratio(ratio))
        target, met = target_for(r.workload, r.field, values.get("shipway"), ratio)
        body.append([*cells, target, met])
        table.append(
            {"workload": r.label, "unit": r.unit, **values, "ratio": ratio, "target": target, "met": met}
        )

    warnings = check_results(run.results)
    run.print_title()
    print(render_table(header, body))
    print()
    print(breakdown_table(run.results, run.tools))
    for t in run.tools:
        if run.results[t]["cold_load"].get("torch_imported"):
            print(
                f"Note: the {NAMES[t]} cold-load child imported torch (installed in its environment; "
                "skops.io imports every scikit-learn estimator module, and scikit-learn's array-API "
                "shim then imports torch)."
            )
    targets = {
        "register_ratio": TARGET_REGISTER_RATIO,
        "alias_ms": TARGET_ALIAS_MS,
        "cold_load_s": TARGET_COLD_S,
    }
    return run.finish(RESULTS_FILE, table, warnings, one_row=ONE_ROW, targets=targets)


if __name__ == "__main__":
    sys.exit(main())
