"""What ``tracking.py`` and ``registry.py`` share: paths, the worker protocol, the MLflow environment,
fresh work folders, and printing and saving the results.

The scripts import this module as ``_harness``: run as ``python bench/<script>.py`` (from any folder),
Python puts the script's folder, this one, first on ``sys.path``.

``emit`` and ``progress`` also run inside the workers: ``worker_script`` copies their source into every
worker script, so they may use only ``json``, ``sys`` and ``RESULT_PREFIX``, which every worker defines.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
MLFLOW_VENV = BENCH_DIR / ".venvs" / "mlflow"
WORK_DIR = BENCH_DIR / ".work"
RESULT_PREFIX = "BENCH_RESULT "
TIMES = "\u00d7"
TOOLS = ("mlflow", "shipway")
NAMES = {"mlflow": "MLflow", "shipway": "Shipway"}


@dataclass(frozen=True)
class Row:
    """One line of the result table: ``field`` of the ``workload``'s result, in ``unit``."""

    label: str
    workload: str
    field: str
    unit: str
    higher_is_better: bool

    def ratio(self, mlflow: float, shipway: float) -> float:
        """How many times faster Shipway is than MLflow on this row."""
        return shipway / mlflow if self.higher_is_better else mlflow / shipway


# ---------------------------------------------------------------------------------------------
# Worker code: copied verbatim into the worker scripts.
# ---------------------------------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    """Report a workload's figures to the parent process as one JSON line on stdout."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def progress(message: str) -> None:
    print(f"    {message}", file=sys.stderr, flush=True)


def worker_script(imports: str, helpers: Iterable[Callable[..., Any]], main: Callable[..., Any]) -> str:
    """A standalone worker script: ``imports`` (which must include ``json`` and ``sys``), then
    ``RESULT_PREFIX``, the source of ``emit``, ``progress``, ``helpers`` and ``main``, and a main block
    that runs ``main`` on the JSON config in ``sys.argv[1]`` and emits what it returns."""
    header = f"from __future__ import annotations\n\n{imports}\nRESULT_PREFIX = {RESULT_PREFIX!r}\n"
    parts = [header, *(inspect.getsource(f) for f in (emit, progress, *helpers, main))]
    parts.append(f'if __name__ == "__main__":\n    emit({main.__name__}(json.loads(sys.argv[1])))\n')
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The parent: the MLflow environment, the environment and folder of a worker, its result.
# ---------------------------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def mlflow_version(python: Path, modules: tuple[str, ...] = ("mlflow",)) -> str | None:
    """MLflow's version in the environment of ``python``, or None if one of ``modules`` does not import."""
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", f"import {', '.join(modules)}; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
        env=worker_env("mlflow", None),
    )
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None


def pip_install(python: Path, *args: str) -> None:
    """``pip install`` ``args`` into the environment of ``python``, quietly."""
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, *args], check=True)


def create_mlflow_venv(python: Path) -> None:
    """Create bench/.venvs/mlflow (whose interpreter is ``python``) with an up-to-date pip."""
    print(f"Creating {MLFLOW_VENV} and installing the latest MLflow (a minute or two)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
    pip_install(python, "--upgrade", "pip")


def ensure_mlflow_venv(
    modules: tuple[str, ...], install: Callable[[Path], None], failure: str
) -> tuple[Path, str]:
    """Reuse bench/.venvs/mlflow if ``modules`` import there; else ``install(python)`` and check again
    (exiting with ``failure`` if they still do not import). Its python and MLflow version."""
    python = venv_python(MLFLOW_VENV)
    version = mlflow_version(python, modules)
    if version is not None:
        print(f"Reusing {MLFLOW_VENV.relative_to(BENCH_DIR.parent)} (MLflow {version}).", flush=True)
        return python, version
    install(python)
    version = mlflow_version(python, modules)
    if version is None:
        raise SystemExit(failure)
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


@contextlib.contextmanager
def fresh_dir(tool: str, workload: str) -> Iterator[Path]:
    """A new folder under bench/.work, deleted afterwards."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tool}-{workload}-", dir=WORK_DIR))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last result line a worker or child printed, or None if it printed none."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else None


def run_script(
    python: Path, script: Path, cfg: dict[str, Any], tmp: Path, env: dict[str, str], timeout: float, what: str
) -> dict[str, Any]:
    """Run a worker ``script`` with ``cfg`` (and ``tmp``) as its JSON argument; its result, or exit
    saying which worker (``what``) failed, with the end of its output."""
    proc = subprocess.run(
        [str(python), str(script), json.dumps({**cfg, "tmp": str(tmp)})],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    result = parse_result(proc.stdout)
    if proc.returncode != 0 or result is None:
        sys.stderr.write(proc.stdout[-4000:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}); see above.")
    return result


# ---------------------------------------------------------------------------------------------
# The run: the command line, the tools, the table, the results file.
# ---------------------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 10 else f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.3f} s" if value < 10 else f"{value:,.1f} s"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
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


@dataclass
class Bench:
    """One run of a benchmark script: its mode and sizes, the tools measured with the interpreter and
    version of each, and their results by tool and workload, filled in as the workloads finish."""

    mode: str
    sizes: dict[str, Any]
    tools: list[str]
    pythons: dict[str, Path]
    versions: dict[str, str]
    results: dict[str, dict[str, Any]]
    started: float

    @classmethod
    def start(
        cls,
        description: str,
        quick_help: str,
        argv: list[str] | None,
        full: dict[str, Any],
        quick: dict[str, Any],
        ensure_mlflow: Callable[[], tuple[Path, str]],
    ) -> Bench:
        """Parse the command line (``--quick``, ``--only``), pick the ``full`` or ``quick`` sizes, find each
        tool's interpreter (MLflow's from ``ensure_mlflow``) and print the tools and the machine."""
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--quick", action="store_true", help=quick_help)
        parser.add_argument("--only", choices=TOOLS, help="run one tool alone")
        args = parser.parse_args(argv)

        import shipway

        mode, sizes = ("quick", quick) if args.quick else ("full", full)
        tools = [args.only] if args.only else list(TOOLS)
        pythons: dict[str, Path] = {"shipway": Path(sys.executable)}
        versions = {"shipway": shipway.__version__, "python": platform.python_version()}
        if "mlflow" in tools:
            pythons["mlflow"], versions["mlflow"] = ensure_mlflow()
        print(" | ".join(f"{NAMES[t]} {versions[t]}" for t in tools) + f" | Python {versions['python']}")
        print(f"Mode: {mode}; {os.cpu_count()} CPUs; {platform.platform()}\n")
        results: dict[str, dict[str, Any]] = {t: {} for t in tools}
        return cls(mode, sizes, tools, pythons, versions, results, time.perf_counter())

    def print_title(self) -> None:
        """The line above the result table: the tools and their versions, the mode, the total time."""
        title = " vs ".join(f"{NAMES[t]} {self.versions[t]}" for t in self.tools)
        print(f"\n{title} ({self.mode}, total {time.perf_counter() - self.started:.0f} s)\n")

    def finish(self, path: Path, table: list[dict[str, Any]], warnings: list[str], **extra: Any) -> int:
        """Print the warnings, save the run to ``path`` as JSON (``extra`` after the sizes) and say
        where; the exit status: 1 if there are warnings."""
        for w in warnings:
            print(f"WARNING: {w}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "mode": self.mode,
                    "versions": self.versions,
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                    "sizes": self.sizes,
                    **extra,
                    "table": table,
                    "warnings": warnings,
                    "results": self.results,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        print(f"\nWrote {path.relative_to(BENCH_DIR.parent)}")
        return 1 if warnings else 0
