"""`shipway quickstart`: the whole paved road on a bundled example, narrated step by step.

Everything runs for real in a store of its own (``./shipway-quickstart`` by default): a run is
tracked, a version registered and promoted through gates and a second person's approval, served
over HTTP, challenged by a worse candidate that the rollout controller rolls back on live labels,
and watched for drift. Nothing is simulated; each step's outcome is read back from the store and
returned in a :class:`QuickstartResult` (the test suite asserts on it).

The data is scikit-learn's bundled Wisconsin breast cancer set (569 tumours, 8 of its
measurements here), so no download is needed.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipway.core.errors import InvalidInput, MissingDependency, ShipwayError

MODEL = "tumor-classifier"
HOLDOUT = "tumor-holdout"
TARGET = "benign"
APPROVER = "demo-approver"
MARKER = ".shipway-quickstart"  # marks a directory the quickstart made, so --force may delete it
FEATURES = {
    "mean radius": "radius",
    "mean texture": "texture",
    "mean perimeter": "perimeter",
    "mean area": "area",
    "mean smoothness": "smoothness",
    "mean compactness": "compactness",
    "mean concavity": "concavity",
    "mean symmetry": "symmetry",
}
POLICY = f"""\
# The quickstart's policy: staging needs a measured accuracy and a full lineage; prod needs a
# model card and one approver who neither wrote nor requested the version (four eyes).
environments: [staging, prod]
models:
  default:
    staging:
      gates:
        - metric_threshold: {{metric: accuracy, dataset: {HOLDOUT}, op: ">=", value: 0.85}}
        - lineage_required: [run, training_dataset, environment]
    prod:
      gates:
        - model_card_complete: [intended_use, limitations]
      approvals: {{count: 1, role: approver, distinct_from: [author, requester]}}
"""
# Where the quickstart's environment variables must not point the store elsewhere.
_STORE_VARIABLES = ("SHIPWAY_URI", "SHIPWAY_TOKEN", "SHIPWAY_STORE_URI", "SHIPWAY_ARTIFACT_URI")


@dataclass
class QuickstartResult:
    """What each step ended with, read back from the store."""

    home: Path
    serving_url: str = ""
    staging_gates: list[tuple[str, str]] = field(default_factory=list)
    prod_status: str = ""
    prod_approved_by: str = ""
    stable_version: int = 0
    candidate_version: int = 0
    rollout_outcome: str = ""
    rollout_reasons: list[str] = field(default_factory=list)
    requests_sent: int = 0
    drifted_columns: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    report: Path | None = None
    audit_ok: bool = False
    audit_entries: int = 0
    kpis: dict[str, Any] = field(default_factory=dict)


class Narrator:
    """Prints the steps: a numbered heading, then what happened, indented."""

    def __init__(self, print_: Callable[[str, bool], None]) -> None:
        self._print = print_
        self._step = 0

    def step(self, title: str) -> None:
        self._step += 1
        self._print("", False)
        self._print(f"{self._step}. {title}", True)

    def say(self, text: str) -> None:
        self._print(f"   {text}", False)


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise MissingDependency.for_extra("sklearn", "scikit-learn", "The quickstart") from exc


@contextmanager
def _store_at(home: Path) -> Iterator[None]:
    """Point this process's embedded store at ``home`` for the duration, and nowhere else."""
    saved = {k: os.environ.get(k) for k in ("SHIPWAY_HOME", *_STORE_VARIABLES)}
    for key in _STORE_VARIABLES:
        os.environ.pop(key, None)
    os.environ["SHIPWAY_HOME"] = str(home)
    from shipway.store import reset_default_store

    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_default_store()


def _data() -> tuple[Any, Any, list[str]]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    raw = load_breast_cancer(as_frame=True).frame
    frame = raw[list(FEATURES)].rename(columns=FEATURES)
    frame[TARGET] = raw["target"]
    train, holdout = train_test_split(frame, test_size=0.35, random_state=0, stratify=frame[TARGET])
    return train.reset_index(drop=True), holdout.reset_index(drop=True), list(FEATURES.values())


