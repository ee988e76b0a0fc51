"""The metadata tables, as SQLAlchemy Core. Alembic migrations under ``migrations/`` create them.

Times are integer milliseconds since the epoch (UTC). Metric values are ``NULL`` for NaN, so
SQLite and PostgreSQL agree. Each parameter keeps its text and, when it reads as a number, a
float copy, so a filter such as ``params.depth = 6`` compares numbers on both databases
without casting text in SQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from shipway.store.revision import SCHEMA_REVISION as SCHEMA_REVISION


class _JSON(sa.types.TypeDecorator[Any]):
    """JSON text on SQLite, JSONB on PostgreSQL.

    ``sa.JSON().with_variant(JSONB(), "postgresql")`` means the same, but building its ``JSONB()``
    imports SQLAlchemy's PostgreSQL dialect and the modules of its four drivers (~25 ms) in every
    process, a SQLite store's included. This type imports it when a PostgreSQL engine first
    compiles a JSON column.
    """

    impl = sa.JSON
    cache_ok = True
    # sa.JSON's own setting: a Python None is JSON null, not SQL NULL (a test pins it).
    should_evaluate_none = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


JSONType = _JSON()

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

environments = sa.Table(
    "environments",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("packages", JSONType, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("experiment_id", sa.String(32), sa.ForeignKey("experiments.id"), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_time", sa.BigInteger, nullable=False),
    sa.Column("end_time", sa.BigInteger, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("user", sa.String(256), nullable=True),
    sa.Column("host", sa.String(256), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("pid_started", sa.BigInteger, nullable=True),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=True),
    sa.Column("environment_hash", sa.String(64), sa.ForeignKey("environments.hash"), nullable=True),
    sa.Column("lineage", JSONType, nullable=False),
    sa.Index(None, "experiment_id", "start_time"),
)

params = sa.Table(
    "params",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("num", sa.Float, nullable=True),
    sa.Index(None, "key", "num"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("key", sa.String(256), nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Index(None, "run_id", "key", "step"),
)

latest_metrics = sa.Table(
    "latest_metrics",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Index(None, "key", "value"),
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("blob_digest", sa.String(64), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("schema", JSONType, nullable=False),
    sa.Column("num_rows", sa.BigInteger, nullable=False),
    sa.Column("profile", JSONType, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("name", "content_hash"),
    sa.UniqueConstraint("name", "version"),
)

run_datasets = sa.Table(
    "run_datasets",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id"), primary_key=True),
    sa.Column("role", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(256), nullable=True),
    sa.Column("logged_at", sa.BigInteger, nullable=False),
)

run_artifacts = sa.Table(
    "run_artifacts",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("logged_at", sa.BigInteger, nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=True),
)

# Immutable once written: flavor, format, manifest, manifest_digest, schema, lineage, run_id.
# Editable (every change recorded in model_version_edits): description, tags, card.
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=True),
    sa.Column("flavor", sa.String(32), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("flavor_meta", JSONType, nullable=False),
    sa.Column("manifest", JSONType, nullable=False),
    sa.Column("manifest_digest", sa.String(64), nullable=False),
    sa.Column("schema", JSONType, nullable=True),
    sa.Column("lineage", JSONType, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("card", JSONType, nullable=False),
    sa.Column("signature", sa.Text, nullable=True),
    sa.Column("signing_key", sa.String(64), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=True),
    sa.Column("archived_at", sa.BigInteger, nullable=True),
    sa.Column("artifacts_deleted_at", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("model_id", "version"),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(256), nullable=True),
)

model_version_edits = sa.Table(
    "model_version_edits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.String(32), sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("old", JSONType, nullable=True),
    sa.Column("new", JSONType, nullable=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("by", sa.String(256), nullable=True),
    sa.Index(None, "version_id", "at"),
)

# -- governance -------------------------------------------------------------------------------

# The append-only, hash-chained log of every state change. Triggers refuse UPDATE and DELETE;
# ``payload`` is the canonical JSON text that the hash covers, so verification never depends on
# how a database re-serializes JSON.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index(None, "time"),
)

# One row: the chain's head, moved in the same transaction as each append, so deleting the
# newest entries is caught even without an exported checkpoint.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("disabled_at", sa.BigInteger, nullable=True),
)

role_grants = sa.Table(
    "role_grants",
    metadata,
    sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id"), primary_key=True),
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(32), nullable=False),
    sa.Column("ceiling", sa.String(16), nullable=True),
    sa.Column("models", JSONType, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("last_used_at", sa.BigInteger, nullable=True),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("document", JSONType, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("applied_at", sa.BigInteger, nullable=False),
    sa.Column("applied_by", sa.String(256), nullable=False),
)

promotion_requests = sa.Table(
    "promotion_requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("policy_version", sa.Integer, nullable=True),
    sa.Column("artifact_digest", sa.String(64), nullable=False),
    sa.Column("approvals_needed", sa.Integer, nullable=False),
    sa.Column("report", JSONType, nullable=False),
    sa.Column("requested_by", sa.String(256), nullable=False),
    sa.Column("requested_at", sa.BigInteger, nullable=False),
    sa.Column("decided_at", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Index(None, "model_id", "version", "environment"),
    sa.Index(None, "status"),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("request_id", sa.String(32), sa.ForeignKey("promotion_requests.id"), nullable=False),
    sa.Column("approver", sa.String(256), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("artifact_digest", sa.String(64), nullable=False),
    sa.Column("policy_version", sa.Integer, nullable=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("request_id", "approver"),
)

# -- deployments and rollouts (0004) -----------------------------------------------------------

# One row per (model, environment) served: the stable version, and the rollout in progress if any.
# ``generation`` grows with every change, so serving workers notice one by reading one number.
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), nullable=False),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("stable_version", sa.Integer, nullable=True),
    sa.Column("candidate_version", sa.Integer, nullable=True),
    sa.Column("rollout_id", sa.String(32), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("step_started_at", sa.BigInteger, nullable=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("verdict", JSONType, nullable=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(256), nullable=False),
    sa.UniqueConstraint("model_id", "environment"),
)

# Every rollout from one version to another, with how it ended: the record delivery KPIs read.
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("deployment_id", sa.String(32), sa.ForeignKey("deployments.id"), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("strategy", sa.String(16), nullable=False),
    sa.Column("config", JSONType, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("started_by", sa.String(256), nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("reasons", JSONType, nullable=True),
    sa.Index(None, "deployment_id", "started_at"),
)

# What each serving worker saw of each arm during one step of a rollout (an ArmWindow, cumulative
# for the step); the controller adds the workers' windows up.
rollout_windows = sa.Table(
    "rollout_windows",
    metadata,
    sa.Column("rollout_id", sa.String(32), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("arm", sa.String(16), primary_key=True),
    sa.Column("worker", sa.String(128), primary_key=True),
    sa.Column("window", JSONType, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# -- monitoring: traffic counters, SLOs, alert rules and alerts (0005) ---------------------------

# What each serving worker answered for each (model, version) in one minute of one environment
# (the deployments' environment, or the alias it serves; "" for none), cumulative for the minute
# (saving twice never counts twice; readers add the workers up). ``latency`` holds, for each bound
# of shipway.core.latency.LATENCY_BUCKETS, how many requests took at most that long.
traffic = sa.Table(
    "traffic",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("environment", sa.String(64), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("worker", sa.String(128), primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("latency", JSONType, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index(None, "minute"),
)

# One service level objective per model, over the traffic of one environment: availability (share
# of requests without a server error) and latency (share of requests at most ``latency_ms``, a
# bound of the latency histogram).
slos = sa.Table(
    "slos",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("availability", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("latency_share", sa.Float, nullable=True),
    sa.Column("webhooks", JSONType, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(256), nullable=False),
)

alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("window_ms", sa.BigInteger, nullable=False),
    sa.Column("for_ms", sa.BigInteger, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("webhooks", JSONType, nullable=False),
    sa.Column("actions", JSONType, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Index(None, "model"),
)

# One row per episode of a rule's condition on a model: pending, firing, then resolved (or dropped
# when it clears before firing). ``open_key`` is "rule/model" while the alert is pending or firing
# and NULL after, so the database itself keeps one open alert per (rule, model); ``revision``
# grows with each change, and every change is conditional on the revision read (two monitors on
# one store never both move, and so never both notify).
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("rule", sa.String(128), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("open_key", sa.String(400), nullable=True, unique=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("fired_at", sa.BigInteger, nullable=True),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("acked_at", sa.BigInteger, nullable=True),
    sa.Column("acked_by", sa.String(256), nullable=True),
    sa.Column("notified", sa.String(16), nullable=True),
    sa.Column("notified_at", sa.BigInteger, nullable=True),
    sa.Index(None, "model", "started_at"),
    sa.Index(None, "state"),
)

# Notifications held back for a model (every rule, or one) until ``until``.
silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("rule", sa.String(128), nullable=True),
    sa.Column("until", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Index(None, "model", "until"),
)
