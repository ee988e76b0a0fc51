"""The promotion policy: `shipway.yaml`, checked, then versioned into the store by `policy apply`.

A policy names the governed environments and, per model (or ``default``), per environment, the
gates a version must pass and the approvals it needs::

    environments: [dev, staging, prod]
    models:
      default:
        staging:
          gates:
            - metric_threshold: {metric: auc, dataset: churn-holdout, op: ">=", value: 0.80}
        prod:
          approvals: {count: 2, role: approver, distinct_from: [author, requester]}

Every problem in a file is reported at once, each with its path in the document.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipway.client.mode import remote_client
from shipway.core.actor import current_actor
from shipway.core.clock import now_ms
from shipway.core.errors import InvalidInput, NotFound
from shipway.governance.identity import require
from shipway.store import Store, audit, get_store, schema

STARTER = """\
# Shipway promotion policy. Apply it with `shipway policy apply shipway.yaml`.
# Aliases named under `environments` are governed: they move only through `shipway promote`.
environments: [dev, staging, prod]

models:
  default:                      # or a model's name, to override for that model
    staging:
      gates:
        # Metrics are computed by Shipway from the model and a logged dataset version.
        # - metric_threshold: {metric: auc, dataset: churn-holdout, op: ">=", value: 0.80}
        # - no_regression: {metric: auc, dataset: churn-holdout, against: prod, tolerance: 0.005}
        - lineage_required: [git_commit, training_dataset, environment]
        - artifact_format: {allow: [skops, onnx, xgboost, lightgbm, torchscript]}
    prod:
      gates:
        - signature_required: true
        # - fairness: {metric: demographic_parity_ratio, sensitive: gender, dataset: churn-holdout,
        #              op: ">=", value: 0.8, min_group_size: 100}
        - model_card_complete: [intended_use, limitations]
      approvals: {count: 2, role: approver, distinct_from: [author, requester]}
