"""Shipway vs Evidently: data drift on 25 columns at 100,000 and 1,000,000 rows.

Run from the repository root: ``.venv/bin/python bench/monitoring.py`` (``--quick`` for 20,000 and
100,000 rows, ``--only shipway`` to skip Evidently). The first run creates ``bench/.venvs/evidently``
with the latest Evidently and ``pandas<3`` (Evidently 0.7 does not import with pandas 3).

The data: 20 numeric columns (normal, lognormal, exponential, uniform, Student t, gamma, integer
counts, one with missing values) and 5 categorical ones (3 to 30 categories), seeded; in the current
file 5 numeric columns have moved (mean shifts of 0.3 and 0.5 standard deviations, a 1.5x scale, a
location and shape change, a count rate change) and 1 categorical column has shifted its mix. Both
tools read the same two parquet files in a fresh process each and compare every column.

Timed, after importing the tool and one warm-up run on 1,000 rows:

- Evidently: read both files, ``Report([DataDriftPreset()]).run(current, reference)`` (its default
  per-column methods: at these sizes normed Wasserstein and Jensen-Shannon, threshold 0.1).
- Shipway, raw: ``shipway.monitoring.drift(reference_path, current_path)``, exact statistics.
- Shipway, stored reference profile: ``Profile.from_json`` of the reference (built once, untimed),
  then ``drift(profile, current_path)``, which streams the current file through the profile's bins.
- Shipway, both sides summarised: two stored profiles, ``drift(profile, window_profile)``.
- Shipway, from the prediction log: the current rows written by ``PredictionLog`` (the serving
  log writer, in files of 50,000 rows) for a version registered from a run that logged the reference
  as its training dataset, whose profile is already stored (untimed setup); timed is
  ``live_drift("bench@prod", window="1h")``: list and fetch the hour's files, stream them through the
  reference's bins, compare, and check data quality.

Peak memory is the worker's peak resident set (VmHWM), data and interpreter included; the resident
set after the imports is recorded too. The load average before and after each workload is
saved: the machine is shared, so compare figures only between runs at a similar load.

Checks: each tool's per-column verdicts against the columns that were made to drift, and Shipway's
statistic values against Evidently's where both use the same method (normed Wasserstein and
Jensen-Shannon in the preset; on the smaller size also Evidently's KS p-value and categorical PSI,
called directly). Results go to ``bench/results/monitoring.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _harness
from _harness import fmt_ratio, fmt_value, render_table

RESULTS_FILE = _harness.BENCH_DIR / "results" / "monitoring.json"
EVIDENTLY_VENV = _harness.BENCH_DIR / ".venvs" / "evidently"
DATA_DIR = _harness.WORK_DIR / "monitoring-data"
WORKER_TIMEOUT_S = 3600
ROW_GROUP = 1 << 17

FULL = {"rows": [100_000, 1_000_000], "shipway_repeats": 3, "seed": 7}
QUICK = {"rows": [20_000, 100_000], "shipway_repeats": 3, "seed": 7}
DRIFTED = ["c0", "n00", "n01", "n02", "n03", "n04"]  # sorted

# Targets from the monitoring issue (at the largest size).
TARGET_SPEEDUP = 50.0  # Shipway from raw data >= 50x faster than Evidently
TARGET_PROFILE_S = 1.0  # a window compared against a stored reference profile in < 1 s
TARGET_MEMORY_SHARE = 0.5  # Shipway's peak memory < half of Evidently's


# ---------------------------------------------------------------------------------------------
# The data (made in the parent, with Shipway's interpreter)
# ---------------------------------------------------------------------------------------------


def make_tables(rows: int, seed: int) -> tuple[Any, Any]:
    """The reference and current tables: 20 numeric and 5 categorical columns, 6 of them drifted."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)

    def numeric(current: bool) -> dict[str, Any]:
        moved = current
        cols = {
            "n00": rng.normal(50 + (3.0 if moved else 0), 10, rows),  # +0.3 sd
            "n01": rng.lognormal(3 + (0.5 if moved else 0), 0.4, rows),  # ~ +0.5 sd, skewed
            "n02": rng.normal(0, 1.5 if moved else 1.0, rows),  # scale x1.5
            "n03": rng.gamma(2.5 if moved else 2.0, 2.0, rows),  # shape and location
            "n04": rng.poisson(5.0 if moved else 4.0, rows),  # counts: rate 4 -> 5
        }
        shapes = [
            lambda: rng.normal(100, 15, rows),
            lambda: rng.lognormal(0, 1, rows),
            lambda: rng.exponential(2, rows),
            lambda: rng.uniform(-1, 1, rows),
            lambda: rng.standard_t(5, rows),
            lambda: rng.gamma(3, 1, rows),
            lambda: rng.poisson(2, rows),
            lambda: rng.integers(18, 90, rows),
            lambda: np.where(rng.random(rows) < 0.08, np.nan, rng.normal(0, 1, rows)),
            lambda: rng.beta(2, 5, rows),
        ]
        for i in range(15):
            cols[f"n{i + 5:02d}"] = shapes[i % len(shapes)]()
        return cols

    def categorical(current: bool) -> dict[str, Any]:
        def draw(k: int, p: Any) -> Any:
            return rng.choice([f"v{j:02d}" for j in range(k)], rows, p=p)

        base = np.array([0.4, 0.3, 0.2, 0.1])
        shifted = np.array([0.25, 0.3, 0.25, 0.2])
        zipf = 1 / np.arange(1, 31)
        return {
            "c0": draw(4, shifted if current else base),
            "c1": draw(3, [0.6, 0.3, 0.1]),
            "c2": draw(8, None),
            "c3": draw(30, zipf / zipf.sum()),
            "c4": draw(2, [0.9, 0.1]),
        }

    reference = pd.DataFrame({**numeric(False), **categorical(False)})
    current = pd.DataFrame({**numeric(True), **categorical(True)})
    return reference, current


