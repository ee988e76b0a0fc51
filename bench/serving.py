"""Online inference: ``shipway serve`` against ``mlflow models serve`` on the same models and the same load.

Run by hand from the repository root::

    .venv/bin/python bench/serving.py            # full run: 20 s per workload, ~7 min on 2 cores
    .venv/bin/python bench/serving.py --quick    # smoke run: 5 s per workload, ~2.5 min
    .venv/bin/python bench/serving.py --only shipway

The models are the same on both sides: a scikit-learn ``LogisticRegression`` and a 100-tree
``GradientBoostingClassifier``, fitted on 5,000 seeded rows of 20 standard-normal features
``f0``..``f19`` against a seeded linear rule, each in its tool's own worker process (MLflow with the
interpreter of ``bench/.venvs/mlflow``, the environment the other benchmarks use; scikit-learn is the
same version on both sides, and the script checks that both servers answer the same predictions).

* MLflow: ``mlflow.sklearn.save_model(..., input_example=...)`` to a folder, then
  ``mlflow models serve -m <folder> --env-manager local`` (uvicorn, 1 worker: its default), one server
  per model, asked at ``POST /invocations`` with ``{"dataframe_split": {"columns", "data"}}``.
* Shipway: ``register_model(..., input_example=...)``, the ``prod`` alias and ``deploy(name, "prod")``
  for both models, then ``shipway serve`` with no model names: one process serving every deployment of
  prod (the sync, window and controller threads run, no rollout is in progress), default batching
  (64 rows, no wait), asked at ``POST /v1/models/{name}/predict`` with ``{"columns", "data"}``.

The load generator is the same for both: one process of this script's interpreter (asyncio, uvloop
when installed) holding C keep-alive HTTP/1.1 connections, each sending its next request as soon as
the previous is answered, cycling through 256 different rows. Per model and workload, MLflow then
Shipway, each after a warm-up (2 s; 1 s with ``--quick``) that is not counted:

1. single-row requests at concurrency 1, 16 and 64, 20 s each (5 s with ``--quick``);
2. 100-row requests at concurrency 4.

Figures: requests/s, p50/p95/p99 latency seen by the client, errors (any non-200 or broken
connection), the server's CPU time per request (its whole process tree, from /proc, warm-up
included), and the machine's load average. The floor is the in-process ``model.predict`` of one row
(a one-row DataFrame, median of 2,000 calls) in the Shipway worker; the same for a one-row array is
shown too, since scikit-learn spends most of a one-row DataFrame predict checking the frame, and
Shipway hands a numeric model an array in the columns it was fitted on (``ModelHost``). The table
shows how many times Shipway's throughput is MLflow's and MLflow's p99 is Shipway's, against the
serving issue's targets:
at concurrency 16, 5x the throughput and a fifth of the p99; at concurrency 1, under 1 ms added to the
floor at p50; at concurrency 64, 10x the throughput. The load generator shares the 2 cores with the
server, so compare runs made at a similar load. Results go to ``bench/results/serving.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _harness
from _harness import NAMES, TIMES, Bench, fmt_ratio, progress, render_table

RESULTS_FILE = _harness.BENCH_DIR / "results" / "serving.json"
WORKER_TIMEOUT_S = 900
MODELS = ("logreg", "gbm")
FULL = {
    "seconds": 20.0,
    "warmup": 2.0,
    "single": [1, 16, 64],
    "batch_rows": 100,
    "batch_concurrency": 4,
    "rows": 5000,
    "features": 20,
    "trees": 100,
    "seed": 7,
    "bodies": 256,
    "floor_calls": 2000,
}
QUICK = {**FULL, "seconds": 5.0, "warmup": 1.0}

# Targets from the serving issue.
TARGET_C16_THROUGHPUT = 5.0
TARGET_C16_P99 = 5.0  # MLflow's p99 / Shipway's
TARGET_C1_ADDED_MS = 1.0
TARGET_C64_THROUGHPUT = 10.0


# ---------------------------------------------------------------------------------------------
# Worker code, copied verbatim into the worker scripts (see ``run_worker``); it may use only the
# standard library, numpy, pandas, scikit-learn and the tool measured.
# ---------------------------------------------------------------------------------------------


def make_models(cfg: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Both models, fitted on the seeded frame, and the frame."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(cfg["seed"])
    names = [f"f{i}" for i in range(cfg["features"])]
    frame = pd.DataFrame(rng.normal(size=(cfg["rows"], len(names))), columns=names)
    target = (frame.to_numpy() @ rng.normal(size=len(names)) > 0).astype(int)
    models = {
        "logreg": LogisticRegression(max_iter=1000).fit(frame, target),
        "gbm": GradientBoostingClassifier(n_estimators=cfg["trees"], random_state=cfg["seed"]).fit(
            frame, target
        ),
    }
    return models, frame


def shipway_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Register and deploy both models to prod; time the one-row floor; predict the probe rows."""
    import shipway
    from shipway.rollout import deploy

    models, frame = make_models(cfg)
    out: dict[str, Any] = {}
    for name, model in models.items():
        shipway.register_model(model, name=name, input_example=frame.head(100))
        shipway.set_alias(name, "prod", 1)
        deploy(name, "prod")
        row = frame.iloc[[0]]
        model.predict(row)
        samples = []
        for _ in range(cfg["floor_calls"]):
            t0 = time.perf_counter()
            model.predict(row)
            samples.append(time.perf_counter() - t0)
        array, array_samples = row.to_numpy(), []
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fitted with feature names, given an array
            for _ in range(cfg["floor_calls"]):
                t0 = time.perf_counter()
                model.predict(array)
                array_samples.append(time.perf_counter() - t0)
        out[name] = {
            "floor_ms": statistics.median(samples) * 1000,
            "floor_array_ms": statistics.median(array_samples) * 1000,
            "probe": model.predict(frame.head(cfg["bodies"])).tolist(),
        }
        progress(
            f"shipway {name}: registered, deployed; one-row predict {out[name]['floor_ms']:.3f} ms "
            f"(a DataFrame), {out[name]['floor_array_ms']:.3f} ms (an array)"
        )
    return out


