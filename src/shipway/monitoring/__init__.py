"""Monitoring: data drift between a reference and a current sample, from raw data or stored profiles;
and of a deployment from its prediction log: drift, data quality, live quality from labels; alert
rules, SLOs with burn-rate alerts, the monitor that evaluates them, and their Prometheus rules;
and the retention of prediction logs and labels."""

from shipway.data.reference import CategoricalColumn, NumericColumn, Profile
from shipway.monitoring.alerts import (
    Alert,
    Rule,
    ack_alert,
    add_rule,
    delete_rule,
    list_alerts,
    list_rules,
    register_action,
    silence,
)
from shipway.monitoring.arms import arm_drift
from shipway.monitoring.dataquality import QualityCheck
from shipway.monitoring.drift import (
    METHODS,
    ColumnDrift,
    DriftReport,
    Method,
    default_method,
    drift,
)
from shipway.monitoring.feedback import FeedbackReceipt, record_feedback
from shipway.monitoring.live import LiveDriftReport, live_drift
from shipway.monitoring.loop import Monitor
from shipway.monitoring.quality import QualityReport, QualityRow, live_quality
from shipway.monitoring.retention import PruneReport, prune_logs
from shipway.monitoring.rules import export_rules
from shipway.monitoring.slo import SLO, delete_slo, get_slo, set_slo, slo_status

__all__ = [
    "METHODS",
    "SLO",
    "Alert",
    "CategoricalColumn",
    "ColumnDrift",
    "DriftReport",
    "FeedbackReceipt",
    "LiveDriftReport",
    "Method",
    "Monitor",
    "NumericColumn",
    "Profile",
    "PruneReport",
    "QualityCheck",
    "QualityReport",
    "QualityRow",
    "Rule",
    "ack_alert",
    "add_rule",
    "arm_drift",
    "default_method",
    "delete_rule",
    "delete_slo",
    "drift",
    "export_rules",
    "get_slo",
    "list_alerts",
    "list_rules",
    "live_drift",
    "live_quality",
    "prune_logs",
    "record_feedback",
    "register_action",
    "set_slo",
    "silence",
    "slo_status",
]
