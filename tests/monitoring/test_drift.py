"""drift(): inputs, the report, methods and thresholds, defaults, and raw data against profiles."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as sp
from scipy.spatial.distance import jensenshannon

from shipway import InvalidInput
from shipway.monitoring import DriftReport, Profile, drift


def frame(rng: np.random.Generator, n: int, shift: float = 0.0, mix: float = 0.0) -> pd.DataFrame:
    plans = rng.choice(["basic", "plus", "pro"], n, p=[0.5 - mix, 0.3, 0.2 + mix])
    return pd.DataFrame(
        {
            "income": rng.lognormal(10, 0.5, n),
            "age": rng.normal(40 + shift * 12, 12, n),
            "visits": rng.poisson(3, n),
            "plan": plans,
            "mobile": rng.random(n) < 0.6,
        }
    )


@pytest.fixture(scope="module")
def big() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)
    return frame(rng, 100_000), frame(rng, 100_000, shift=0.3, mix=0.2)


def test_the_report_names_the_drifted_columns(big: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = big
    report = drift(reference, current)
    assert isinstance(report, DriftReport)
    assert report.drifted_columns == ["age", "plan"]
    table = report.to_frame()
    assert list(table.columns[:7]) == [
        "feature",
        "kind",
        "method",
        "statistic",
        "threshold",
        "drifted",
        "p_value",
    ]
    assert table["feature"].tolist() == ["income", "age", "visits", "plan", "mobile"]
    assert table["method"].tolist() == [
        "wasserstein",
        "wasserstein",
        "wasserstein",
        "jensenshannon",
        "jensenshannon",
    ]
    assert table["p_value"].isna().all()  # effect sizes have no p-value
    assert (table["error_bound"] == 0).all()  # raw data on both sides: exact
    assert report["age"].statistic == pytest.approx(0.3, abs=0.02)
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["drifted_columns"] == ["age", "plan"] and summary["share_drifted"] == 0.4
    assert summary["columns"][1]["feature"] == "age"


def test_statistics_equal_scipy_on_the_same_raw_data() -> None:
    rng = np.random.default_rng(12)
    reference, current = frame(rng, 3_000), frame(rng, 2_000, shift=0.1, mix=0.05)
    for method in ("wasserstein", "ks"):
        report = drift(reference, current, methods={"age": method, "income": method})
        for col in ("age", "income"):
            r, c = reference[col].to_numpy(), current[col].to_numpy()
            if method == "wasserstein":
                expected = sp.wasserstein_distance(r, c) / np.std(r)
                assert report[col].statistic == pytest.approx(expected, abs=1e-9)
            else:
                ks = sp.ks_2samp(r, c)
                assert report[col].statistic == pytest.approx(ks.statistic, abs=1e-9)
                assert report[col].p_value == pytest.approx(ks.pvalue, abs=1e-9)
    counts = pd.concat([reference["plan"].value_counts(), current["plan"].value_counts()], axis=1).fillna(0)
    report = drift(reference, current, methods={"plan": "chisquare"})
    expected = sp.chi2_contingency(counts.to_numpy().T)
    assert report["plan"].statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert report["plan"].p_value == pytest.approx(expected.pvalue, abs=1e-9)
    report = drift(reference, current, methods={"plan": "jensenshannon"})
    ref_counts, cur_counts = counts.to_numpy().T
    assert report["plan"].statistic == pytest.approx(jensenshannon(ref_counts, cur_counts), abs=1e-9)


def test_defaults_depend_on_type_and_sample_size() -> None:
    rng = np.random.default_rng(13)
    small = drift(frame(rng, 300), frame(rng, 300))
    assert {c.feature: c.method for c in small.columns} == {
        "income": "ks",
        "age": "ks",
        "visits": "ks",
        "plan": "chisquare",
        "mobile": "chisquare",
    }
    assert all(c.p_value is not None for c in small.columns)
    many = pd.DataFrame({"city": rng.choice([f"c{i}" for i in range(200)], 5_000)})
    # 200 categories at 5,000 rows: JS's own sampling noise would be near its threshold.
    assert drift(many, many.sample(frac=1.0, random_state=1))["city"].method == "chisquare"


def test_a_third_of_a_standard_deviation_is_flagged_and_psi_on_deciles_misses_it(
    big: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = big
    report = drift(reference, current, columns=["age"])
    assert report["age"].drifted and report["age"].method == "wasserstein"
    psi = drift(reference, current, columns=["age"], methods="psi")["age"]
    assert 0.07 < psi.statistic < 0.1 and not psi.drifted  # the customary PSI > 0.1 rule misses it


def test_methods_and_thresholds_per_feature(big: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = big
    report = drift(
        reference,
        current,
        methods={"age": "psi", "plan": "chisquare", "visits": "jensenshannon"},
        thresholds={"age": 0.05},
    )
    assert report["age"].method == "psi" and report["age"].threshold == 0.05 and report["age"].drifted
    assert report["plan"].method == "chisquare" and report["plan"].p_value is not None
    assert report["visits"].method == "jensenshannon"
    assert report["income"].method == "wasserstein"  # not named: the default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": {"age": "wasserstien"}}, "Did you mean 'wasserstein'"),
        ({"methods": {"plan": "ks"}}, "'plan' is categorical"),
        ({"methods": {"nope": "psi"}}, "'nope'"),
        ({"thresholds": {"age": 0.2}}, "needs a method"),
        ({"columns": ["age", "nope"]}, "no column 'nope'"),
    ],
)
def test_mistakes_are_explained(kwargs: dict[str, object], message: str) -> None:
    rng = np.random.default_rng(14)
    with pytest.raises(InvalidInput, match=message):
        drift(frame(rng, 50), frame(rng, 50), **kwargs)  # type: ignore[arg-type]


def test_current_data_missing_a_column_is_refused() -> None:
    rng = np.random.default_rng(15)
    with pytest.raises(InvalidInput, match=r"no column 'plan'.*columns="):
        drift(frame(rng, 50), frame(rng, 50).drop(columns="plan"))


def test_parquet_paths_arrow_tables_and_profiles_give_the_same_verdicts(
    tmp_path: Path, big: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    reference, current = big
    reference.to_parquet(tmp_path / "reference.parquet")
    current.to_parquet(tmp_path / "current.parquet")
    raw = drift(reference, current)
    from_files = drift(tmp_path / "reference.parquet", str(tmp_path / "current.parquet"))
    assert from_files.to_dict() == raw.to_dict()

    arrow = drift(pa.Table.from_pandas(reference), pa.Table.from_pandas(current))
    assert arrow.to_dict() == raw.to_dict()

    stored = Profile.from_frame(reference)
    for report in (drift(stored, current), drift(stored, tmp_path / "current.parquet")):
        assert report.drifted_columns == raw.drifted_columns
        for a, b in zip(report.columns, raw.columns, strict=True):
            assert a.method == b.method
            if a.method == "wasserstein":  # approximate from bins: close, and within the bound
                assert abs(a.statistic - b.statistic) <= a.error_bound + 1e-12
                assert a.statistic == pytest.approx(b.statistic, abs=2e-3)
            else:  # counts over categories: exact
                assert a.statistic == pytest.approx(b.statistic, abs=1e-12) and a.error_bound == 0


def test_both_sides_summarised_needs_no_raw_data(big: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = big
    stored = Profile.from_frame(reference)
    halves = [Profile.from_frame(part, like=stored) for part in (current[:40_000], current[40_000:])]
    window = halves[0].merge(halves[1])
    merged, whole = drift(stored, window), drift(stored, current)
    for a, b in zip(merged.columns, whole.columns, strict=True):
        assert (a.method, a.drifted) == (b.method, b.drifted)
        assert a.statistic == pytest.approx(b.statistic, rel=1e-9)  # sums added in another order
    psi = drift(stored, window, methods={"age": "psi"})["age"].statistic
    assert psi == pytest.approx(drift(reference, current, methods={"age": "psi"})["age"].statistic, abs=1e-12)


def test_the_current_profile_of_a_report_merges_with_later_windows(
    big: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = big
    first = drift(reference, current[:50_000])
    second = drift(first.reference, current[50_000:])
    day = first.current.merge(second.current)
    assert day.rows == 100_000
    assert drift(first.reference, day).drifted_columns == ["age", "plan"]


def test_a_column_with_no_values_is_reported_not_judged() -> None:
    rng = np.random.default_rng(16)
    reference, current = frame(rng, 200), frame(rng, 200)
    current["age"] = np.nan
    result = drift(reference, current)["age"]
    assert np.isnan(result.statistic) and not result.drifted and result.n_current == 0
    assert result.note == "no values in the current data"


def test_the_callers_data_is_left_alone() -> None:
    rng = np.random.default_rng(17)
    reference, current = frame(rng, 5_000), frame(rng, 5_000)
    before = reference.copy()
    drift(reference, current)
    pd.testing.assert_frame_equal(reference, before)


def test_public_names_are_pinned() -> None:
    from shipway import monitoring

    assert set(monitoring.__all__) == {
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
        # alerts, SLOs and the monitor
        "SLO",
        "Alert",
        "Monitor",
        "Rule",
        "ack_alert",
        "add_rule",
        "delete_rule",
        "delete_slo",
        "export_rules",
        "get_slo",
        "list_alerts",
        "list_rules",
        "register_action",
        "set_slo",
        "silence",
        "slo_status",
        # retention of prediction logs and labels
        "PruneReport",
        "prune_logs",
    }
    assert all(hasattr(monitoring, name) for name in monitoring.__all__)
