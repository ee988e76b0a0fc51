"""Stored profiles of dataset versions: the reference that live drift compares a deployment with.

A dataset version's profile (:class:`~shipway.data.reference.Profile`) is built once from its stored
Parquet copy and kept in the artifact store as gzipped JSON under
``profiles/datasets/<content hash>.json.gz``, so monitoring never rereads the training data. The
content hash names the data, not the dataset's name, so versions of several models trained on the
same table share one profile. Registering a model version builds the profile of its training
dataset when the table is small (``REGISTER_LIMIT`` values); larger ones are built on first use.
"""

from __future__ import annotations

import gzip
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipway.core.errors import InvalidInput, NotFound
from shipway.data.reference import FORMAT, Profile

if TYPE_CHECKING:
    from shipway.data.datasets import DatasetVersion
    from shipway.store import Store

log = logging.getLogger("shipway.data")

PREFIX = "profiles/datasets/"
# Training tables of up to this many values (rows x columns) are profiled while a version registers:
# about a second's work on a small machine; larger ones wait until monitoring first needs them.
REGISTER_LIMIT = 5_000_000


def profile_key(content_hash: str) -> str:
    """The artifact-store key of the profile of the dataset with this content hash."""
    if len(content_hash) != 64 or not all(c in "0123456789abcdef" for c in content_hash):
        raise InvalidInput(f"{content_hash!r} is not a dataset content hash (64 lowercase hex characters).")
    return f"{PREFIX}{content_hash}.json.gz"


def stored_profile(dataset: DatasetVersion, *, store: Store) -> Profile | None:
    """The stored profile of ``dataset``, or None when it has not been built yet."""
    key = profile_key(dataset.content_hash)
    backend = store.blobs.backend
    if not backend.exists(key):
        return None
    with tempfile.TemporaryDirectory(prefix="shipway-profile-") as tmp:
        path = Path(tmp) / "profile.json.gz"
        backend.get(key, path)
        try:
            data = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, ValueError) as err:
            raise InvalidInput(
                f"The stored profile of dataset {dataset.name!r} version {dataset.version} ({key}) is "
                f"unreadable: {err}. Delete it and it is built again on next use."
            ) from err
    if data.get("format") != FORMAT:
        return None  # an older layout: built again
    return Profile.from_dict(data)


def save_profile(dataset: DatasetVersion, profile: Profile, *, store: Store) -> str:
    """Store ``profile`` as the profile of ``dataset``; returns its key."""
    key = profile_key(dataset.content_hash)
    body = gzip.compress(json.dumps(profile.to_dict(), separators=(",", ":")).encode(), mtime=0)
    with tempfile.TemporaryDirectory(prefix="shipway-profile-") as tmp:
        path = Path(tmp) / "profile.json.gz"
        path.write_bytes(body)
        store.blobs.backend.put(key, path)
    return key


def build_profile(dataset: DatasetVersion, *, store: Store) -> Profile:
    """Profile ``dataset`` from its stored Parquet copy (its numbers and categories)."""
    with tempfile.TemporaryDirectory(prefix="shipway-profile-") as tmp:
        try:
            path = store.blobs.get_file(dataset.blob_digest, Path(tmp) / "data.parquet")
        except NotFound as err:
            raise NotFound(
                f"The data of dataset {dataset.name!r} version {dataset.version} is missing from the "
                f"artifact store, so its profile cannot be built: {err.message}"
            ) from err
        return Profile.from_parquet(path)


def dataset_profile(dataset: DatasetVersion, *, store: Store, build: bool = True) -> Profile:
    """The profile of ``dataset``: the stored one, else (with ``build``) built now and stored."""
    found = stored_profile(dataset, store=store)
    if found is not None:
        return found
    if not build:
        raise NotFound(f"Dataset {dataset.name!r} version {dataset.version} has no stored profile yet.")
    profile = build_profile(dataset, store=store)
    save_profile(dataset, profile, store=store)
    return profile


def training_dataset(lineage: dict[str, Any]) -> dict[str, Any] | None:
    """The dataset a version's run logged with role ``train`` (the last one if several), or None."""
    found = [d for d in lineage.get("datasets") or [] if d.get("role") == "train"]
    return found[-1] if found else None


def profile_on_register(lineage: dict[str, Any], *, store: Store) -> None:
    """Build and store the training dataset's profile for a version just registered, when it is small.

    Never fails the registration: a problem is logged, and the profile is built on first use.
    """
    train = training_dataset(lineage)
    if train is None:
        return
    try:
        from shipway.data.datasets import get_dataset

        dataset = get_dataset(train["name"], train["version"], store=store)
        columns = len(dataset.schema.get("columns", []))
        if dataset.num_rows * max(columns, 1) > REGISTER_LIMIT:
            return
        if not store.blobs.backend.exists(profile_key(dataset.content_hash)):
            save_profile(dataset, build_profile(dataset, store=store), store=store)
    except Exception as err:  # a registration must not fail for its monitoring reference
        log.warning("could not profile training dataset %s: %s", train.get("name"), err)
