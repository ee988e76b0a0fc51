"""Monitoring: data drift between a reference and a current sample, from raw data or stored profiles."""

from shipway.data.reference import CategoricalColumn, NumericColumn, Profile
from shipway.monitoring.drift import (
    METHODS,
    ColumnDrift,
    DriftReport,
    Method,
    default_method,
    drift,
)

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