def mlflow_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Save both models as MLflow models in folders; predict the probe rows."""
    import logging
    import warnings

    import mlflow.sklearn

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    models, frame = make_models(cfg)
    out: dict[str, Any] = {}
    for name, model in models.items():
        path = str(Path(cfg["tmp"]) / f"mlflow-{name}")
        # MLflow 3 saves with skops and refuses tree node storage unless told to trust it.
        trusted = ["sklearn.tree._tree.Tree"] if name == "gbm" else None
        mlflow.sklearn.save_model(model, path, input_example=frame.head(100), skops_trusted_types=trusted)
        out[name] = {"path": path, "probe": model.predict(frame.head(cfg["bodies"])).tolist()}
        progress(f"mlflow {name}: saved to {path}")
    return out


def loadgen_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Drive ``cfg['concurrency']`` keep-alive connections for warm-up + ``seconds``; client-side figures."""
    import asyncio

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    host, port, path = cfg["host"], cfg["port"], cfg["path"]
    cfg["bodies"] = json.loads(Path(cfg["bodies_file"]).read_text())
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        ).encode()
        for body in cfg["bodies"]
    ]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    total = [0]

    async def read_response(reader: Any) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked = 0, False
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await reader.readexactly(length)
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(parts)
            parts.append(chunk[:-2])

    async def client(n: int, warm_until: float, stop_at: float) -> None:
        i = n
        reader = writer = None
        while time.perf_counter() < stop_at:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status, _ = await read_response(reader)
                done = time.perf_counter()
                key = str(status)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                done, key = time.perf_counter(), f"transport:{type(exc).__name__}"
                started = done
                if writer is not None:
                    writer.close()
                reader = writer = None
            i += cfg["concurrency"]
            total[0] += 1
            if started >= warm_until and done <= stop_at:
                statuses[key] = statuses.get(key, 0) + 1
                if key == "200":
                    latencies.append(done - started)
        if writer is not None:
            writer.close()

    async def main() -> None:
        now = time.perf_counter()
        warm_until = now + cfg["warmup"]
        stop_at = warm_until + cfg["seconds"]
        await asyncio.gather(*(client(n, warm_until, stop_at) for n in range(cfg["concurrency"])))

    asyncio.run(main())
    latencies.sort()

    def pct(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None

    answered = statuses.get("200", 0)
    return {
        "requests": sum(statuses.values()),
        "answered": answered,
        "errors": sum(v for k, v in statuses.items() if k != "200"),
        "statuses": statuses,
        "requests_per_s": answered / cfg["seconds"],
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else None,
        "sent_with_warmup": total[0],
    }


WORKER_IMPORTS = """\
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
"""
WORKERS = {"shipway": shipway_worker, "mlflow": mlflow_worker, "loadgen": loadgen_worker}


# ---------------------------------------------------------------------------------------------
# The parent: workers, servers, the load, the table.
# ---------------------------------------------------------------------------------------------


def ensure_mlflow_venv() -> tuple[Path, str]:
    """Reuse bench/.venvs/mlflow if MLflow and scikit-learn import there; else install them."""

    def install(python: Path) -> None:
        if not python.exists():
            _harness.create_mlflow_venv(python)
        _harness.pip_install(python, "mlflow", "scikit-learn")

    failure = f"MLflow or scikit-learn does not import in {_harness.MLFLOW_VENV}; see pip's output."
    return _harness.ensure_mlflow_venv(("sklearn", "mlflow"), install, failure)


def run_worker(
    kind: str, python: Path, cfg: dict[str, Any], tmp: Path, env: dict[str, str]
) -> dict[str, Any]:
    script = tmp / f"{kind}_worker.py"
    if not script.exists():
        script.write_text(_harness.worker_script(WORKER_IMPORTS, (make_models,), WORKERS[kind]))
    return _harness.run_script(python, script, cfg, tmp, env, WORKER_TIMEOUT_S, f"{kind} worker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and every process below it (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(stats[p][1] for p in tree if p in stats)


@contextlib.contextmanager
def server(
    argv: list[str], env: dict[str, str], ready_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, ready when ``ready_url`` answers 200; stopped (SIGINT, then SIGKILL) after."""
    import httpx

    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    out.flush()
                    tail = log.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"{tail}\n{argv[0]} exited with {proc.returncode} before it was ready")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{' '.join(argv[:3])} was not ready within 180 s; see {log}")
                time.sleep(0.2)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def bodies(tool: str, rows: list[list[float]], names: list[str], per_request: int, count: int) -> list[str]:
    """``count`` request bodies of ``per_request`` rows each, cycling through ``rows``."""
    out = []
    for i in range(count):
        chunk = [rows[(i * per_request + j) % len(rows)] for j in range(per_request)]
        split = {"columns": names, "data": chunk}
        out.append(json.dumps({"dataframe_split": split} if tool == "mlflow" else split))
    return out


def probe(tool: str, url: str, rows: list[list[float]], names: list[str]) -> list[Any]:
    """The server's predictions for ``rows``, asked in one request."""
    import httpx

    body = {"columns": names, "data": rows}
    response = httpx.post(url, json={"dataframe_split": body} if tool == "mlflow" else body, timeout=60)
    response.raise_for_status()
    return response.json()["predictions"]


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    quick_help = "5 s per workload instead of 20 s"
    run = Bench.start(description, quick_help, argv, FULL, QUICK, ensure_mlflow_venv)
    sizes = run.sizes
    names = [f"f{i}" for i in range(sizes["features"])]
    warnings: list[str] = []
    workloads = [(f"1 row, concurrency {c}", f"c{c}", 1, c) for c in sizes["single"]]
    batch = sizes["batch_rows"]
    workloads.append((f"{batch} rows, concurrency {sizes['batch_concurrency']}", "batch", batch, 4))

    with _harness.fresh_dir("both", "serving") as tmp:
        # The rows the load cycles through: the models' own first rows, as both workers build them.
        import numpy as np

        rng = np.random.default_rng(sizes["seed"])
        rows = rng.normal(size=(sizes["rows"], sizes["features"]))[: sizes["bodies"]].tolist()
        prepared: dict[str, dict[str, Any]] = {}
        envs = {t: _harness.worker_env(t, tmp / "shipway-home") for t in run.tools}
        for tool in run.tools:
            print(f"[{NAMES[tool]}] preparing both models ...", flush=True)
            prepared[tool] = run_worker(tool, run.pythons[tool], sizes, tmp, envs[tool])
            run.results[tool]["models"] = {
                m: {k: v for k, v in prepared[tool][m].items() if k != "probe"} for m in MODELS
            }
        loadgen_env = _harness.worker_env("loadgen", None)

        with contextlib.ExitStack() as stack:
            urls: dict[tuple[str, str], str] = {}
            pids: dict[tuple[str, str], int] = {}
            if "shipway" in run.tools:
                port = free_port()
                argv = [str(run.pythons["shipway"]), "-m", "shipway", "serve", "--port", str(port)]
                proc = stack.enter_context(
                    server(
                        argv, envs["shipway"], f"http://127.0.0.1:{port}/v2/health/ready", tmp / "shipway.log"
                    )
                )
                for m in MODELS:
                    urls["shipway", m] = f"http://127.0.0.1:{port}/v1/models/{m}/predict"
                    pids["shipway", m] = proc.pid
            for m in MODELS:
                with contextlib.ExitStack() as per_model:
                    if "mlflow" in run.tools:
                        port = free_port()
                        bin_dir = run.pythons["mlflow"].parent
                        argv = [
                            str(bin_dir / "mlflow"),
                            "models",
                            "serve",
                            "-m",
                            prepared["mlflow"][m]["path"],
                        ]
                        argv += ["-p", str(port), "--env-manager", "local"]
                        # It execs `uvicorn`, which must be on PATH in its environment.
                        env = {
                            **envs["mlflow"],
                            "PATH": f"{bin_dir}{os.pathsep}{envs['mlflow'].get('PATH', '')}",
                        }
                        ready = f"http://127.0.0.1:{port}/ping"
                        proc = per_model.enter_context(server(argv, env, ready, tmp / f"mlflow-{m}.log"))
                        urls["mlflow", m] = f"http://127.0.0.1:{port}/invocations"
                        pids["mlflow", m] = proc.pid
                    answers = {t: probe(t, urls[t, m], rows, names) for t in run.tools}
                    for t in run.tools:
                        if answers[t] != prepared[t][m]["probe"]:
                            warnings.append(f"{NAMES[t]}'s server predicted differently from its {m} model")
                    if len(run.tools) == 2 and answers["mlflow"] != answers["shipway"]:
                        warnings.append(f"MLflow and Shipway answered the {m} probe rows differently")
                    for label, key, per_request, concurrency in workloads:
                        for t in run.tools:
                            url = urllib.parse.urlsplit(urls[t, m])
                            cfg = {
                                "host": url.hostname,
                                "port": url.port,
                                "path": url.path,
                                "concurrency": concurrency,
                                "seconds": sizes["seconds"],
                                "warmup": sizes["warmup"],
                                "bodies_file": str(tmp / f"bodies-{t}-{per_request}.json"),
                            }
                            Path(cfg["bodies_file"]).write_text(
                                json.dumps(bodies(t, rows, names, per_request, sizes["bodies"]))
                            )
                            load_before, cpu_before = os.getloadavg(), tree_cpu_seconds(pids[t, m])
                            result = run_worker("loadgen", Path(sys.executable), cfg, tmp, loadgen_env)
                            cpu = tree_cpu_seconds(pids[t, m]) - cpu_before
                            result["server_cpu_ms_per_request"] = (
                                1000 * cpu / result["sent_with_warmup"]
                                if result["sent_with_warmup"]
                                else None
                            )
                            result["load_average"] = {"before": load_before, "after": os.getloadavg()}
                            run.results[t].setdefault(m, {})[key] = result
                            progress(
                                f"{NAMES[t]:8} {m:6} {label:22}: {result['requests_per_s']:8,.0f} req/s, "
                                f"p50 {result['p50_ms'] or 0:7.2f} ms, p99 {result['p99_ms'] or 0:7.2f} ms, "
                                f"errors {result['errors']}, server CPU "
                                f"{result['server_cpu_ms_per_request'] or 0:.2f} ms/request, "
                                f"load {load_before[0]:.1f}"
                            )
                            if result["errors"]:
                                warnings.append(
                                    f"{NAMES[t]} {m} {label}: {result['errors']} errors {result['statuses']}"
                                )

    return report(run, workloads, warnings)


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2f}" if value < 10 else f"{value:.1f}")


def report(run: Bench, workloads: list[tuple[str, str, int, int]], warnings: list[str]) -> int:
    both = len(run.tools) == 2
    table: list[dict[str, Any]] = []
    run.print_title()
    for m in MODELS:
        header = ["workload"]
        for t in run.tools:
            header += [f"{NAMES[t]} req/s", "p50 ms", "p95 ms", "p99 ms", "err", "CPU ms/req"]
        if both:
            header += [f"req/s {TIMES}", "p99 ÷"]
        body = []
        for label, key, _, _ in workloads:
            line = [label]
            entry: dict[str, Any] = {"model": m, "workload": label}
            for t in run.tools:
                r = run.results[t][m][key]
                line += [
                    f"{r['requests_per_s']:,.0f}",
                    _ms(r["p50_ms"]),
                    _ms(r["p95_ms"]),
                    _ms(r["p99_ms"]),
                    str(r["errors"]),
                    _ms(r["server_cpu_ms_per_request"]),
                ]
                entry[t] = {k: r[k] for k in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors")}
                entry[t]["server_cpu_ms_per_request"] = r["server_cpu_ms_per_request"]
            if both:
                ml, sw = run.results["mlflow"][m][key], run.results["shipway"][m][key]
                throughput = sw["requests_per_s"] / ml["requests_per_s"] if ml["requests_per_s"] else None
                p99 = ml["p99_ms"] / sw["p99_ms"] if ml["p99_ms"] and sw["p99_ms"] else None
                line += [fmt_ratio(throughput), fmt_ratio(p99)]
                entry.update(throughput_ratio=throughput, p99_ratio=p99)
            body.append(line)
            table.append(entry)
        floors = run.results["shipway"]["models"][m] if "shipway" in run.tools else {}
        print(
            f"\n{m}: in-process predict of one row (the floor): {_ms(floors.get('floor_ms'))} ms for a "
            f"one-row DataFrame, {_ms(floors.get('floor_array_ms'))} ms for a one-row array"
        )
        print(render_table(header, body))

    if "shipway" in run.tools:
        print("\nTargets (serving issue):")
        for m in MODELS:
            sw = run.results["shipway"][m]
            floors = run.results["shipway"]["models"][m]
            p50 = sw["c1"]["p50_ms"]
            # Against the array floor, the stricter of the two: what predict costs with no DataFrame.
            added = p50 - floors["floor_array_ms"] if p50 is not None else None
            over_frame = p50 - floors["floor_ms"] if p50 is not None else None
            checks = [
                (
                    f"c1 p50 {_ms(p50)} ms, {_ms(added)} ms over the one-row array floor "
                    f"({_ms(over_frame)} ms over the DataFrame floor) < {TARGET_C1_ADDED_MS} ms",
                    added is not None and added < TARGET_C1_ADDED_MS,
                )
            ]
            if both:
                ml = run.results["mlflow"][m]
                c16 = sw["c16"]["requests_per_s"] / ml["c16"]["requests_per_s"]
                p99 = ml["c16"]["p99_ms"] / sw["c16"]["p99_ms"]
                c64 = sw["c64"]["requests_per_s"] / ml["c64"]["requests_per_s"]
                checks += [
                    (
                        f"c16 throughput {fmt_ratio(c16)} >= {TARGET_C16_THROUGHPUT:g}{TIMES}",
                        c16 >= TARGET_C16_THROUGHPUT,
                    ),
                    (
                        f"c16 p99 a {fmt_ratio(p99)} smaller >= {TARGET_C16_P99:g}{TIMES}",
                        p99 >= TARGET_C16_P99,
                    ),
                    (
                        f"c64 throughput {fmt_ratio(c64)} >= {TARGET_C64_THROUGHPUT:g}{TIMES}",
                        c64 >= TARGET_C64_THROUGHPUT,
                    ),
                ]
            for text, ok in checks:
                print(f"  {m:6} {text}: {'met' if ok else 'NOT met'}")
            run.results["shipway"]["models"][m]["targets"] = {text: ok for text, ok in checks}
    return run.finish(RESULTS_FILE, table, warnings)


if __name__ == "__main__":
    sys.exit(main())