def _train(kind: str, train: Any, features: list[str]) -> tuple[Any, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    if kind == "stable":
        params: dict[str, Any] = {"model": "logistic_regression", "C": 1.0, "scaler": "standard"}
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    else:  # a one-split tree: cheap, passes the accuracy gate, and wrong more often
        params = {"model": "decision_stump", "max_depth": 1}
        model = DecisionTreeClassifier(max_depth=1, random_state=0)
    return model.fit(train[features], train[TARGET]), params


def run(
    directory: Path | str = "shipway-quickstart",
    *,
    force: bool = False,
    print_: Callable[[str, bool], None] = lambda line, heading: print(line),
    requests_per_arm: int = 600,
) -> QuickstartResult:
    """Run the quickstart in a fresh store under ``directory`` and return what each step ended with."""
    _require_sklearn()
    home = Path(directory).resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).is_file():
            raise InvalidInput(
                f"{home} is not empty and is not a quickstart's directory: the quickstart builds its own "
                "store in a new or empty directory. Pick one with --dir."
            )
        if not force:
            raise InvalidInput(
                f"{home} holds an earlier quickstart's store. Pass --force to start again from nothing "
                "(it deletes that directory), or --dir to use another one."
            )
        shutil.rmtree(home)  # only a directory an earlier quickstart made (it has the marker)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("Made by `shipway quickstart`; --force deletes this directory.\n")
    result = QuickstartResult(home=home)
    narrator = Narrator(print_)
    with _store_at(home):
        _run(home, result, narrator, requests_per_arm)
    return result


