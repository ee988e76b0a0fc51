"""Canary analysis: the statistics against SciPy, and the verdicts on simulated traffic."""

import math
import random

import numpy as np
import pytest
from scipy import stats

from shipway.rollout.analysis import (
    FAIL,
    HOLD,
    NO_DATA,
    PASS,
    PROMOTE,
    ROLLBACK,
    ArmWindow,
    Thresholds,
    analyse,
    check_error_rate,
    fisher_greater,
    judge,
    psi,
)


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_s", "n_s"),
    [(0, 10, 0, 10), (3, 10, 1, 12), (10, 10, 0, 10), (5, 1000, 1, 1000), (60, 5000, 30, 5000), (1, 3, 2, 3)],
)
def test_fisher_matches_scipy(x_c: int, n_c: int, x_s: int, n_s: int) -> None:
    table = [[x_c, n_c - x_c], [x_s, n_s - x_s]]
    expected = stats.fisher_exact(table, alternative="greater").pvalue
    assert math.isclose(fisher_greater(x_c, n_c, x_s, n_s), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_psi_of_identical_distributions_is_zero_and_grows_with_shift() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([50, 50], [60, 40]) < psi([50, 50], [80, 20])


def test_latency_quantiles_come_from_the_histogram() -> None:
    window = ArmWindow()
    for ms in np.linspace(0.1, 40, 1000):
        window.record(float(ms))
    # Like Prometheus' histogram_quantile: exact to the bucket, interpolated within it.
    assert window.p(0.5) == pytest.approx(20, rel=0.05)
    assert 30 <= window.p(0.95) <= 50
    assert ArmWindow().p(0.95) is None


def _traffic(
    n: int, error_rate: float, rng: random.Random, *, latency: float = 5.0, shift: float = 0.0
) -> ArmWindow:
    window = ArmWindow()
    for _ in range(n):
        error = rng.random() < error_rate
        window.record(rng.expovariate(1 / latency), error=error, prediction=rng.gauss(shift, 1.0), rng=rng)
    return window


def test_windows_merge_by_adding() -> None:
    rng = random.Random(1)
    a, b = _traffic(300, 0.1, rng), _traffic(500, 0.1, rng)
    both = a.merge(b)
    assert (both.requests, both.errors) == (800, a.errors + b.errors)
    assert sum(both.latency) == 800 and both.seen_values == 800 - both.errors  # errors predict nothing
    assert ArmWindow.from_dict(both.to_dict()) == both


def test_too_little_traffic_is_no_data_and_holds() -> None:
    rng = random.Random(2)
    checks = analyse(_traffic(20, 0.5, rng), _traffic(20, 0.9, rng))
    assert {c.status for c in checks} == {NO_DATA}
    assert judge(checks).action == HOLD


def test_a_good_candidate_is_promoted() -> None:
    rng = random.Random(3)
    verdict = judge(analyse(_traffic(2000, 0.01, rng), _traffic(2000, 0.01, rng)))
    assert verdict.action == PROMOTE, verdict.reasons


def test_a_failing_candidate_is_rolled_back_with_reasons() -> None:
    rng = random.Random(4)
    checks = analyse(_traffic(2000, 0.01, rng), _traffic(500, 0.05, rng))
    verdict = judge(checks)
    assert verdict.action == ROLLBACK
    assert any("error_rate" in r and "Fisher" in r for r in verdict.reasons)
    # With a failure limit the first failure only holds.
    assert judge(checks, failure_limit=1).action == HOLD


def test_shifted_predictions_and_slow_answers_fail() -> None:
    rng = random.Random(5)
    stable = _traffic(2000, 0.0, rng)
    assert {c.metric: c.status for c in analyse(stable, _traffic(2000, 0.0, rng, shift=1.0))}[
        "prediction_drift"
    ] == FAIL
    assert {c.metric: c.status for c in analyse(stable, _traffic(2000, 0.0, rng, latency=20.0))}[
        "latency_p95"
    ] == FAIL


def test_class_predictions_compare_by_frequency() -> None:
    stable, same, flipped = ArmWindow(), ArmWindow(), ArmWindow()
    for i in range(1000):
        stable.record(3.0, prediction=np.int64(i % 4 == 0))
        same.record(3.0, prediction=int(i % 4 == 1))
        flipped.record(3.0, prediction=int(i % 4 != 0))
    checks = {c.metric: c for c in analyse(stable, same)}
    assert checks["prediction_drift"].status == PASS
    assert {c.metric: c.status for c in analyse(stable, flipped)}["prediction_drift"] == FAIL


def test_false_rollbacks_stay_under_alpha_when_checked_at_every_step() -> None:
    # A candidate exactly as good as stable, judged at each of 4 steps: Bonferroni keeps the chance
    # of any false rollback across the looks at or under alpha (here measured over 400 rollouts).
    t = Thresholds(alpha=0.05, looks=4, error_tolerance=0.0)
    rng = np.random.default_rng(6)
    rollbacks = 0
    for _ in range(400):
        s_err = c_err = s_n = c_n = 0
        for _step in range(4):
            s_n += 1000
            c_n += 1000
            s_err += int(rng.binomial(1000, 0.02))
            c_err += int(rng.binomial(1000, 0.02))
            stable = ArmWindow(requests=s_n, errors=s_err)
            candidate = ArmWindow(requests=c_n, errors=c_err)
            if check_error_rate(stable, candidate, t).status == FAIL:
                rollbacks += 1
                break
    assert rollbacks / 400 <= 0.05


def test_a_bad_candidate_is_caught_within_its_sample_budget() -> None:
    # 5 % errors against 0.5 %: caught at the first look with 500 requests per arm, every time.
    rng = np.random.default_rng(7)
    for _ in range(50):
        stable = ArmWindow(requests=500, errors=int(rng.binomial(500, 0.005)))
        candidate = ArmWindow(requests=500, errors=int(rng.binomial(500, 0.05)))
        assert check_error_rate(stable, candidate, Thresholds()).status == FAIL
