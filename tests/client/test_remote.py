"""The SDK in both modes: the same scenarios against an embedded store and, through SHIPWAY_URI and
SHIPWAY_TOKEN, against a real server (uvicorn on a loopback port, its own store and artifact folder).

In remote mode the client's own SHIPWAY_HOME must stay empty: nothing may quietly fall back to a
local store.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from servers import free_port
from sklearn.linear_model import LogisticRegression

import shipway
from shipway import governance
from shipway.core.actor import os_user
from shipway.core.config import Settings
from shipway.core.errors import (
    Conflict,
    GateFailed,
    IntegrityError,
    InvalidInput,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from shipway.data import get_dataset
from shipway.registry import (
    delete_alias,
    generate_keypair,
    get_version,
    list_models,
    list_versions,
    update_version,
)
from shipway.server import create_app
from shipway.store import Store, reset_default_store

POLICY = """
environments: [staging, prod]
models:
  default:
    staging:
      gates:
        - metric_threshold: {metric: auc, dataset: churn-holdout, op: ">=", value: 0.80}
        - lineage_required: [run, training_dataset, environment]
    prod:
      approvals: {count: 2, role: approver, distinct_from: [author, requester]}
"""
FEATURES = ["tenure", "spend", "calls"]


def _data(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=FEATURES)
    frame["churned"] = (2.0 * frame["tenure"] - 1.5 * frame["spend"] > 0).astype(int)
    return frame


@dataclass
class Mode:
    """How the test talks to Shipway, and who it is."""

    name: str
    artifacts: Path
    tokens: dict[str, str] = field(default_factory=dict)
    monkeypatch: pytest.MonkeyPatch | None = None

    def use(self, who: str) -> None:
        """Act as ``who``: "me" (the OS user, an admin) or a principal made by the fixture."""
        assert self.monkeypatch is not None
        if who == "me" and "me" not in self.tokens:
            self.monkeypatch.delenv("SHIPWAY_TOKEN", raising=False)
        else:
            self.monkeypatch.setenv("SHIPWAY_TOKEN", self.tokens[who])


def _people(store: Store | None) -> dict[str, str]:
    tokens = {}
    for name, role in (("alice", "approver"), ("bob", "approver"), ("carl", "contributor")):
        governance.add_principal(name, role, store=store)
        tokens[name] = governance.create_token(name, store=store)[1]
    return tokens


@pytest.fixture(params=["local", "remote"])
def mode(
    request: pytest.FixtureRequest, shipway_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mode]:
    if request.param == "local":
        yield Mode("local", shipway_home / "artifacts", _people(None), monkeypatch)
        return
    server_home = tmp_path / "server-home"
    monkeypatch.setenv("SHIPWAY_HOME", str(server_home))
    store = Store(Settings.resolve())
    tokens = _people(store)
    tokens["me"] = governance.create_token(store=store)[1]  # the OS user, an admin of the store
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    client_home = tmp_path / "client-home"
    monkeypatch.setenv("SHIPWAY_HOME", str(client_home))
    monkeypatch.setenv("SHIPWAY_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SHIPWAY_TOKEN", tokens["me"])
    reset_default_store()
    try:
        yield Mode("remote", server_home / "artifacts", tokens, monkeypatch)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
    assert not client_home.exists(), "remote mode touched a local store"


def _train_and_register(
    **kwargs: object,
) -> tuple[shipway.Run, LogisticRegression, shipway.registry.ModelVersion]:
    train = _data(1000, 1)
    with shipway.start_run(experiment="churn") as run:
        run.log_dataset(train, name="churn-train", role="train", target="churned")
        model = LogisticRegression().fit(train[FEATURES], train["churned"])
        run.log_metric("auc", 0.97)
    version = shipway.register_model(
        model, name="churn", run=run, input_example=train[FEATURES].head(20), **kwargs
    )
    return run, model, version


def test_tracking_is_the_same_in_both_modes(mode: Mode, tmp_path: Path) -> None:
    frame = _data(300, 2)
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "roc.txt").write_text("curve")
    (plots / "sub").mkdir()
    (plots / "sub" / "pr.txt").write_text("precision-recall")

    with shipway.start_run(experiment="remote-demo", name="first", tags={"team": "risk"}) as run:
        run.log_params({"depth": 6, "lr": 0.1})
        run.log_param("depth", 6)  # the same value again is fine
        for step in range(50):
            run.log_metric("loss", 1 / (step + 1))
        run.log_metrics({"auc": 0.91, "f1": float("nan")})
        dataset = run.log_dataset(frame, name="churn-train", role="train", target="churned")
        run.log_artifact(plots, "plots")
        run.set_tag("stage", "done")
        with pytest.raises(Conflict, match="depth"):
            run.log_param("depth", 7)

    record = shipway.get_run(run.id)
    assert (record.status, record.name, record.experiment, record.user) == (
        "FINISHED",
        "first",
        "remote-demo",
        os_user(),
    )
    assert record.params == {"depth": "6", "lr": "0.1"}
    assert record.metrics["auc"] == 0.91 and math.isnan(record.metrics["f1"])
    assert record.metrics["loss"] == 1 / 50
    assert record.tags == {"team": "risk", "stage": "done"}
    assert [(d.name, d.role, d.num_rows, d.content_hash) for d in record.datasets] == [
        ("churn-train", "train", 300, dataset.content_hash)
    ]
    assert sorted(a.path for a in record.artifacts) == ["plots/roc.txt", "plots/sub/pr.txt"]
    assert record.lineage["environment"]["hash"] and record.end_time >= record.start_time

    history = shipway.metric_history(run.id, "loss")
    assert [p.step for p in history] == list(range(50)) and history[-1].value == 1 / 50
    page = shipway.search_runs("remote-demo", filter="metrics.auc > 0.9 and params.depth = 6")
    assert [r.id for r in page] == [run.id]
    assert [r.id for r in shipway.search_runs(filter="tags.team = 'risk'")] == [run.id]
    assert {e.name: e.runs for e in shipway.list_experiments()}["remote-demo"] == 1

    files = shipway.download_artifacts(run.id, tmp_path / "out")
    assert sorted(f.read_text() for f in files) == ["curve", "precision-recall"]
    only = shipway.download_artifacts(run.id, tmp_path / "one", path="plots/sub")
    assert [f.name for f in only] == ["pr.txt"]

    again = shipway.log_dataset(frame, name="churn-train", target="churned")
    assert (again.version, again.content_hash) == (dataset.version, dataset.content_hash)
    pd.testing.assert_frame_equal(get_dataset("churn-train").load(), frame)

    with pytest.raises(Conflict):
        run.log_metric("late", 1.0)


def test_registry_is_the_same_in_both_modes(mode: Mode, tmp_path: Path) -> None:
    run, model, first = _train_and_register(card={"intended_use": "retention offers"}, tags={"team": "risk"})
    assert (first.version, first.run_id, first.created_by, first.flavor) == (1, run.id, os_user(), "sklearn")
    assert (
        first.lineage["datasets"][0]["name"] == "churn-train"
        and first.card["intended_use"] == "retention offers"
    )
    assert first.model_signature is not None and [c.name for c in first.model_signature.inputs] == FEATURES

    private, public = generate_keypair(tmp_path / "keys")
    second = shipway.register_model(model, name="churn", signing_key=private)
    assert second.version == 2 and second.signed and "run" in second.lineage["missing"]

    shipway.set_alias("churn", "champion", 1)
    loaded = shipway.load_model("models:/churn@champion")
    holdout = _data(50, 3)[FEATURES]
    np.testing.assert_array_equal(loaded.predict(holdout), model.predict(holdout))
    with pytest.raises(InvalidInput, match="spend"):
        loaded.predict(holdout.drop(columns=["spend"]))
    signed = shipway.load_model("models:/churn/2", public_key=public)
    np.testing.assert_array_equal(signed.predict(holdout), model.predict(holdout))

    edited = update_version("churn", 1, description="baseline", card={"limitations": "EU only"})
    assert edited.description == "baseline" and edited.card["limitations"] == "EU only"
    assert [v.version for v in list_versions("churn")] == [2, 1]
    assert get_version("churn").version == 2 and get_version("churn", alias="champion").version == 1
    assert {m.name: m.aliases for m in list_models()} == {"churn": {"champion": 1}}
    delete_alias("churn", "champion")
    assert get_version("churn", 1).aliases == []

    # Flip one byte of a stored model file: loading refuses it in both modes.
    digest = first.manifest[sorted(first.manifest)[0]]["digest"]
    blob = mode.artifacts / "sha256" / digest[:2] / digest[2:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        shipway.load_model("models:/churn/1")


def test_governance_is_the_same_in_both_modes(mode: Mode) -> None:
    governance.apply_policy(POLICY)
    assert governance.current_policy().environments == ["staging", "prod"]
    shipway.log_dataset(_data(2000, 4), name="churn-holdout", target="churned")
    _, _, version = _train_and_register()

    staged = governance.promote("churn", version.version, "staging")
    assert staged.status == "completed" and [g["status"] for g in staged.gates] == ["pass", "pass"]
    with pytest.raises(PermissionDenied, match="promote"):
        shipway.set_alias("churn", "prod", version.version)  # governed: only promotion moves it

    pending = governance.promote("churn", version.version, "prod")
    assert pending.status == "pending" and pending.approvals_needed == 2
    with pytest.raises(PermissionDenied):
        governance.approve("churn", version.version, "prod")  # the requester
    mode.use("alice")
    assert governance.whoami()["name"] == "alice"
    assert governance.approve("churn", version.version, "prod", comment="card read").status == "pending"
    mode.use("carl")
    with pytest.raises(PermissionDenied):
        governance.approve("churn", version.version, "prod")  # a contributor
    mode.use("bob")
    done = governance.approve("churn", version.version, "prod", comment="fairness ok")
    assert done.status == "completed" and [a.approver for a in done.approvals] == ["alice", "bob"]
    mode.use("me")
    assert get_version("churn", alias="prod").version == version.version
    assert governance.get_request(done.id[:8]).status == "completed"
    assert [r.environment for r in governance.list_requests(model="churn")] == ["prod", "staging"]

    # A worse model fails its gate the same way: GateFailed carrying the stored request.
    worse = LogisticRegression().fit(_data(200, 5)[FEATURES], np.random.default_rng(0).integers(0, 2, 200))
    with shipway.start_run(experiment="churn") as run:
        run.log_dataset(_data(200, 5), name="churn-train", role="train", target="churned")
    bad = shipway.register_model(worse, name="churn", run=run, input_example=_data(5, 6)[FEATURES])
    with pytest.raises(GateFailed) as failed:
        governance.promote("churn", bad.version, "staging")
    assert failed.value.details["request"]["status"] == "failed"

    info, secret = governance.create_token(role="viewer", expires_in_ms=3_600_000, description="ci")
    assert secret.startswith("swu_") and info.ceiling == "viewer"
    assert info.id in {t.id for t in governance.list_tokens()}
    assert governance.revoke_token(info.id).revoked_at is not None
    assert {p.name for p in governance.list_principals()} >= {"alice", "bob", "carl"}

    report = governance.audit.verify()
    assert report.ok and report.entries > 10
    actions = [e.action for e in governance.audit.entries(subject="model/churn")]
    assert "promotion.completed" in actions and "promotion.approved" in actions


@pytest.mark.parametrize("mode", ["remote"], indirect=True)
def test_remote_mode_refuses_what_it_must(mode: Mode, tmp_path: Path) -> None:
    with shipway.start_run(experiment="mine") as run:
        mode.use("alice")
        as_alice = shipway.client.remote_client()
        with pytest.raises(PermissionDenied, match="belongs to"):
            shipway.tracking.Run(None, run.id, "mine", "x", "alice", client=as_alice).log_param("a", 1)
        mode.use("me")

    base = str(shipway.client.remote_uri())
    # An upload whose bytes do not match the digest it claims is refused.
    response = httpx.put(
        f"{base}/api/v1/blobs/{'0' * 64}",
        content=b"not what the digest says",
        headers={"authorization": f"Bearer {mode.tokens['me']}"},
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "integrity_error"
    # Calls with no remote form say so instead of opening a local store.
    with pytest.raises(InvalidInput, match="SHIPWAY_URI"):
        shipway.registry.archive_version("churn", 1)
    mode.monkeypatch.setenv("SHIPWAY_TOKEN", "swu_" + "x" * 43 + "_abcdef")
    with pytest.raises(Unauthenticated):
        shipway.list_experiments()
    mode.monkeypatch.setenv("SHIPWAY_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match="Cannot reach"):
        shipway.list_experiments()


@pytest.mark.parametrize("mode", ["remote"], indirect=True)
def test_a_script_runs_remotely_from_another_process(mode: Mode, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import shipway\n"
        "with shipway.start_run(experiment='cli') as run:\n"
        "    run.log_metric('x', 1.5)\n"
        "print(run.id)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = shipway.get_run(done.stdout.strip())
    assert record.status == "FINISHED" and record.metrics == {"x": 1.5}
    listed = subprocess.run(
        [sys.executable, "-m", "shipway", "runs", "show", record.id, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and record.id in listed.stdout, listed.stderr
