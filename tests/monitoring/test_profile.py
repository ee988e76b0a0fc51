"""Reference profiles: what they keep, that they round-trip through JSON, and that they merge exactly."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipway import InvalidInput
from shipway.monitoring import CategoricalColumn, NumericColumn, Profile
from shipway.monitoring.profile import bin_index


def table(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    x = rng.normal(10 + shift, 2, n)
    x[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "amount": x,
            "count": rng.poisson(4, n),
            "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2]),
            "active": rng.random(n) < 0.7,
            "when": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 1000, n), unit="s"),
        }
    )


def test_a_profile_keeps_bins_categories_missing_values_and_range() -> None:
    rng = np.random.default_rng(1)
    frame = table(rng, 10_000)
    frame.loc[:9, "amount"] = [np.inf, -np.inf] * 5
    profile = Profile.from_frame(frame)
    assert list(profile) == ["amount", "count", "plan", "active"]  # timestamps are not compared
    amount = profile["amount"]
    assert isinstance(amount, NumericColumn)
    assert amount.rows == 10_000 and amount.infinite == 10
    assert amount.missing == int(frame["amount"].isna().sum())
    finite = frame["amount"][np.isfinite(frame["amount"])]
    assert amount.n == len(finite)
    assert (amount.min, amount.max) == (finite.min(), finite.max())
    assert amount.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert amount.std == pytest.approx(finite.std(ddof=0), rel=1e-12)
    assert len(amount.edges) == 102  # the 101 percentiles (all distinct here) and the maximum again
    assert np.allclose(amount.counts[1:-2], amount.n / 100, atol=1)  # quantile bins hold ~1% each
    assert amount.counts[0] == 0 and amount.counts[-1] == 0  # nothing beyond the reference's range
    count = profile["count"]
    assert np.array_equal(count.edges[:-1], np.unique(frame["count"]))  # few values: one bin each
    plan = profile["plan"]
    assert isinstance(plan, CategoricalColumn)
    assert plan.categories == frame["plan"].value_counts().to_dict() and plan.missing == 0
    assert profile["active"].categories.keys() == {"True", "False"}


def test_a_window_is_binned_on_the_reference_layout_including_its_tails() -> None:
    rng = np.random.default_rng(2)
    reference = Profile.from_frame(table(rng, 5_000))
    window = table(rng, 3_000, shift=30.0)  # entirely above the reference's maximum
    profile = Profile.from_frame(window, like=reference)
    amount = profile["amount"]
    assert np.array_equal(amount.edges, reference["amount"].edges)
    assert amount.counts[-1] == amount.n  # every value counted in the bin above the maximum
    assert amount.maxs[-1] == window["amount"].max()


def test_bin_index_agrees_with_searchsorted() -> None:
    rng = np.random.default_rng(3)
    for values in (rng.normal(size=50_000), rng.standard_cauchy(50_000), rng.integers(0, 9, 50_000) * 1.0):
        edges = NumericColumn.from_values(values[:5_000]).edges
        probe = np.concatenate([values, edges, edges - 1e-12, edges + 1e-12])
        expected = np.searchsorted(edges, probe, "right")
        expected[probe == edges[-1]] = len(edges) - 1
        assert np.array_equal(bin_index(probe, edges), expected)


def test_json_round_trip_is_lossless_and_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    profile = Profile.from_frame(table(rng, 50_000))
    text = json.dumps(profile.to_dict())
    back = Profile.from_dict(json.loads(text))
    assert back.to_dict() == profile.to_dict()
    assert len(text) < 30_000  # four columns; 50,000 rows of them are ~2 MB as CSV
    path = profile.to_json(tmp_path / "reference.json")
    assert Profile.from_json(path).to_dict() == profile.to_dict()
    with pytest.raises(InvalidInput, match="Not a Shipway profile"):
        Profile.from_dict({"rows": 1, "columns": {}})


def test_merged_windows_equal_the_profile_of_both() -> None:
    """Counts, per-bin extremes, category counts and missing values add exactly; the mean and the
    spread combine to floating-point rounding."""
    rng = np.random.default_rng(5)
    reference = Profile.from_frame(table(rng, 5_000))
    first, second = table(rng, 4_000, shift=1.0), table(rng, 6_000, shift=-2.0)
    merged = Profile.from_frame(first, like=reference).merge(Profile.from_frame(second, like=reference))
    whole = Profile.from_frame(pd.concat([first, second], ignore_index=True), like=reference)
    assert merged.rows == whole.rows == 10_000
    for name in whole:
        a, b = merged[name], whole[name]
        if isinstance(b, NumericColumn):
            assert isinstance(a, NumericColumn)
            for x, y in zip(a.bins, b.bins, strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-9)
            assert (a.missing, a.infinite, a.rows) == (b.missing, b.infinite, b.rows)
            assert a.mean == pytest.approx(b.mean, rel=1e-12)
            assert a.std == pytest.approx(b.std, rel=1e-10)
        else:
            assert a.to_dict() == b.to_dict()


def test_profiles_on_different_bins_do_not_merge() -> None:
    rng = np.random.default_rng(6)
    a, b = Profile.from_frame(table(rng, 1_000)), Profile.from_frame(table(rng, 1_000))
    with pytest.raises(InvalidInput, match=r"like=reference"):
        a.merge(b)


def test_a_parquet_window_streams_in_batches_to_the_same_profile(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    reference = Profile.from_frame(table(rng, 5_000))
    window = table(rng, 20_000, shift=0.5)
    path = tmp_path / "window.parquet"
    window.to_parquet(path, row_group_size=3_000)
    streamed = Profile.from_parquet(path, like=reference, batch_rows=2_500)
    whole = Profile.from_frame(window, like=reference)
    assert streamed.rows == 20_000
    for name in whole:
        if isinstance(whole[name], NumericColumn):
            assert np.array_equal(streamed[name].counts, whole[name].counts)
            assert np.array_equal(streamed[name].maxs, whole[name].maxs, equal_nan=True)
        else:
            assert streamed[name].to_dict() == whole[name].to_dict()
    own = Profile.from_parquet(path)  # no reference: the file's own quantiles
    assert own["amount"].n == whole["amount"].n


def test_many_categories_keep_the_most_frequent_and_count_the_rest() -> None:
    values = pd.Series([f"id{i}" for i in range(1500)] + ["common"] * 10)
    column = Profile.from_frame(pd.DataFrame({"id": values}))["id"]
    assert isinstance(column, CategoricalColumn)
    assert len(column.categories) == 1000 and column.categories["common"] == 10
    assert column.other == 501 and column.n == 1510  # 999 of the ids are kept, by name order


def test_a_window_missing_a_reference_column_is_refused() -> None:
    rng = np.random.default_rng(8)
    reference = Profile.from_frame(table(rng, 100))
    with pytest.raises(InvalidInput, match="No column 'plan'"):
        Profile.from_frame(table(rng, 100).drop(columns="plan"), like=reference)
    with pytest.raises(InvalidInput, match="numeric in the reference"):
        Profile.from_frame(table(rng, 100).assign(amount="x"), like=reference)
