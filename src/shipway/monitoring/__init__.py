"""Monitoring: data drift between a reference and a current sample, from raw data or stored profiles."""

from shipway.monitoring.drift import (
    METHODS,
    ColumnDrift,
    DriftReport,
    Method,
    default_method,
    drift,
)
from shipway.monitoring.profile import CategoricalColumn, NumericColumn, Profile

__all__ = [
    "METHODS",
    "CategoricalColumn",
    "ColumnDrift",
    "DriftReport",
    "Method",
    "NumericColumn",
    "Profile",
    "default_method",
    "drift",
]