"""

Op = Literal[">=", ">", "<=", "<", "=="]
LINEAGE_ITEMS = ("run", "git_commit", "clean_worktree", "training_dataset", "environment", "metrics")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricThreshold(_Strict):
    metric: str
    dataset: str
    dataset_version: int | None = None
    op: Op = ">="
    value: float


class NoRegression(_Strict):
    metric: str
    dataset: str
    dataset_version: int | None = None
    against: str
    tolerance: float = Field(default=0.0, ge=0)


class ArtifactFormat(_Strict):
    allow: list[str] = Field(min_length=1)


class SignatureRequired(_Strict):
    # A PEM public key (the file is read when the policy is applied); without one the gate checks
    # that a signature exists and the manifest is intact.
    public_key: str | None = None


class Fairness(_Strict):
    metric: Literal["demographic_parity_ratio", "demographic_parity_difference", "equalized_odds_difference"]
    sensitive: str
    dataset: str
    dataset_version: int | None = None
    op: Op = ">="
    value: float
    min_group_size: int = Field(default=30, ge=1)
    positive: str | int | None = None


class Approvals(_Strict):
    count: int = Field(default=1, ge=0, le=10)
    role: Literal["approver", "admin"] = "approver"
    distinct_from: list[Literal["author", "requester"]] = ["author", "requester"]


class Stage(_Strict):
    gates: list[dict[str, Any]] = []
    approvals: Approvals | None = None


class PolicyDocument(_Strict):
    environments: list[str] = Field(min_length=1)
    models: dict[str, dict[str, Stage]] = {}

    @field_validator("environments")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("environments must not repeat")
        return value


GATE_CONFIGS: dict[str, type[BaseModel] | None] = {
    "metric_threshold": MetricThreshold,
    "no_regression": NoRegression,
    "lineage_required": None,  # a list of LINEAGE_ITEMS
    "artifact_format": ArtifactFormat,
    "signature_required": SignatureRequired,  # or `true`
    "fairness": Fairness,
    "model_card_complete": None,  # a list of card fields
}


@dataclass(frozen=True)
class GateSpec:
    """One configured gate: its type and checked configuration."""

    kind: str
    config: Any


@dataclass(frozen=True)
class Policy:
    """A stored policy version."""

    version: int
    document: dict[str, Any]
    digest: str
    applied_at: int
    applied_by: str
    source: str

    @property
    def environments(self) -> list[str]:
        return list(self.document["environments"])

    def stage(self, model: str, environment: str) -> tuple[list[GateSpec], Approvals | None]:
        """Gates and approvals for promoting ``model`` to ``environment`` (model entry, else default)."""
        models = self.document.get("models", {})
        stages = models.get(model) if model in models else models.get("default", {})
        stage = (stages or {}).get(environment)
        if stage is None:
            return [], None
        gates = [_gate_spec(item, "") for item in stage.get("gates", [])]
        approvals = Approvals(**stage["approvals"]) if stage.get("approvals") else None
        return gates, approvals


def _gate_spec(item: Any, where: str) -> GateSpec:
    if not isinstance(item, dict) or len(item) != 1:
        raise InvalidInput(f"{where}: each gate is a mapping with one key, the gate's type.")
    kind, raw = next(iter(item.items()))
    if kind not in GATE_CONFIGS:
        raise InvalidInput(f"{where}: unknown gate {kind!r}; gates are {', '.join(GATE_CONFIGS)}.")
    if kind == "lineage_required":
        items = raw if isinstance(raw, list) else None
        if not items or any(i not in LINEAGE_ITEMS for i in items):
            raise InvalidInput(f"{where}.lineage_required: a list drawn from {', '.join(LINEAGE_ITEMS)}.")
        return GateSpec(kind, list(items))
    if kind == "model_card_complete":
        from shipway.registry import CARD_FIELDS

        items = raw if isinstance(raw, list) else None
        if not items or any(i not in CARD_FIELDS for i in items):
            raise InvalidInput(f"{where}.model_card_complete: a list drawn from {', '.join(CARD_FIELDS)}.")
        return GateSpec(kind, list(items))
    if kind == "signature_required" and raw is True:
        raw = {}
    if kind == "signature_required" and raw is False:
        raise InvalidInput(f"{where}.signature_required: to drop the gate, remove it instead of false.")
    model = GATE_CONFIGS[kind]
    assert model is not None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}.{kind}: expected a mapping of settings.")
    try:
        return GateSpec(kind, model(**raw))
    except ValidationError as exc:
        problems = [f"{where}.{kind}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("; ".join(problems), details=problems) from None


def parse(source: str, *, base: Path | None = None) -> dict[str, Any]:
    """Check a policy's YAML text; returns the document to store, or InvalidInput listing every problem."""
    import yaml

    try:
        raw = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"The policy is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput("A policy is a YAML mapping with `environments` and `models`.")
    try:
        doc = PolicyDocument(**raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("The policy has problems: " + "; ".join(problems), details=problems) from None
    problems = []
    stored: dict[str, Any] = {"environments": doc.environments, "models": {}}
    for model, stages in doc.models.items():
        stored["models"][model] = {}
        for env, stage in stages.items():
            where = f"models.{model}.{env}"
            if env not in doc.environments:
                problems.append(f"{where}: {env!r} is not among environments {doc.environments}")
                continue
            gates = []
            for i, item in enumerate(stage.gates):
                try:
                    spec = _gate_spec(item, f"{where}.gates[{i}]")
                except InvalidInput as exc:
                    problems.append(str(exc))
                    continue
                if spec.kind == "signature_required" and spec.config.public_key:
                    spec = GateSpec(spec.kind, _embed_key(spec.config, base, f"{where}.gates[{i}]", problems))
                if spec.kind == "no_regression" and spec.config.against not in doc.environments:
                    problems.append(
                        f"{where}.gates[{i}].no_regression.against: "
                        f"{spec.config.against!r} is not an environment"
                    )
                config = spec.config.model_dump() if isinstance(spec.config, BaseModel) else spec.config
                gates.append({spec.kind: config})
            entry: dict[str, Any] = {"gates": gates}
            if stage.approvals is not None:
                entry["approvals"] = stage.approvals.model_dump()
            stored["models"][model][env] = entry
    if problems:
        raise InvalidInput("The policy has problems: " + "; ".join(problems), details=problems)
    return stored


def key_path(text: str, base: Path | None) -> Path:
    """Where a policy's public-key path points: relative paths are relative to the policy file."""
    return Path(text) if base is None or Path(text).is_absolute() else base / text


def _embed_key(config: SignatureRequired, base: Path | None, where: str, problems: list[str]) -> Any:
    text = config.public_key or ""
    if "BEGIN PUBLIC KEY" not in text:
        path = key_path(text, base)
        try:
            text = path.read_text()
        except OSError as exc:
            problems.append(f"{where}.signature_required.public_key: cannot read {path}: {exc.strerror}")
            return config
    return SignatureRequired(public_key=text)


def _policy(row: Any) -> Policy:
    return Policy(row.version, row.document, row.digest, row.applied_at, row.applied_by, row.source)


def apply_policy(source: str, *, base: Path | None = None, store: Store | None = None) -> Policy:
    """Check and store a new policy version (admins); unchanged text is not stored twice."""
    client = remote_client(store)
    if client is not None:
        return client.apply_policy(source, base)
    require("admin")
    document = parse(source, base=base)
    digest = hashlib.sha256(audit.canonical(audit.normalize(document)).encode()).hexdigest()
    store = store or get_store()
    p = schema.policies
    with store.write() as conn:
        latest = conn.execute(sa.select(p).order_by(p.c.version.desc()).limit(1)).first()
        if latest is not None and latest.digest == digest:
            return _policy(latest)
        version = (latest.version if latest is not None else 0) + 1
        conn.execute(
            p.insert().values(
                version=version,
                source=source,
                document=document,
                digest=digest,
                applied_at=now_ms(),
                applied_by=current_actor().name,
            )
        )
        audit.append(conn, "policy.applied", f"policy/{version}", {"digest": digest})
        return _policy(conn.execute(sa.select(p).where(p.c.version == version)).one())


def apply_file(path: str | Path, *, store: Store | None = None) -> Policy:
    """Apply the policy in a YAML file (key paths in it are relative to the file)."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        raise InvalidInput(
            f"Cannot read the policy {path}: {exc.strerror}. `shipway init` writes a starter."
        ) from exc
    return apply_policy(source, base=path.parent, store=store)


def current_policy(*, store: Store | None = None) -> Policy | None:
    """The policy in force, or None when none was ever applied."""
    client = remote_client(store)
    if client is not None:
        return client.current_policy()
    store = store or get_store()
    p = schema.policies
    with store.read() as conn:
        row = conn.execute(sa.select(p).order_by(p.c.version.desc()).limit(1)).first()
    return _policy(row) if row is not None else None


def get_policy(version: int, *, store: Store | None = None) -> Policy:
    store = store or get_store()
    p = schema.policies
    with store.read() as conn:
        row = conn.execute(sa.select(p).where(p.c.version == version)).first()
    if row is None:
        raise NotFound(f"No policy version {version}; `shipway policy show` lists the one in force.")
    return _policy(row)