def ensure_data(rows: int, seed: int) -> tuple[Path, Path]:
    """Write (once) the two parquet files for ``rows`` rows; their paths."""
    folder = DATA_DIR / f"{rows}-{seed}-{ROW_GROUP}"
    ref, cur = folder / "reference.parquet", folder / "current.parquet"
    if not (ref.exists() and cur.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        reference, current = make_tables(rows, seed)
        # Row groups of 128k rows, as a log writer would leave them: readers can stream them.
        reference.to_parquet(ref, index=False, row_group_size=ROW_GROUP)
        current.to_parquet(cur, index=False, row_group_size=ROW_GROUP)
    return ref, cur


# ---------------------------------------------------------------------------------------------
# Worker code: copied verbatim into the worker scripts, run in a fresh interpreter
# ---------------------------------------------------------------------------------------------


def rss_mb() -> dict[str, float]:
    """Peak and current resident set size of this process, in MB: VmHWM and VmRSS from /proc (Linux).
    Not ``ru_maxrss``: that survives execve, so a child would report its parent's size at the fork."""
    import resource

    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    found[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    peak = found.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"peak_mb": peak, "current_mb": found.get("VmRSS", peak)}


def warmup_frame() -> Any:
    """A tiny table with a numeric and a categorical column, for the untimed warm-up run that pays
    for lazy imports and first-use costs (made here, so the warm-up reads nothing from the files)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({"n00": rng.normal(size=1000), "c0": rng.choice(["a", "b", "c"], 1000)})


def evidently_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Evidently's data-drift preset on the two files; per-column values and methods."""
    import warnings

    warnings.filterwarnings("ignore")
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    after_import = rss_mb()

    def run(ref: Any, cur: Any) -> Any:
        numeric = [c for c in ref.columns if c.startswith("n")]
        categorical = [c for c in ref.columns if c.startswith("c")]
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        current = Dataset.from_pandas(cur, data_definition=definition)
        reference = Dataset.from_pandas(ref, data_definition=definition)
        return Report([DataDriftPreset()]).run(current, reference)

    small = warmup_frame()
    run(small, small)  # warm-up: lazy imports and first-use costs
    t0 = time.perf_counter()
    reference = pd.read_parquet(cfg["reference"])
    current = pd.read_parquet(cfg["current"])
    snapshot = run(reference, current)
    seconds = time.perf_counter() - t0
    values = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            values[config["column"]] = {
                "method": config["method"],
                "value": float(metric["value"]),
                "threshold": config["threshold"],
            }
    out: dict[str, Any] = {"seconds": seconds, "columns": values, "after_import": after_import, **rss_mb()}
    if cfg.get("extra_methods"):
        # The stattests behind the preset, called directly, for methods the preset did not pick.
        from evidently.legacy.calculations.stattests import ks_stat_test, psi_stat_test
        from evidently.legacy.core import ColumnType

        def stattest(test: Any, column: str, kind: Any) -> float:
            return float(test(reference[column].dropna(), current[column].dropna(), kind, None).drift_score)

        out["extra"] = {
            "ks_p_value": {
                c: stattest(ks_stat_test, c, ColumnType.Numerical) for c in ("n00", "n05", "n08", "n13")
            },
            "psi_categorical": {
                c: stattest(psi_stat_test, c, ColumnType.Categorical) for c in ("c0", "c1", "c2")
            },
        }
    return out


def shipway_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Shipway on the two files: from raw data, from a stored reference profile, from two profiles."""
    if cfg["workload"] == "log":
        os.environ["SHIPWAY_HOME"] = cfg["log_home"]
    from shipway.monitoring import Profile, drift, live_drift

    after_import = rss_mb()
    workload, repeats = cfg["workload"], cfg["repeats"]
    small = warmup_frame()
    drift(small, small)  # warm-up
    if workload == "log":  # warm-up: the log reader's imports, on a window with nothing in it
        try:
            live_drift("bench@prod", window="1m", until="2000-01-01T00:00")
        except Exception as exc:
            assert "No predictions" in str(exc), exc
    samples, report = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        if workload == "log":
            report = live_drift("bench@prod", window="1h", until=cfg["log_until"])
        elif workload == "raw":
            report = drift(cfg["reference"], cfg["current"])
        elif workload == "profile":
            report = drift(Profile.from_json(cfg["reference_profile"]), cfg["current"])
        else:
            report = drift(
                Profile.from_json(cfg["reference_profile"]), Profile.from_json(cfg["current_profile"])
            )
        samples.append(time.perf_counter() - t0)
    assert report is not None
    columns = {
        c.feature: {
            "method": c.method,
            "value": c.statistic,
            "drifted": c.drifted,
            "error_bound": c.error_bound,
            "p_value": c.p_value,
        }
        for c in report.columns
    }
    out: dict[str, Any] = {
        "seconds": statistics.median(samples),
        "samples_s": samples,
        "columns": columns,
        "after_import": after_import,
        **rss_mb(),
    }
    if cfg.get("extra_methods"):
        ks = drift(cfg["reference"], cfg["current"], columns=["n00", "n05", "n08", "n13"], methods="ks")
        psi = drift(cfg["reference"], cfg["current"], columns=["c0", "c1", "c2"], methods="psi")
        out["extra"] = {
            "ks_p_value": {c.feature: c.p_value for c in ks.columns},
            "psi_categorical": {c.feature: c.statistic for c in psi.columns},
        }
    return out


WORKER_IMPORTS = """\
import json
import os
import statistics
import sys
import time
from typing import Any
"""
WORKERS = {"evidently": evidently_worker, "shipway": shipway_worker}


# ---------------------------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------------------------


def evidently_python() -> tuple[Path, str]:
    """bench/.venvs/evidently's interpreter and Evidently's version, creating the venv if needed."""
    python = _harness.venv_python(EVIDENTLY_VENV)

    def version() -> str | None:
        if not python.exists():
            return None
        proc = subprocess.run(
            [str(python), "-c", "import evidently, scipy; print(evidently.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    found = version()
    if found:
        print(
            f"Reusing {EVIDENTLY_VENV.relative_to(_harness.BENCH_DIR.parent)} (Evidently {found}).",
            flush=True,
        )
        return python, found
    print(
        f"Creating {EVIDENTLY_VENV} with the latest Evidently and pandas<3 (a minute or two)...", flush=True
    )
    subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    _harness.pip_install(python, "--upgrade", "pip")
    _harness.pip_install(python, "evidently", "pandas<3")
    found = version()
    if not found:
        raise SystemExit(f"Evidently does not import in {EVIDENTLY_VENV}; see pip's output.")
    return python, found


def run_worker(tool: str, python: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one workload in a fresh process; its JSON result, with the load average around it."""
    with _harness.fresh_dir(tool, "drift") as tmp:
        script = tmp / "worker.py"
        script.write_text(
            _harness.worker_script(WORKER_IMPORTS, [rss_mb, warmup_frame], WORKERS[tool]), encoding="utf-8"
        )
        before = os.getloadavg()
        proc = subprocess.run(
            [str(python), str(script), json.dumps(cfg)],
            cwd=tmp,
            env=_harness.worker_env(tool, tmp),
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
        result = _harness.parse_result(proc.stdout)
        if proc.returncode != 0 or result is None:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
            raise SystemExit(f"{tool} worker failed (exit {proc.returncode}); see above.")
        result["load_average"] = {"before": before, "after": os.getloadavg()}
        return result


def store_profiles(ref: Path, cur: Path) -> dict[str, Any]:
    """Build and store the reference's profile, and the current window's on its bins (untimed setup,
    though the times are recorded)."""
    from shipway.monitoring import Profile

    folder = ref.parent
    t0 = time.perf_counter()
    reference = Profile.from_parquet(ref)
    t1 = time.perf_counter()
    reference.to_json(folder / "reference.profile.json")
    Profile.from_parquet(cur, like=reference).to_json(folder / "current.profile.json")
    t2 = time.perf_counter()
    return {
        "reference_profile": str(folder / "reference.profile.json"),
        "current_profile": str(folder / "current.profile.json"),
        "reference_profile_s": t1 - t0,
        "current_profile_s": t2 - t1,
        "reference_profile_bytes": (folder / "reference.profile.json").stat().st_size,
    }


def store_log(ref: Path, cur: Path) -> dict[str, Any]:
    """A Shipway home where version 1 of ``bench`` was registered from a run that logged the reference
    as its training data (its profile stored), and the current rows are in its prediction log, written
    by the serving log writer in files of 50,000 rows. Made once per data size (untimed)."""
    import numpy as np
    import pyarrow.parquet as pq

    home = ref.parent / "log-home"
    marker = home / "log-until.txt"
    if marker.exists():
        return {"log_home": str(home), "log_until": marker.read_text().strip()}
    import shutil

    from sklearn.dummy import DummyClassifier

    shutil.rmtree(home, ignore_errors=True)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SHIPWAY_")}
    os.environ["SHIPWAY_HOME"] = str(home)
    try:
        import shipway
        from shipway.data import get_dataset
        from shipway.data.dataset_profiles import dataset_profile
        from shipway.serving import PredictionEvent, PredictionLog
        from shipway.store import get_store, reset_default_store

        reset_default_store()
        reference = pq.read_table(ref).to_pandas()
        model = DummyClassifier(strategy="prior").fit(reference, np.zeros(len(reference), dtype=int) % 2)
        with shipway.start_run(experiment="bench") as run:
            run.log_dataset(reference, name="bench-train", role="train")
        shipway.register_model(model, "bench", run=run, input_example=reference.head(100))
        shipway.set_alias("bench", "prod", 1)
        dataset_profile(get_dataset("bench-train"), store=get_store())  # the stored reference
        log = PredictionLog(flush_seconds=3600, flush_rows=50_000, max_rows=100_000)
        for i, batch in enumerate(pq.ParquetFile(cur).iter_batches(batch_size=50_000)):
            columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
            rows = batch.num_rows
            log(PredictionEvent("bench", "1", "stable", f"r{i}", columns, np.zeros(rows, np.int64), 0.001))
            log.flush()
        until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 60))
        marker.write_text(until)
        reset_default_store()
    finally:
        os.environ.pop("SHIPWAY_HOME", None)
        os.environ.update(saved)
    return {"log_home": str(home), "log_until": until}


