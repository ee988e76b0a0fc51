"""Policy-gated promotion with four-eyes approval, end to end on a real store (SQLite and PostgreSQL)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import shipway
from shipway import governance
from shipway.core.actor import acting_as
from shipway.governance import audit, identity
from shipway.registry import generate_keypair, sign_version, update_version
from shipway.store import Store

POLICY = """
environments: [dev, staging, prod]
models:
  default:
    staging:
      gates:
        - metric_threshold: {metric: auc, dataset: churn-holdout, op: ">=", value: 0.80}
        - no_regression: {metric: auc, dataset: churn-holdout, against: prod, tolerance: 0.005}
        - lineage_required: [run, training_dataset, environment]
        - artifact_format: {allow: [skops, onnx]}
    prod:
      gates:
        - signature_required: true
        - fairness: {metric: demographic_parity_ratio, sensitive: gender, dataset: churn-holdout,
                     op: ">=", value: 0.8, min_group_size: 100}
        - model_card_complete: [intended_use, limitations]
      approvals: {count: 2, role: approver, distinct_from: [author, requester]}
"""


def _data(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["tenure", "spend", "calls"])
    frame["gender"] = rng.choice(["f", "m"], size=rows)
    logits = 2.0 * frame["tenure"] - 1.5 * frame["spend"] + rng.normal(scale=0.7, size=rows)
    frame["churned"] = (logits > 0).astype(int)
    return frame


FEATURES = ["tenure", "spend", "calls"]


def _register(store: Store, *, noise: bool = False) -> shipway.registry.ModelVersion:
    train = _data(2000, 1)
    y = train["churned"].to_numpy()
    if noise:  # a much worse model: labels shuffled
        y = np.random.default_rng(5).permutation(y)
    with shipway.start_run(experiment="churn", store=store) as run:
        run.log_dataset(train, name="churn-train", role="train", target="churned")
        model = LogisticRegression().fit(train[FEATURES], y)
        run.log_metric("auc", 0.99)  # what the run claims; gates must not believe it
    return shipway.register_model(model, name="churn", run=run, input_example=train[FEATURES].head(20))


@pytest.fixture
def setup(store: Store, tmp_path: Path):
    shipway.log_dataset(_data(4000, 2), name="churn-holdout", target="churned")
    governance.apply_policy(POLICY, store=store)
    people = {}
    for name, role in [("alice", "approver"), ("bob", "approver"), ("carol", "viewer")]:
        governance.add_principal(name, role, store=store)
        _, secret = governance.create_token(name, store=store)
        people[name] = identity.authenticate(secret, store=store)
    return people


def test_staging_gates_pass_on_metrics_shipway_computes_and_the_alias_moves(store: Store, setup) -> None:
    v1 = _register(store)
    request = governance.promote("churn", v1.version, "staging", store=store)
    assert request.status == "completed"
    assert shipway.registry.get_version("churn", alias="staging").version == v1.version
    gates = {g["gate"]: g for g in request.gates}
    assert set(gates) == {"metric_threshold", "no_regression", "lineage_required", "artifact_format"}
    assert all(g["status"] == "pass" for g in gates.values())
    holdout = shipway.data.get_dataset("churn-holdout").load()
    expected = roc_auc_score(
        holdout["churned"], shipway.load_model(v1.uri).predict_proba(holdout[FEATURES])[:, 1]
    )
    assert gates["metric_threshold"]["measured"]["value"] == pytest.approx(expected, abs=1e-12)
    assert gates["metric_threshold"]["measured"]["value"] < 0.99  # not the run's claim
    assert "churn-holdout v1 (4000 rows)" in gates["metric_threshold"]["summary"]
    actions = [e.action for e in audit.entries(subject=f"model/churn/{v1.version}", store=store)]
    assert actions[-7:] == ["promotion.requested"] + ["gate.evaluated"] * 4 + [
        "alias.set",
        "promotion.completed",
    ]
    assert audit.verify(store=store).ok


def test_governed_aliases_refuse_plain_moves(store: Store, setup) -> None:
    v1 = _register(store)
    with pytest.raises(shipway.PermissionDenied, match="shipway promote churn <version> --to prod"):
        shipway.set_alias("churn", "prod", v1.version)
    shipway.set_alias("churn", "champion", v1.version)  # not an environment: still a plain alias
    with pytest.raises(shipway.InvalidInput, match="not an environment of the policy"):
        governance.promote("churn", v1.version, "champion", store=store)


def test_a_worse_model_fails_threshold_and_regression_with_a_full_report(store: Store, setup) -> None:
    v1 = _register(store)
    # Put v1 in prod with the prod gates satisfied, so v2 has a champion to regress against.
    _make_prod_ready(store, v1.version)
    governance.promote("churn", v1.version, "prod", store=store)
    with acting_as(setup["alice"]):
        governance.approve("churn", v1.version, "prod", comment="ok", store=store)
    with acting_as(setup["bob"]):
        governance.approve("churn", v1.version, "prod", comment="ok", store=store)
    v2 = _register(store, noise=True)
    with pytest.raises(shipway.GateFailed) as caught:
        governance.promote("churn", v2.version, "staging", store=store)
    report = caught.value.details["request"]
    statuses = {g["gate"]: g["status"] for g in report["report"]["gates"]}
    assert statuses == {
        "metric_threshold": "fail",
        "no_regression": "fail",
        "lineage_required": "pass",
        "artifact_format": "pass",
    }
    assert report["status"] == "failed"
    assert "metric_threshold: fail, auc = 0." in caught.value.message
    regression = next(g for g in report["report"]["gates"] if g["gate"] == "no_regression")
    assert regression["measured"]["champion"] == v1.version
    assert shipway.registry.get_version("churn", alias="prod").version == v1.version
    assert governance.list_requests(model="churn", status="failed", store=store)[0].id == report["id"]


def _make_prod_ready(store: Store, version: int) -> None:
    private, _ = generate_keypair(Path(store.settings.home) / "keys", f"k{version}")
    sign_version("churn", version, private, store=store)
    update_version(
        "churn", version, card={"intended_use": "retention offers", "limitations": "EU only"}, store=store
    )


def test_prod_needs_two_distinct_approvers_and_refuses_author_requester_and_viewers(
    store: Store, setup
) -> None:
    v1 = _register(store)
    with pytest.raises(shipway.GateFailed) as caught:
        governance.promote("churn", v1.version, "prod", store=store)
    failing = {g["gate"] for g in caught.value.details["request"]["report"]["gates"] if g["status"] != "pass"}
    assert failing == {"signature_required", "model_card_complete"}
    _make_prod_ready(store, v1.version)
    request = governance.promote("churn", v1.version, "prod", store=store)
    assert request.status == "pending" and request.approvals_needed == 2
    fairness = next(g for g in request.gates if g["gate"] == "fairness")
    assert fairness["status"] == "pass" and {g["group"] for g in fairness["measured"]["groups"]} == {"f", "m"}
    # The OS user registered and requested: both four-eyes rules refuse it.
    with pytest.raises(shipway.PermissionDenied, match="other than the author"):
        governance.approve("churn", v1.version, "prod", store=store)
    with acting_as(setup["carol"]), pytest.raises(shipway.PermissionDenied, match="holds role viewer"):
        governance.approve("churn", v1.version, "prod", store=store)
    with acting_as(setup["alice"]):
        assert (
            governance.approve("churn", v1.version, "prod", comment="card ok", store=store).status
            == "pending"
        )
        with pytest.raises(shipway.Conflict, match="already decided"):
            governance.approve("churn", v1.version, "prod", store=store)
    with pytest.raises(shipway.NotFound):
        shipway.registry.get_version("churn", alias="prod")
    with acting_as(setup["bob"]):
        done = governance.approve("churn", v1.version, "prod", comment="fairness ok", store=store)
    assert done.status == "completed" and [a.approver for a in done.approvals] == ["alice", "bob"]
    assert shipway.registry.get_version("churn", alias="prod").version == v1.version
    approvals = audit.entries(action="promotion.approved", store=store)
    assert [e.actor for e in approvals] == ["alice", "bob"]


def test_a_policy_change_lapses_pending_approvals(store: Store, setup) -> None:
    v1 = _register(store)
    _make_prod_ready(store, v1.version)
    governance.promote("churn", v1.version, "prod", store=store)
    with acting_as(setup["alice"]):
        governance.approve("churn", v1.version, "prod", store=store)
    governance.apply_policy(POLICY.replace("count: 2", "count: 1"), store=store)
    with (
        acting_as(setup["bob"]),
        pytest.raises(shipway.Conflict, match="lapsed: the policy changed from v1 to v2"),
    ):
        governance.approve("churn", v1.version, "prod", store=store)
    assert governance.list_requests(model="churn", store=store)[0].status == "lapsed"
    with pytest.raises(shipway.NotFound):
        shipway.registry.get_version("churn", alias="prod")


def test_rejection_needs_a_reason_and_closes_the_request(store: Store, setup) -> None:
    v1 = _register(store)
    _make_prod_ready(store, v1.version)
    governance.promote("churn", v1.version, "prod", store=store)
    with acting_as(setup["alice"]):
        with pytest.raises(shipway.InvalidInput, match="needs a reason"):
            governance.reject("churn", v1.version, "prod", reason=" ", store=store)
        rejected = governance.reject(
            "churn", v1.version, "prod", reason="fairness table is thin", store=store
        )
    assert rejected.status == "rejected" and rejected.reason == "fairness table is thin"
    with acting_as(setup["bob"]), pytest.raises(shipway.NotFound, match="No pending request"):
        governance.approve("churn", v1.version, "prod", store=store)
    assert governance.get_request(rejected.id[:8], store=store).status == "rejected"


def test_missing_evidence_fails_the_gate(store: Store, setup) -> None:
    v1 = _register(store)
    governance.apply_policy(
        POLICY.replace("dataset: churn-holdout, op", "dataset: no-such-data, op"), store=store
    )
    with pytest.raises(shipway.GateFailed) as caught:
        governance.promote("churn", v1.version, "staging", store=store)
    gate = caught.value.details["request"]["report"]["gates"][0]
    assert gate["status"] == "insufficient_evidence" and "no-such-data" in gate["summary"]


def test_small_groups_make_fairness_insufficient_evidence(store: Store, setup) -> None:
    v1 = _register(store)
    _make_prod_ready(store, v1.version)
    governance.apply_policy(POLICY.replace("min_group_size: 100", "min_group_size: 100000"), store=store)
    with pytest.raises(shipway.GateFailed) as caught:
        governance.promote("churn", v1.version, "prod", store=store)
    gate = next(g for g in caught.value.details["request"]["report"]["gates"] if g["gate"] == "fairness")
    assert gate["status"] == "insufficient_evidence" and "excluded" in gate["summary"]


def test_without_a_policy_promotion_is_immediate_but_recorded(store: Store) -> None:
    v1 = _register(store)
    request = governance.promote("churn", v1.version, "prod", store=store)
    assert request.status == "completed" and request.gates == [] and request.policy_version is None
    assert shipway.registry.get_version("churn", alias="prod").version == v1.version
    assert [e.action for e in audit.entries(action="promotion.completed", store=store)] == [
        "promotion.completed"
    ]


def test_policy_files_report_every_problem_with_its_path(store: Store) -> None:
    bad = """
environments: [staging, prod]
models:
  default:
    qa: {gates: []}
    staging:
      gates:
        - metric_threshold: {metric: auc, dataset: h, op: "=>", value: 0.8}
        - no_such_gate: {}
        - no_regression: {metric: auc, dataset: h, against: dev}
"""
    with pytest.raises(shipway.InvalidInput) as caught:
        governance.apply_policy(bad, store=store)
    problems = caught.value.details
    assert len(problems) == 4
    assert any("models.default.qa" in p for p in problems)
    assert any("gates[0].metric_threshold.op" in p for p in problems)
    assert any("unknown gate 'no_such_gate'" in p for p in problems)
    assert any("'dev' is not an environment" in p for p in problems)
    with pytest.raises(shipway.InvalidInput, match="not valid YAML"):
        governance.apply_policy("environments: [a", store=store)
    assert governance.current_policy(store=store) is None


def test_applying_the_same_policy_twice_keeps_one_version(store: Store) -> None:
    first = governance.apply_policy(POLICY, store=store)
    assert governance.apply_policy(POLICY, store=store).version == first.version == 1
    with store.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM policies")).scalar() == 1
