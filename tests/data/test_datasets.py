from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import shipway
from shipway.data import get_dataset
from shipway.store import Store


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 500
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "charges": np.where(rng.random(n) < 0.1, np.nan, rng.normal(70, 20, n)),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "churned": rng.integers(0, 2, n),
        }
    )


def test_same_content_from_every_source_is_one_version(
    store: Store, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    frame.to_csv(tmp_path / "d.csv", index=False)
    v1 = shipway.log_dataset(frame, name="churn-train", target="churned")
    v2 = shipway.log_dataset(tmp_path / "d.parquet", name="churn-train")
    v3 = shipway.log_dataset(str(tmp_path / "d.csv"), name="churn-train")
    v4 = shipway.log_dataset(pa.Table.from_pandas(frame, preserve_index=False), name="churn-train")
    assert v1.version == v2.version == v3.version == v4.version == 1
    assert len({v1.content_hash, v2.content_hash, v3.content_hash, v4.content_hash}) == 1
    changed = frame.copy()
    changed.loc[0, "plan"] = "enterprise"
    v5 = shipway.log_dataset(changed, name="churn-train")
    assert v5.version == 2 and v5.content_hash != v1.content_hash


def test_schema_profile_and_stored_data(store: Store, frame: pd.DataFrame) -> None:
    with shipway.start_run(experiment="d") as run:
        version = run.log_dataset(frame, name="churn-train", role="train", target="churned")
    assert version.num_rows == 500
    assert version.columns == ["tenure", "charges", "plan", "churned"]
    assert version.schema["target"] == "churned"
    charges = version.profile["columns"]["charges"]
    assert charges["kind"] == "float"
    assert charges["missing_rate"] == pytest.approx(frame["charges"].isna().mean())
    assert charges["min"] == pytest.approx(frame["charges"].min())
    assert charges["quantiles"]["0.5"] == pytest.approx(frame["charges"].median())
    plan = version.profile["columns"]["plan"]
    assert plan["unique"] == 3 and sum(plan["top"].values()) == 500
    pd.testing.assert_frame_equal(version.load(store), frame, check_dtype=False)

    [use] = shipway.get_run(run.id).datasets
    assert (use.name, use.version, use.role, use.target, use.num_rows) == (
        "churn-train",
        1,
        "train",
        "churned",
        500,
    )
    assert use.content_hash == version.content_hash
    assert get_dataset("churn-train").id == version.id


def test_a_run_can_use_one_version_in_two_roles(store: Store, frame: pd.DataFrame) -> None:
    with shipway.start_run(experiment="d") as run:
        run.log_dataset(frame, name="churn", role="train")
        run.log_dataset(frame, name="churn", role="validation")
    assert sorted(d.role for d in shipway.get_run(run.id).datasets) == ["train", "validation"]


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "message"),
    [
        ([1, 2, 3], {}, shipway.InvalidInput, "takes a pandas DataFrame"),
        ("missing.parquet", {}, shipway.NotFound, "no such file"),
        (pd.DataFrame({"a": [1]}), {"target": "y"}, shipway.InvalidInput, "Target column 'y'"),
        (pd.DataFrame(), {}, shipway.InvalidInput, "no columns"),
    ],
)
def test_bad_datasets_are_refused(store: Store, data, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        shipway.log_dataset(data, name="bad", **kwargs)


def test_unreadable_file_is_refused(store: Store, tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(shipway.InvalidInput, match="Cannot read"):
        shipway.log_dataset(tmp_path / "x.parquet", name="bad")
    with pytest.raises(shipway.InvalidInput, match=r"use a \.parquet or \.csv"):
        shipway.log_dataset(tmp_path / "x.json", name="bad")


def test_values_of_different_types_are_different_data(store: Store) -> None:
    ints = shipway.log_dataset(pd.DataFrame({"x": pd.Series([1, 2], dtype=object)}), name="mixed")
    texts = shipway.log_dataset(pd.DataFrame({"x": ["1", "2"]}), name="mixed")
    assert ints.content_hash != texts.content_hash and texts.version == 2
    utc = pd.DataFrame({"t": pd.to_datetime(["2026-01-01T00:00:00Z"])})
    tokyo = pd.DataFrame({"t": utc["t"].dt.tz_convert("Asia/Tokyo")})
    assert (
        shipway.log_dataset(utc, name="tz").content_hash != shipway.log_dataset(tokyo, name="tz").content_hash
    )
