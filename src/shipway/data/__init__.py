"""Datasets: content-hashed versions, schemas and profiles."""

from shipway.data.datasets import (
    DatasetVersion,
    content_hash,
    get_dataset,
    link_dataset,
    log_dataset,
)
from shipway.data.profile import profile_frame

__all__ = [
    "DatasetVersion",
    "content_hash",
    "get_dataset",
    "link_dataset",
    "log_dataset",
    "profile_frame",
]
