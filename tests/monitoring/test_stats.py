"""Drift statistics against SciPy's reference implementations, and the binned approximations' bounds."""

import zlib

import numpy as np
import pytest
from scipy import stats as sp
from scipy.spatial.distance import jensenshannon

from shipway.monitoring import stats
from shipway.monitoring.profile import NumericColumn

SIZES = [(1, 1), (5, 3), (7, 7), (100, 37), (250, 1000), (1000, 999), (12_000, 30_001)]


def samples(rng: np.random.Generator, n: int, m: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "ties":  # few distinct values: ties inside and across the samples
        return rng.integers(0, 6, n).astype(float), rng.integers(1, 7, m).astype(float)
    return rng.normal(0, 1, n), rng.standard_t(4, m) * 1.3 + 0.2


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_wasserstein_and_ks_match_scipy(n: int, m: int, kind: str) -> None:
    rng = np.random.default_rng(n * 7919 + m)
    u, v = samples(rng, n, m, kind)
    us, vs = np.sort(u), np.sort(v)
    assert stats.wasserstein(us, vs) == pytest.approx(sp.wasserstein_distance(u, v), abs=1e-9)
    expected = sp.ks_2samp(u, v)
    d = stats.ks_statistic(us, vs)
    assert d == pytest.approx(expected.statistic, abs=1e-9)
    assert stats.ks_pvalue(d, n, m, us, vs) == pytest.approx(expected.pvalue, abs=1e-9)


def test_ks_pvalue_without_the_samples_is_scipys_asymptotic_form() -> None:
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=20_000), rng.normal(0.02, 1, 15_000)
    d = stats.ks_statistic(np.sort(u), np.sort(v))
    assert stats.ks_pvalue(d, len(u), len(v)) == pytest.approx(sp.ks_2samp(u, v).pvalue, abs=1e-9)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([30, 20, 50], [25, 30, 45]),
        ([80, 20], [70, 30]),  # one degree of freedom: Yates' correction, as SciPy applies it
        ([5, 0, 3, 9, 1], [2, 4, 0, 10, 3]),
        ([1000, 10, 0], [990, 25, 0]),  # a category empty on both sides is dropped
        ([412, 3, 77, 8, 1, 0, 2], [399, 9, 81, 3, 0, 2, 1]),
    ],
)
def test_chi2_contingency_matches_scipy(a: list[int], b: list[int]) -> None:
    statistic, p_value, dof = stats.chi2_contingency(np.array(a), np.array(b))
    table = np.array([a, b])
    expected = sp.chi2_contingency(table[:, table.sum(axis=0) > 0])
    assert statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert p_value == pytest.approx(expected.pvalue, abs=1e-9)
    assert dof == expected.dof


def test_chi2_with_a_single_category_is_no_evidence() -> None:
    assert stats.chi2_contingency(np.array([10, 0]), np.array([4, 0])) == (0.0, 1.0, 0)


@pytest.mark.parametrize(
    ("a", "b"), [([30, 20, 50], [25, 30, 45]), ([1, 0, 0], [0, 0, 1]), ([5, 0, 3, 9], [2, 4, 0, 10])]
)
def test_jensenshannon_matches_scipy(a: list[int], b: list[int]) -> None:
    assert stats.jensenshannon(np.array(a), np.array(b)) == pytest.approx(jensenshannon(a, b), abs=1e-9)


def test_psi_is_the_symmetric_log_ratio_sum_with_a_floor() -> None:
    a, b = np.array([50, 30, 20, 0]), np.array([40, 30, 25, 5])
    p = np.maximum(a / a.sum(), 1e-4)
    q = np.maximum(b / b.sum(), 1e-4)
    assert stats.psi(a, b) == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=1e-12)
    assert stats.psi(a, a) == 0.0


# ---------------------------------------------------------------------------------------------
# Binned approximations: the exact value on the raw data always lies within the reported bound, the
# estimate is close on ordinary data, and exact when each bin holds one distinct value.
# ---------------------------------------------------------------------------------------------


