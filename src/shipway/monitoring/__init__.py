"""Monitoring: data drift between a reference and a current sample, from raw data or stored profiles;
and of a deployment from its prediction log: drift, data quality, live quality from labels."""

from shipway.data.reference import CategoricalColumn, NumericColumn, Profile
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
from shipway.monitoring.quality import QualityReport, QualityRow, live_quality

__all__ = [
    "METHODS",
    "CategoricalColumn",
    "ColumnDrift",
    "DriftReport",
    "FeedbackReceipt",
    "LiveDriftReport",
    "Method",
    "NumericColumn",
    "Profile",
    "QualityCheck",
    "QualityReport",
    "QualityRow",
    "arm_drift",
    "default_method",
    "drift",
    "live_drift",
    "live_quality",
    "record_feedback",
]