def _run(home: Path, result: QuickstartResult, n: Narrator, requests_per_arm: int) -> None:
    import shipway
    from shipway import governance
    from shipway.store import get_store

    store = get_store()
    train, holdout, features = _data()

    n.step("Track a training run")
    shipway.log_dataset(holdout, name=HOLDOUT, target=TARGET)
    with shipway.start_run(experiment="quickstart", name="logreg") as run_:
        model, params = _train("stable", train, features)
        run_.log_params(params)
        run_.log_dataset(train, name="tumor-train", role="train", target=TARGET)
        accuracy = float((model.predict(holdout[features]) == holdout[TARGET]).mean())
        run_.log_metric("holdout_accuracy", accuracy)
    n.say(f"run {run_.id[:8]}: logistic regression on {len(train)} tumours, {len(features)} measurements")
    n.say(f"holdout accuracy {accuracy:.3f}; params, datasets (by content hash) and lineage recorded")

    n.step("Register, then promote through the policy's gates and a second person's approval")
    version = shipway.register_model(
        model,
        name=MODEL,
        run=run_,
        input_example=train[features].head(5),
        card={"intended_use": "quickstart demonstration", "limitations": "not for diagnosis"},
    )
    (home / "shipway.yaml").write_text(POLICY)
    governance.apply_file(home / "shipway.yaml")
    staging = governance.promote(MODEL, version.version, "staging")
    result.staging_gates = [(g["gate"], g["status"]) for g in staging.report.get("gates", [])]
    n.say(f"{MODEL} v{version.version} -> staging: {staging.status} ({_gates(result.staging_gates)})")
    pending = governance.promote(MODEL, version.version, "prod")
    n.say(f"{MODEL} v{version.version} -> prod: {pending.status}, waiting for an approver")
    approved = _approve(version.version)
    result.prod_status, result.prod_approved_by = approved.status, APPROVER
    n.say(f"{APPROVER} approved: prod is now v{version.version} ({approved.status})")

    n.step("Deploy and serve it")
    from shipway.rollout import deploy, get_deployment

    deploy(MODEL, "prod")
    with _serving(store) as url:
        result.serving_url = url
        result.stable_version = version.version
        sent = _traffic(url, holdout, features, requests_per_arm // 2, seed=1, labels=True)
        result.requests_sent += sent
        n.say(f"serving prod at {url}; sent {sent} predictions, each answered by v{version.version}")

        n.step("Roll out a worse candidate as a canary; the controller judges it on live traffic")
        candidate_version = _candidate(train, holdout, features)
        result.candidate_version = candidate_version
        n.say(f"v{candidate_version} (a one-split tree) passed staging and was approved for prod")
        outcome, reasons, sent = _canary(url, holdout, features, requests_per_arm)
        result.requests_sent += sent
        result.rollout_outcome, result.rollout_reasons = outcome, reasons
        n.say(f"canary of v{candidate_version}: {outcome.replace('_', ' ')} after {sent} requests")
        for reason in reasons:
            n.say(f"  - {reason}")
        d = get_deployment(MODEL, "prod")
        if outcome == "rolled_back":
            n.say(
                f"all traffic is back on v{d.stable_version}; prod's alias still names v{candidate_version}"
            )
        else:
            n.say(f"v{d.stable_version} now answers all traffic")

        n.step("Send a drifted batch of traffic; the monitor raises the drift alert")
        _drift_alert(home, url, holdout, features, result, n, requests_per_arm * 2)

    n.step("Check the record")
    report = governance.audit.verify()
    result.audit_ok, result.audit_entries = report.ok, report.entries
    n.say(f"audit chain: {'intact' if report.ok else 'BROKEN'} ({report.entries} entries)")
    from shipway.rollout import delivery_kpis

    kpis = delivery_kpis("prod")
    result.kpis = kpis.to_dict()
    n.say(
        f"delivery KPIs: {kpis.deployments} deployment(s), change failure rate "
        f"{kpis.failed_changes}/{kpis.changes}, time to restore {kpis.time_to_restore_median_s or 0:.1f} s"
    )


def _drifted(rows: Any) -> Any:
    """The tumours as a miscalibrated scanner would measure them: sizes read 30 % large."""
    shifted = rows.copy()
    for column in ("radius", "perimeter"):
        shifted[column] = shifted[column] * 1.3
    shifted["area"] = shifted["area"] * 1.3**2
    return shifted


def _drift_alert(
    home: Path, url: str, holdout: Any, features: list[str], result: QuickstartResult, n: Narrator, count: int
) -> None:
    from shipway.monitoring import Monitor, add_rule, list_alerts, live_drift

    rule = add_rule(MODEL, "drift_share", above=0.25, window="5m", name="tumor-drift", severity="page")
    n.say(f"alert rule {rule.name}: {rule.describe()}")
    sent = _traffic(url, _drifted(holdout), features, count, seed=7)
    result.requests_sent += sent
    n.say(f"sent {sent} requests measured by a scanner that reads sizes 30% large")
    time.sleep(1.0)  # the prediction log's flush
    Monitor().evaluate_once()
    report = live_drift(f"{MODEL}@prod", window="5m")
    result.drifted_columns = list(report.drifted_columns)
    result.report = home / "drift-report.html"
    report.to_html(result.report)
    n.say(
        f"drift against the training data: {', '.join(report.drifted_columns) or 'none'} "
        f"({len(report.drifted_columns)} of {len(report.columns)} features)"
    )
    for alert in list_alerts(model=MODEL):
        result.alerts.append(f"{alert.rule} {alert.state}")
        n.say(f"alert {alert.rule} ({alert.severity}): {alert.state.upper()}: {alert.summary}")
    n.say(f"report: {result.report}")


def _gates(gates: list[tuple[str, str]]) -> str:
    return ", ".join(f"{gate} {status}" for gate, status in gates) or "no gates"


def _approve(version: int) -> Any:
    """Approve as the quickstart's demo approver, through a token of its own."""
    from shipway import governance
    from shipway.core.actor import acting_as
    from shipway.governance.identity import add_principal, authenticate, create_token, list_principals

    if APPROVER not in {p.name for p in list_principals()}:
        add_principal(APPROVER, "approver")
    _, secret = create_token(APPROVER, expires_in_ms=3_600_000, description="quickstart approver")
    with acting_as(authenticate(secret)):
        return governance.approve(MODEL, version, "prod", comment="quickstart: reviewed the gate report")


def _candidate(train: Any, holdout: Any, features: list[str]) -> int:
    import shipway
    from shipway import governance

    with shipway.start_run(experiment="quickstart", name="stump") as run_:
        model, params = _train("candidate", train, features)
        run_.log_params(params)
        run_.log_dataset(train, name="tumor-train", role="train", target=TARGET)
    version = shipway.register_model(
        model,
        name=MODEL,
        run=run_,
        input_example=train[features].head(5),
        card={"intended_use": "quickstart demonstration", "limitations": "not for diagnosis"},
    )
    governance.promote(MODEL, version.version, "staging")
    governance.promote(MODEL, version.version, "prod")
    if _approve(version.version).status != "completed":
        raise ShipwayError(f"The quickstart could not promote v{version.version} to prod.")
    return version.version


@contextmanager
def _serving(store: Any) -> Iterator[str]:
    """Serve the prod deployments (with the rollout controller) on a loopback port, in this process."""
    import uvicorn

    from shipway.serving.serve import ServePlan, build_app

    plan = ServePlan(environment="prod", sync_interval=0.2, log_flush_seconds=0.5)
    app = build_app(plan, store=store, controller_interval=0.5)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="quickstart-serving", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        app.close()


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise ShipwayError(f"The quickstart's server at {url} did not become ready within {timeout:g} s.")


def _traffic(url: str, rows: Any, features: list[str], count: int, *, seed: int, labels: bool = False) -> int:
    """Send ``count`` single-row predictions drawn from ``rows``; returns how many were answered.

    With ``labels``, the true diagnosis of each answered request is then sent back as feedback,
    keyed by the request id the server answered with, as a hospital's follow-up would.
    """
    import httpx
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(rows), count)
    records = rows[features].to_dict("records")
    truth = rows[TARGET].to_numpy()

    def send(chunk: np.ndarray) -> list[dict[str, Any]]:
        answered = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in chunk:
                r = client.post(f"/v1/models/{MODEL}/predict", json={"records": [records[int(i)]]})
                if r.status_code == 200:
                    answered.append(
                        {"request_id": r.headers["shipway-request-id"], "label": int(truth[int(i)])}
                    )
        return answered

    with ThreadPoolExecutor(4) as pool:
        answered = [a for part in pool.map(send, np.array_split(picks, 4)) for a in part]
    if labels and answered:
        from shipway.monitoring import record_feedback

        record_feedback(MODEL, answered)
    return len(answered)


def _canary(url: str, holdout: Any, features: list[str], per_arm: int) -> tuple[str, list[str], int]:
    """Roll the candidate out as a canary and send traffic until the controller has decided."""
    from shipway.rollout import RolloutConfig, deploy, get_deployment
    from shipway.rollout.deployments import history

    config = RolloutConfig(steps=(50, 100), step_duration_ms=0, min_requests=per_arm)
    started = deploy(MODEL, "prod", config=config)
    sent = 0
    deadline = time.monotonic() + 120
    if started.status != "progressing":
        raise ShipwayError(f"The quickstart's canary did not start (the deployment is {started.status}).")
    while get_deployment(MODEL, "prod").status != "idle":
        if time.monotonic() > deadline:
            raise ShipwayError("The quickstart's canary was not decided within 120 s.")
        sent += _traffic(url, holdout, features, 200, seed=sent, labels=True)
        time.sleep(1.0)  # the log's flush and a controller tick: it judges each batch with its labels
    latest = history(MODEL, "prod", limit=1)[0]
    return latest["outcome"], list(latest["reasons"] or []), sent