def binned(reference: np.ndarray, current: np.ndarray) -> tuple[stats.Estimate, stats.Estimate]:
    ref = NumericColumn.from_values(reference)
    cur = NumericColumn.from_values(current, ref.edges)
    return stats.binned_distances(ref.bins, cur.bins)


def generators() -> dict[str, object]:
    return {
        "normal": lambda r, n: r.normal(0, 1, n),
        "lognormal": lambda r, n: r.lognormal(0, 1, n),
        "exponential": lambda r, n: r.exponential(2, n),
        "student_t3": lambda r, n: r.standard_t(3, n),
        "uniform": lambda r, n: r.uniform(0, 1, n),
        "bimodal": lambda r, n: np.where(r.random(n) < 0.3, r.normal(-2, 0.3, n), r.normal(2, 1, n)),
    }


@pytest.mark.parametrize("name", list(generators()))
@pytest.mark.parametrize("shift", [0.0, 0.1, 0.3, 2.0])
def test_binned_estimates_are_close_and_within_their_bound(name: str, shift: float) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{name}{shift}".encode()))
    gen = generators()[name]
    reference = gen(rng, 20_000)
    current = gen(rng, 15_000) + shift * reference.std()
    w, d = binned(reference, current)
    exact_w = sp.wasserstein_distance(reference, current)
    exact_d = sp.ks_2samp(reference, current).statistic
    assert abs(w.value - exact_w) <= w.error_bound + 1e-12
    assert abs(d.value - exact_d) <= d.error_bound + 1e-12
    # The worst case is rarely approached: on these distributions the estimate is far closer.
    assert abs(w.value - exact_w) < 0.005 * reference.std() + 0.01 * exact_w
    assert abs(d.value - exact_d) < 0.01


def test_bound_holds_for_values_arranged_against_the_estimate() -> None:
    """Inside a bin the estimate spreads values evenly; here each bin's values sit at its two ends, in
    opposite proportions on the two sides, the arrangement the estimate is worst at."""
    rng = np.random.default_rng(3)
    reference = np.repeat(np.arange(0.0, 100.0), 50) + np.tile([0.0, 0.999], 2500)
    current = np.repeat(np.arange(0.0, 100.0), 50) + np.repeat(rng.choice([0.0, 0.999], 100), 50)
    w, d = binned(reference, current)
    assert abs(w.value - sp.wasserstein_distance(reference, current)) <= w.error_bound + 1e-12
    assert abs(d.value - sp.ks_2samp(reference, current).statistic) <= d.error_bound + 1e-12


def test_few_distinct_values_are_exact() -> None:
    rng = np.random.default_rng(4)
    reference = rng.poisson(3, 10_000).astype(float)
    current = rng.poisson(3.4, 7_000).astype(float)
    w, d = binned(reference, current)
    assert w.error_bound < 1e-12 and d.error_bound < 1e-12
    assert w.value == pytest.approx(sp.wasserstein_distance(reference, current), abs=1e-9)
    assert d.value == pytest.approx(sp.ks_2samp(reference, current).statistic, abs=1e-9)


def test_values_beyond_the_reference_range_are_kept() -> None:
    """A window shifted past the reference's maximum: its mass sits in the top bin with its true
    min, max and sum, so the distance is not capped at the reference's range."""
    rng = np.random.default_rng(5)
    reference = rng.uniform(0, 1, 5_000)
    current = rng.uniform(3, 4, 5_000)
    w, _ = binned(reference, current)
    assert w.value == pytest.approx(sp.wasserstein_distance(reference, current), rel=1e-3)


def test_cdf_spread_of_a_normal_sample() -> None:
    """The integral of sqrt(F(1-F)) for N(0, 1) (about 1.615) from a profile: within a few percent,
    which is all the no-drift noise estimate behind the defaults needs."""
    x = np.linspace(-9, 9, 200_001)
    f = sp.norm.cdf(x)
    truth = float(np.trapezoid(np.sqrt(f * (1 - f)), x))
    column = NumericColumn.from_values(np.random.default_rng(6).normal(size=200_000))
    assert stats.cdf_spread(column.bins) == pytest.approx(truth, rel=0.03)
