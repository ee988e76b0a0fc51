"""Drift statistics: on counts over shared bins, on sorted samples (exact), and on binned profiles
(approximate, with a guaranteed error bound).

Every function here takes NumPy arrays and returns plain floats; choosing a method, thresholds and
reading columns is :mod:`shipway.monitoring.drift`'s job. SciPy is imported only for p-values.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipway.core.errors import MissingDependency

# Proportions below this are raised to it before PSI takes logarithms (Evidently's convention too).
PSI_FLOOR = 1e-4

# Up to this many rows on the larger side, KS p-values are SciPy's exact ones (as ks_2samp's "auto").
KS_EXACT_MAX_N = 10_000


def _scipy(purpose: str) -> Any:
    try:
        import scipy.special
        import scipy.stats
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise MissingDependency.for_extra("monitoring", "scipy", purpose) from err
    return scipy


# ---------------------------------------------------------------------------------------------
# Counts over the same bins or categories (exact from raw data and from profiles alike)
# ---------------------------------------------------------------------------------------------


def psi(reference: np.ndarray, current: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index between two count vectors over the same bins."""
    p = np.maximum(np.asarray(reference, float) / max(np.sum(reference), 1), floor)
    q = np.maximum(np.asarray(current, float) / max(np.sum(current), 1), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def jensenshannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (natural logarithm, so at most sqrt(ln 2)) between two count vectors."""
    p = np.asarray(reference, float)
    q = np.asarray(current, float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def chi2_contingency(reference: np.ndarray, current: np.ndarray) -> tuple[float, float, int]:
    """Pearson's chi-squared test of homogeneity on the 2 x k table of two count vectors.

    Both samples are random, so expected counts come from the pooled table (not from the reference
    taken as exact). Categories empty on both sides are dropped; with one degree of freedom Yates'
    continuity correction applies, as in ``scipy.stats.chi2_contingency``. Returns the statistic, its
    p-value and the degrees of freedom.
    """
    table = np.vstack([np.asarray(reference, float), np.asarray(current, float)])
    table = table[:, table.sum(axis=0) > 0]
    dof = table.shape[1] - 1
    rows = table.sum(axis=1, keepdims=True)
    if dof <= 0 or np.any(rows == 0):
        return 0.0, 1.0, max(dof, 0)
    expected = rows * table.sum(axis=0, keepdims=True) / table.sum()
    observed = table
    if dof == 1:
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    p_value = float(_scipy("The chi-squared test's p-value").special.chdtrc(dof, statistic))
    return statistic, p_value, dof


# ---------------------------------------------------------------------------------------------
# Sorted raw samples (exact)
# ---------------------------------------------------------------------------------------------


def wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    """Wasserstein-1 distance between two samples given sorted ascending.

    Integrates the gap between the two quantile functions: the breakpoints i/n and j/m are merged by
    arithmetic, not by sorting values, so the cost is a few linear passes.
    """
    n, m = len(u), len(v)
    if n == m:
        return float(np.mean(np.abs(u - v)))
    i = np.arange(1, n + 1, dtype=np.float64)
    j = np.arange(1, m + 1, dtype=np.float64)
    # Positions of breakpoint i/n and j/m in the merged order (ties: v's first). Exact in float64:
    # the products stay below 2**53 and a non-integer quotient is at least 1/n from an integer.
    pos_u = (i - 1 + np.floor(i * m / n)).astype(np.intp)
    pos_v = (j - 2 + np.ceil(j * n / m)).astype(np.intp)
    ends = np.empty(n + m)  # segment ends, in units of 1/(n*m)
    ends[pos_u] = i * m
    ends[pos_v] = j * n
    iu = np.empty(n + m, dtype=np.intp)
    iv = np.empty(n + m, dtype=np.intp)
    ii, jj = np.arange(n), np.arange(m)
    iu[pos_u] = ii
    iv[pos_v] = jj
    iu[pos_v] = np.minimum(pos_v - jj, n - 1)
    iv[pos_u] = np.minimum(pos_u - ii, m - 1)
    lengths = np.diff(ends, prepend=0.0)
    return float(np.dot(lengths, np.abs(u[iu] - v[iv]))) / (n * m)


def ks_statistic(u: np.ndarray, v: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the ECDFs) of sorted samples."""
    n, m = len(u), len(v)
    gap_at_u = np.searchsorted(u, u, "right") / n - np.searchsorted(v, u, "right") / m
    gap_at_v = np.searchsorted(u, v, "right") / n - np.searchsorted(v, v, "right") / m
    return float(max(np.max(np.abs(gap_at_u)), np.max(np.abs(gap_at_v))))


def ks_pvalue(
    statistic: float, n: int, m: int, u: np.ndarray | None = None, v: np.ndarray | None = None
) -> float:
    """Two-sided KS p-value: SciPy's exact one when both samples are given and small, else Smirnov's
    asymptotic distribution at the effective sample size (what ``ks_2samp`` uses past 10,000 rows)."""
    scipy = _scipy("The Kolmogorov-Smirnov p-value")
    if u is not None and v is not None and max(n, m) <= KS_EXACT_MAX_N:
        with warnings.catch_warnings():
            # Where the exact computation fails, SciPy warns and falls back to the asymptotic form.
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
            return float(scipy.stats.ks_2samp(u, v).pvalue)
    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    return float(np.clip(scipy.stats.kstwo.sf(statistic, np.round(en)), 0.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Binned samples (approximate): each bin known by its count, smallest and largest value
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """An approximate statistic; the exact value lies within ``value`` +/- ``error_bound``."""

    value: float
    error_bound: float


class _Cdf:
    """The CDF of a sample known per bin by its count, smallest and largest value and sum.

    Outside each bin's [min, max] the CDF is known exactly; inside it lies between the bin's
    cumulative proportions (the bounds), and is estimated as uniform on the widest part of [min, max]
    that has the bin's mean and touches one end (so a tail bin's mass sits where its mean says).
    """

    def __init__(self, counts: np.ndarray, mins: np.ndarray, maxs: np.ndarray, sums: np.ndarray) -> None:
        keep = counts > 0
        n = counts[keep].astype(np.float64)
        self.lo, self.hi = mins[keep], maxs[keep]
        mean = np.clip(sums[keep] / n, self.lo, self.hi)
        low_half = mean <= (self.lo + self.hi) / 2
        self.est_lo = np.where(low_half, self.lo, 2 * mean - self.hi)
        self.est_hi = np.where(low_half, 2 * mean - self.lo, self.hi)
        self.after = np.cumsum(n) / n.sum()
        self.before = np.concatenate([[0.0], self.after[:-1]])

    def knots(self) -> list[np.ndarray]:
        return [self.lo, self.hi, self.est_lo, self.est_hi]

    def at(self, x: np.ndarray, left: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimate, lower and upper bound of F(x) (right-continuous), or of F(x-) if ``left``."""
        side = "left" if left else "right"
        j = np.searchsorted(self.est_lo, x, side) - 1
        jj = np.maximum(j, 0)
        lo, hi, before, after = self.est_lo[jj], self.est_hi[jj], self.before[jj], self.after[jj]
        width = np.where(hi > lo, hi - lo, 1.0)
        done = (x > hi) if left else (x >= hi)
        est = np.where(done, after, before + (after - before) * np.clip((x - lo) / width, 0.0, 1.0))
        est = np.where(j < 0, 0.0, est)
        # The bounds: past a bin's largest value F is its cumulative proportion, inside it unknown.
        j = np.searchsorted(self.lo, x, side) - 1
        jj = np.maximum(j, 0)
        done = (x > self.hi[jj]) if left else (x >= self.hi[jj])
        low = np.where(j < 0, 0.0, np.where(done, self.after[jj], self.before[jj]))
        high = np.where(j < 0, 0.0, self.after[jj])
        return est, low, high

    def span(self, mid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound of F on an open interval between knots, given its midpoint."""
        j = np.searchsorted(self.lo, mid, "right") - 1
        jj = np.maximum(j, 0)
        inside = (j >= 0) & (mid < self.hi[jj])
        after = np.where(j >= 0, self.after[jj], 0.0)
        return np.where(inside, self.before[jj], after), after


def _abs_integral(g0: np.ndarray, g1: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Integral of |g| over intervals of length h on which g is linear from g0 to g1."""
    a0, a1 = np.abs(g0), np.abs(g1)
    same = g0 * g1 >= 0
    crossing = (g0**2 + g1**2) / np.where(a0 + a1 > 0, 2 * (a0 + a1), 1.0)
    return h * np.where(same, (a0 + a1) / 2, crossing)


def _box_distance(
    r_lo: np.ndarray, r_hi: np.ndarray, c_lo: np.ndarray, c_hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest |r - c| for r in [r_lo, r_hi] and c in [c_lo, c_hi]."""
    d_lo, d_hi = r_lo - c_hi, r_hi - c_lo
    nearest = np.where(d_lo > 0, d_lo, np.where(d_hi < 0, -d_hi, 0.0))
    return nearest, np.maximum(np.abs(d_lo), np.abs(d_hi))


Bins = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # counts, mins, maxs, sums


def binned_distances(reference: Bins, current: Bins) -> tuple[Estimate, Estimate]:
    """Wasserstein-1 distance and KS statistic between two samples known only by (counts, mins, maxs,
    sums) over the same bins, each with a bound on its distance from the exact value on the raw samples.

    The bound is a worst case over every arrangement of the values inside their bins' [min, max]; it is
    zero when every bin holds a single distinct value (as for discrete data with few values).
    """
    r, c = _Cdf(*reference), _Cdf(*current)
    knots = np.unique(np.concatenate([*r.knots(), *c.knots()]))
    # KS: both estimated CDFs are linear between knots, so the supremum sits at a knot (either limit).
    d_est = d_lo = d_hi = 0.0
    for left in (False, True):
        re, rl, rh = r.at(knots, left)
        ce, cl, ch = c.at(knots, left)
        d_est = max(d_est, float(np.max(np.abs(re - ce))))
        nearest, farthest = _box_distance(rl, rh, cl, ch)
        exact = (rl == rh) & (cl == ch)
        d_lo = max(d_lo, float(np.max(np.where(exact, nearest, 0.0))))
        d_hi = max(d_hi, float(np.max(farthest)))
    # Wasserstein: the estimate integrates |F_r - F_c| exactly between knots, the bounds its range.
    w_est = w_lo = w_hi = 0.0
    if len(knots) > 1:
        h = np.diff(knots)
        start_r, end_r = r.at(knots[:-1], left=False)[0], r.at(knots[1:], left=True)[0]
        start_c, end_c = c.at(knots[:-1], left=False)[0], c.at(knots[1:], left=True)[0]
        w_est = float(np.sum(_abs_integral(start_r - start_c, end_r - end_c, h)))
        mid = (knots[:-1] + knots[1:]) / 2
        nearest, farthest = _box_distance(*r.span(mid), *c.span(mid))
        w_lo, w_hi = float(np.dot(h, nearest)), float(np.dot(h, farthest))
        d_hi = max(d_hi, float(np.max(farthest)))
    return (
        Estimate(w_est, max(w_hi - w_est, w_est - w_lo, 0.0)),
        Estimate(d_est, max(d_hi - d_est, d_est - d_lo, 0.0)),
    )


def cdf_spread(bins: Bins, steps: int = 4) -> float:
    """The integral of sqrt(F(1 - F)) over the line for a binned sample's estimated CDF F.

    Two samples of n and m values from one distribution are a Wasserstein-1 distance of about
    sqrt(2/pi) * sqrt(1/n + 1/m) times this apart (the Brownian-bridge limit of their CDFs' gap).
    """
    cdf = _Cdf(*bins)
    knots = np.unique(np.concatenate(cdf.knots()))
    if len(knots) < 2:
        return 0.0
    h = np.diff(knots)
    t = np.linspace(0.0, 1.0, steps + 1)
    x = knots[:-1, None] + h[:, None] * t[None, :]
    f = cdf.at(x.ravel(), left=False)[0].reshape(x.shape)
    f[:, -1] = cdf.at(knots[1:], left=True)[0]  # each piece ends with its left limit
    g = np.sqrt(np.clip(f * (1 - f), 0.0, None))
    return float(np.sum((g[:, 1:] + g[:, :-1]) / 2 * (h[:, None] / steps)))
