"""Stored profiles of dataset versions: built when a version registers (small tables) or on first use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import shipway
from shipway.data import dataset_profiles, get_dataset
from shipway.data.dataset_profiles import dataset_profile, profile_key, stored_profile
from shipway.monitoring import Profile
from shipway.store import Store


def _train(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "charges": rng.normal(70, 20, n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    return frame, (frame["tenure"] < 20).astype(int).to_numpy()


def _register(frame: pd.DataFrame, y: np.ndarray, store: Store) -> shipway.registry.ModelVersion:
    from sklearn.tree import DecisionTreeClassifier

    with shipway.start_run(experiment="churn") as run:
        run.log_dataset(frame.assign(churned=y), name="churn-train", role="train", target="churned")
        model = DecisionTreeClassifier(max_depth=2).fit(frame[["tenure", "charges"]], y)
    return shipway.register_model(model, "churn", run=run, input_example=frame[["tenure", "charges"]].head())


def test_registering_a_version_profiles_its_small_training_dataset(store: Store) -> None:
    frame, y = _train(2_000)
    version = _register(frame, y, store)
    dataset = get_dataset("churn-train", store=store)
    profile = stored_profile(dataset, store=store)
    assert profile is not None and profile.rows == 2_000
    assert set(profile.columns) == {"tenure", "charges", "plan", "churned"}
    expected = Profile.from_frame(frame.assign(churned=y))
    assert np.array_equal(profile["charges"].counts, expected["charges"].counts)
    assert profile["plan"].categories == expected["plan"].categories
    assert version.lineage["datasets"][0]["content_hash"] == dataset.content_hash
    # Compact: a gzipped JSON blob of a few KB, under a key named by the data's content.
    key = profile_key(dataset.content_hash)
    assert store.blobs.backend.exists(key)


def test_a_large_training_dataset_is_profiled_on_first_use_and_then_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_profiles, "REGISTER_LIMIT", 100)
    frame, y = _train(2_000)
    _register(frame, y, store)
    dataset = get_dataset("churn-train", store=store)
    assert stored_profile(dataset, store=store) is None
    with pytest.raises(shipway.NotFound, match="no stored profile"):
        dataset_profile(dataset, store=store, build=False)
    built = dataset_profile(dataset, store=store)
    assert built.rows == 2_000
    # The data itself is no longer needed: the stored profile answers.
    store.blobs.delete(dataset.blob_digest)
    again = dataset_profile(dataset, store=store)
    assert np.array_equal(again["tenure"].counts, built["tenure"].counts)


def test_a_version_without_a_training_dataset_registers_without_a_profile(store: Store) -> None:
    from sklearn.tree import DecisionTreeClassifier

    frame, y = _train(200)
    model = DecisionTreeClassifier(max_depth=2).fit(frame[["tenure"]], y)
    version = shipway.register_model(model, "churn", input_example=frame[["tenure"]].head())
    assert version.version == 1
    assert not list(store.blobs.backend.list("profiles/"))