def compare_values(evidently: dict[str, Any], shipway: dict[str, Any]) -> dict[str, Any]:
    """Max |Shipway - Evidently| per method over the columns where both used it."""
    names = {"Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensenshannon"}
    diffs: dict[str, list[float]] = {}
    for column, ev in evidently["columns"].items():
        ours = shipway["columns"].get(column)
        method = names.get(ev["method"])
        if ours is not None and method == ours["method"]:
            diffs.setdefault(method, []).append(abs(ours["value"] - ev["value"]))
    for key in ("ks_p_value", "psi_categorical"):
        if key in evidently.get("extra", {}) and key in shipway.get("extra", {}):
            a, b = evidently["extra"][key], shipway["extra"][key]
            diffs[key] = [abs(a[c] - b[c]) for c in a]
    return {m: {"columns": len(d), "max_abs_diff": max(d)} for m, d in diffs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 and 100,000 rows")
    parser.add_argument("--only", choices=("shipway", "evidently"), help="run one tool alone")
    args = parser.parse_args(argv)
    import shipway

    mode, sizes = ("quick", QUICK) if args.quick else ("full", FULL)
    tools = [args.only] if args.only else ["evidently", "shipway"]
    versions = {"shipway": shipway.__version__, "python": platform.python_version()}
    pythons = {"shipway": Path(sys.executable)}
    if "evidently" in tools:
        pythons["evidently"], versions["evidently"] = evidently_python()
    print(
        f"Mode: {mode}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; {platform.platform()}\n"
    )
    started = time.perf_counter()
    results: dict[str, Any] = {}
    warnings: list[str] = []
    for rows in sizes["rows"]:
        ref, cur = ensure_data(rows, sizes["seed"])
        setup = store_profiles(ref, cur)
        if "shipway" in tools:
            setup.update(store_log(ref, cur))
        base = {
            "reference": str(ref),
            "current": str(cur),
            **setup,
            "extra_methods": rows == sizes["rows"][0],
        }
        by_size: dict[str, Any] = {"setup": setup}
        for tool in tools:
            workloads = ["raw", "profile", "profiles", "log"] if tool == "shipway" else ["raw"]
            for workload in workloads:
                print(f"[{rows:,} rows] {tool} {workload} ...", flush=True)
                cfg = {**base, "workload": workload, "repeats": sizes["shipway_repeats"]}
                res = run_worker(tool, pythons[tool], cfg)
                by_size[f"{tool}_{workload}"] = res
                load = res["load_average"]
                print(
                    f"    {res['seconds']:.3f} s, peak {res['peak_mb']:,.0f} MB "
                    f"(load {load['before'][0]:.1f} -> {load['after'][0]:.1f})",
                    flush=True,
                )
        for key in [k for k in by_size if k.endswith(("_raw", "_profile", "_profiles", "_log"))]:
            flagged = sorted(c for c, v in by_size[key]["columns"].items() if _drifted(v))
            by_size[key]["flagged"] = flagged
            if flagged != DRIFTED:
                warnings.append(f"{rows:,} rows, {key}: flagged {flagged}, expected {DRIFTED}")
        if "evidently_raw" in by_size and "shipway_raw" in by_size:
            by_size["agreement"] = compare_values(by_size["evidently_raw"], by_size["shipway_raw"])
        results[str(rows)] = by_size

    table, body = summary(results, tools)
    title = " vs ".join(f"{t.capitalize()} {versions[t]}" for t in tools)
    print(f"\n{title} ({mode}, total {time.perf_counter() - started:.0f} s)\n")
    header = ["workload", *[t.capitalize() for t in tools], "ratio (Evidently raw / Shipway)"]
    print(render_table(header, body))
    for rows, by_size in results.items():
        if "agreement" in by_size:
            print(f"\nStatistics at {int(rows):,} rows, Shipway vs Evidently on the same data:")
            for method, a in by_size["agreement"].items():
                print(f"    {method}: {a['columns']} columns, max |difference| {a['max_abs_diff']:.2e}")
        for key in ("evidently_raw", "shipway_raw", "shipway_profile", "shipway_log"):
            if key in by_size:
                print(f"    {key} flagged: {', '.join(by_size[key]['flagged'])}")
    for w in warnings:
        print(f"WARNING: {w}")
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "mode": mode,
                "versions": versions,
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "sizes": sizes,
                "drifted": DRIFTED,
                "targets": {
                    "speedup": TARGET_SPEEDUP,
                    "profile_s": TARGET_PROFILE_S,
                    "memory_share": TARGET_MEMORY_SHARE,
                },
                "table": table,
                "warnings": warnings,
                "results": results,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\nWrote {RESULTS_FILE.relative_to(_harness.BENCH_DIR.parent)}")
    return 1 if warnings else 0


def _drifted(v: dict[str, Any]) -> bool:
    if "drifted" in v:
        return bool(v["drifted"])
    return v["value"] >= v["threshold"]  # Evidently's distances: drifted at or above the threshold


def summary(results: dict[str, Any], tools: list[str]) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The printed table's rows (and their JSON form)."""
    table: list[dict[str, Any]] = []
    body: list[list[str]] = []

    def row(label: str, unit: str, values: dict[str, float | None], ratio: float | None) -> None:
        table.append({"workload": label, "unit": unit, **values, "ratio": ratio})
        body.append([label, *(fmt_value(values.get(t), unit) for t in tools), fmt_ratio(ratio)])

    for rows, r in results.items():
        n = f"{int(rows):,} rows"
        ev = r.get("evidently_raw")
        for key, label in (
            ("shipway_raw", "raw data, both sides"),
            ("shipway_profile", "stored reference profile + raw current"),
            ("shipway_profiles", "both sides stored profiles"),
            ("shipway_log", "prediction log window vs stored training profile (live_drift)"),
        ):
            ours = r.get(key)
            if ours is None and key != "shipway_raw":
                continue
            ev_s = ev["seconds"] if ev and key == "shipway_raw" else None
            ratio = ev["seconds"] / ours["seconds"] if ev and ours else None
            row(f"{n}: {label}, wall", "s", {"evidently": ev_s, "shipway": ours and ours["seconds"]}, ratio)
        ours = r.get("shipway_raw")
        mem = {"evidently": ev and ev["peak_mb"], "shipway": ours and ours["peak_mb"]}
        ratio = ev["peak_mb"] / ours["peak_mb"] if ev and ours else None
        row(f"{n}: peak memory (raw data)", "MB", mem, ratio)
        if r.get("shipway_profile"):
            mem = {"evidently": None, "shipway": r["shipway_profile"]["peak_mb"]}
            row(f"{n}: peak memory (stored reference profile)", "MB", mem, None)
        if r.get("shipway_log"):
            mem = {"evidently": None, "shipway": r["shipway_log"]["peak_mb"]}
            row(f"{n}: peak memory (prediction log, live_drift)", "MB", mem, None)
    return table, body


if __name__ == "__main__":
    sys.exit(main())
