"""The default methods are calibrated by measurement: on data with no drift they flag at most 5% of
columns, at small and large sample sizes alike, whichever default each column gets."""

import collections
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from shipway.monitoring import drift, stats

NUMERIC = {
    "normal": lambda r, n: r.normal(50, 10, n),
    "lognormal": lambda r, n: r.lognormal(0, 1, n),
    "heavy_lognormal": lambda r, n: r.lognormal(0, 1.5, n),
    "exponential": lambda r, n: r.exponential(3, n),
    "uniform": lambda r, n: r.uniform(0, 1, n),
    "student_t3": lambda r, n: r.standard_t(3, n),
    "pareto": lambda r, n: r.pareto(2.5, n),
    "bimodal": lambda r, n: np.where(r.random(n) < 0.3, r.normal(-2, 0.5, n), r.normal(3, 1, n)),
    "poisson": lambda r, n: r.poisson(3, n),
    "binary_int": lambda r, n: r.integers(0, 2, n),
    "dice": lambda r, n: r.integers(1, 7, n),
    "rounded": lambda r, n: np.round(r.normal(0, 1, n), 1),
    "with_missing": lambda r, n: np.where(r.random(n) < 0.1, np.nan, r.gamma(2, 2, n)),
    "beta": lambda r, n: r.beta(0.5, 0.5, n),
}
ZIPF = 1 / np.arange(1, 51)
CATEGORICAL = {
    "two": (2, np.array([0.8, 0.2])),
    "five": (5, np.array([0.3, 0.3, 0.2, 0.1, 0.1])),
    "twenty": (20, None),
    "fifty_skewed": (50, ZIPF / ZIPF.sum()),
    "three_rare": (3, np.array([0.98, 0.015, 0.005])),
    "boolean": (2, np.array([0.6, 0.4])),
}
assert len(NUMERIC) + len(CATEGORICAL) == 20


def clean_table(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """20 columns of varied shapes; every call draws from the same distributions."""
    columns = {name: gen(rng, n) for name, gen in NUMERIC.items()}
    for name, (k, p) in CATEGORICAL.items():
        codes = rng.choice(k, n, p=p)
        columns[name] = (
            codes == 0 if name == "boolean" else pd.Categorical.from_codes(codes, [f"v{i}" for i in range(k)])
        )
    return pd.DataFrame(columns)


# (rows per side, trials): the small sizes where p-value tests decide, the switch near 1,000, and
# large samples where effect sizes decide (fewer trials there: their noise is far under threshold).
PLAN = [(100, 60), (1_001, 60), (5_000, 50), (100_000, 20)]


def slack(n: int, rate: float = 0.05) -> float:
    """Two binomial standard errors: a test at level 0.05 flags 5% of clean columns on average, so a
    finite count of trials lands on either side of 5%."""
    return 2 * math.sqrt(rate * (1 - rate) / n)


@pytest.fixture(scope="module")
def false_alarms() -> dict[str, tuple[int, int]]:
    rng = np.random.default_rng(20260101)
    flagged: collections.Counter[str] = collections.Counter()
    judged: collections.Counter[str] = collections.Counter()
    for rows, trials in PLAN:
        for _ in range(trials):
            for column in drift(clean_table(rng, rows), clean_table(rng, rows)).columns:
                judged[column.method] += 1
                flagged[column.method] += column.drifted
    return {m: (flagged[m], judged[m]) for m in judged}


def test_every_default_method_is_measured(false_alarms: dict[str, tuple[int, int]]) -> None:
    assert set(false_alarms) == {"ks", "chisquare", "wasserstein", "jensenshannon"}
    assert all(judged >= 200 for _, judged in false_alarms.values())


@pytest.mark.parametrize("method", ["wasserstein", "jensenshannon"])
def test_effect_sizes_flag_at_most_5_percent_of_clean_columns(
    false_alarms: dict[str, tuple[int, int]], method: str
) -> None:
    flagged, judged = false_alarms[method]
    assert flagged / judged <= 0.05, f"{method}: {flagged} of {judged} clean columns flagged"


@pytest.mark.parametrize("method", ["ks", "chisquare"])
def test_p_value_tests_flag_5_percent_of_clean_columns(
    false_alarms: dict[str, tuple[int, int]], method: str
) -> None:
    flagged, judged = false_alarms[method]
    assert flagged / judged <= 0.05 + slack(judged), f"{method}: {flagged} of {judged} clean columns flagged"


def test_evidently_rule_of_1000_rows_over_flags_heavy_tails() -> None:
    """Why the switch to an effect size also needs its no-drift noise to be small: at 1,001 rows a side,
    normed Wasserstein at 0.1 flags heavy-tailed clean columns far more often than 5% of the time."""
    rng = np.random.default_rng(7)
    flagged = 0
    for _ in range(150):
        r, c = np.sort(rng.standard_t(3, 1_001)), np.sort(rng.standard_t(3, 1_001))
        flagged += stats.wasserstein(r, c) / r.std() >= 0.1
    assert flagged / 150 > 0.05


def test_chi_squared_is_the_two_sample_contingency_form() -> None:
    """With equal sample sizes, treating the reference's proportions as exact doubles the statistic's
    variance and flags about half of clean 10-category columns; the contingency form flags 5%."""
    rng = np.random.default_rng(8)
    p = np.full(10, 0.1)
    trials, contingency, naive = 400, 0, 0
    for _ in range(trials):
        a, b = rng.multinomial(1_000, p), rng.multinomial(1_000, p)
        contingency += stats.chi2_contingency(a, b)[1] < 0.05
        naive += sp.chisquare(b, a / a.sum() * b.sum()).pvalue < 0.05
    assert contingency / trials <= 0.05 + slack(trials)
    assert naive / trials > 0.3
