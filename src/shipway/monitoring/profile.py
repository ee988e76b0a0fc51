"""Profiles moved to :mod:`shipway.data.reference` (the registry builds a version's reference profile
when it is registered, below monitoring); these names stay importable from here."""

from shipway.data.reference import (
    BINS,
    FORMAT,
    MAX_CATEGORIES,
    CategoricalColumn,
    Column,
    NumericColumn,
    Profile,
    bin_index,
    column_profile,
    reference_edges,
)

__all__ = [
    "BINS",
    "FORMAT",
    "MAX_CATEGORIES",
    "CategoricalColumn",
    "Column",
    "NumericColumn",
    "Profile",
    "bin_index",
    "column_profile",
    "reference_edges",
]
