"""Canary analysis: is the candidate arm no worse than the stable arm, on the evidence so far?

Each arm's traffic in a window is summarised in an :class:`ArmWindow`: counts of requests and
errors, a latency histogram over fixed buckets, the predictions seen (class counts, or a bounded
sample of numbers), and, where labels arrived, how many were right. Windows from several workers
or time slices merge by adding, so the controller never needs raw requests.

Every check answers ``pass``, ``fail``, ``inconclusive`` or ``no_data``; too little traffic is
``no_data``, never a failure (as in Kayenta and Argo Rollouts' "inconclusive"). The tests:

- **error rate**: a sequential test that the candidate fails more often than stable, failing only
  when the candidate is also worse by more than a tolerance, so a tiny but "significant" difference
  on huge traffic does not roll back. The controller looks at every tick, as often as it likes: the
  p-value is *always valid* (see :func:`sequential_greater`), so peeking does not inflate false
  rollbacks the way a fixed-sample test (Fisher's, a z-test) checked at every tick does. ``alpha``
  is split (Bonferroni) across the sequential tests a rollout runs: one per step, each step being
  judged on its own window, and one for live quality, judged over the whole rollout.
  A candidate that is worse by more than the tolerance but not yet significantly is
  ``inconclusive``: the controller holds and gathers more traffic instead of promoting it (unless
  stable's window no longer grows, when waiting could not settle it).
- **latency**: the ratio of p95 latencies, estimated from the histograms, against a maximum.
- **prediction drift**: the population stability index between the arms' predictions (class
  frequencies, or ten quantile bins of the stable arm's values).
- **live quality**: where labels arrived, the same sequential test on wrong answers.
"""

from __future__ import annotations

import bisect
import math
import numbers
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Upper bounds (ms) of the latency histogram's buckets; the last one catches the rest.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 2000, 5000, 10000, math.inf,
)  # fmt: skip
SAMPLE_SIZE = 2_000  # numeric predictions kept per arm window (uniform reservoir)
PASS, FAIL, INCONCLUSIVE, NO_DATA = "pass", "fail", "inconclusive", "no_data"
PROMOTE, HOLD, ROLLBACK = "promote", "hold", "rollback"


@dataclass
class ArmWindow:
    """What one arm served in a window; mergeable by :meth:`merge`."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    classes: dict[str, int] = field(default_factory=dict)  # prediction -> count (classifiers)
    values: list[float] = field(default_factory=list)  # a uniform sample of numeric predictions
    seen_values: int = 0  # how many numeric predictions the sample stands for
    labelled: int = 0
    wrong: int = 0

    def record(
        self,
        latency_ms: float,
        *,
        error: bool = False,
        prediction: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        """Count one request (its prediction, if it produced one)."""
        self.requests += 1
        self.errors += bool(error)
        self.latency[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        if prediction is None or error:
            return
        if isinstance(prediction, str | numbers.Integral):  # class labels (NumPy integers too)
            key = str(prediction)
            self.classes[key] = self.classes.get(key, 0) + 1
            return
        value = float(prediction)
        if not math.isfinite(value):
            return
        self.seen_values += 1
        if len(self.values) < SAMPLE_SIZE:
            self.values.append(value)
        else:  # reservoir sampling keeps a uniform sample of everything seen
            slot = (rng or random).randrange(self.seen_values)
            if slot < SAMPLE_SIZE:
                self.values[slot] = value

    def merge(self, other: ArmWindow, rng: random.Random | None = None) -> ArmWindow:
        """The window of both (sample weighted by how much each stands for)."""
        classes = dict(self.classes)
        for key, count in other.classes.items():
            classes[key] = classes.get(key, 0) + count
        seen = self.seen_values + other.seen_values
        values = self.values + other.values
        if len(values) > SAMPLE_SIZE:
            r = rng or random.Random(seen)
            weights = [self.seen_values / max(len(self.values), 1)] * len(self.values) + [
                other.seen_values / max(len(other.values), 1)
            ] * len(other.values)
            values = r.choices(values, weights=weights, k=SAMPLE_SIZE)
        return ArmWindow(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            latency=[a + b for a, b in zip(self.latency, other.latency, strict=True)],
            classes=classes,
            values=values,
            seen_values=seen,
            labelled=self.labelled + other.labelled,
            wrong=self.wrong + other.wrong,
        )

    def p(self, q: float) -> float | None:
        """The ``q`` quantile of latency (ms), interpolated within its bucket; None when empty."""
        total = sum(self.latency)
        if total == 0:
            return None
        rank = q * total
        running = 0
        for i, count in enumerate(self.latency):
            if count and running + count >= rank:
                low = LATENCY_BUCKETS_MS[i - 1] if i else 0.0
                high = LATENCY_BUCKETS_MS[i]
                if math.isinf(high):
                    return low
                return low + (high - low) * (rank - running) / count
            running += count
        return LATENCY_BUCKETS_MS[-2]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmWindow:
        return cls(**data)


@dataclass(frozen=True)
class Check:
    """One metric's comparison of candidate with stable."""

    metric: str
    status: str  # pass | fail | inconclusive | no_data
    summary: str
    measured: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """What the controller should do now, and why."""

    action: str  # promote (advance a step) | hold | rollback
    reasons: list[str]
    checks: list[Check]
    failures: int  # failed analyses so far, this one included


@dataclass(frozen=True)
class Thresholds:
    """How much worse a candidate may be, and how much evidence a judgement needs."""

    alpha: float = 0.05  # family-wise: the chance of rolling back a candidate as good as stable
    looks: int = 4  # sequential tests run (one per step, one for live quality); alpha is split across them
    min_requests: int = 100  # per arm, for error rate and latency
    error_tolerance: float = 0.005  # absolute: 0.5 percentage points
    max_latency_ratio: float = 1.5  # candidate p95 / stable p95
    min_latency_ms: float = 5.0  # below this p95 the candidate is fast enough whatever the ratio
    max_prediction_psi: float = 0.2
    min_predictions: int = 200
    min_labels: int = 100
    quality_tolerance: float = 0.02  # absolute accuracy points


def sequential_greater(x_c: int, n_c: int, x_s: int, n_s: int) -> float:
    """An always-valid one-sided p-value that the candidate's rate x_c/n_c exceeds stable's x_s/n_s.

    Conditional on the k = x_c + x_s failures seen, each failure is the candidate's with probability
    rho = n_c / (n_c + n_s) when both arms fail equally often, and with a larger probability when
    the candidate is worse. The test is the mixture sequential probability ratio test (Robbins;
    Johari et al., "Always valid inference") on that sequence: the likelihood ratio of
    "candidate's share q" against "q = rho", averaged over q uniform on (rho, 1),

        L = integral_rho^1 q^x (1-q)^(k-x) dq / ((1 - rho) rho^x (1-rho)^(k-x)),

    is a nonnegative martingale under equal rates, so by Ville's inequality the chance that 1/L
    *ever* drops below alpha, however often and whenever it is looked at, is at most alpha. The
    integral is a binomial tail: B(x+1, k-x+1) P(Binomial(k+1, rho) <= x).
    """
    k, n = x_c + x_s, n_c + n_s
    if k == 0 or n_c == 0 or n_s == 0 or x_c * n_s <= x_s * n_c:
        return 1.0  # nothing failed, one arm is empty, or the candidate fails no more than stable
    rho = n_c / n
    log_mixture = (
        math.lgamma(x_c + 1)
        + math.lgamma(x_s + 1)
        - math.lgamma(k + 2)
        + _log_binomial_cdf(x_c, k + 1, rho)
        - math.log1p(-rho)
    )
    log_null = x_c * math.log(rho) + x_s * math.log1p(-rho)
    return math.exp(min(0.0, log_null - log_mixture))


def _log_binomial_cdf(x: int, m: int, p: float) -> float:
    """log P(Binomial(m, p) <= x), summing whichever tail is shorter from its end by the mode."""
    if x >= m:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def log_pmf(j: int) -> float:
        return _log_comb(m, j) + j * log_p + (m - j) * log_q

    lower = x <= int((m + 1) * p)  # at or below the mode: the lower tail shrinks from x down
    js = range(x, -1, -1) if lower else range(x + 1, m + 1)
    top = log_pmf(js[0])
    total = 0.0
    for j in js:
        term = log_pmf(j) - top
        if term < -50:  # the rest adds less than e-50 relative: below double precision
            break
        total += math.exp(term)
    log_tail = top + math.log(total)
    return log_tail if lower else math.log1p(-min(math.exp(log_tail), 1.0))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = 1e-4) -> float:
    """Population stability index between two frequency vectors over the same bins."""
    te, ta = sum(expected), sum(actual)
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / te, floor), max(a / ta, floor)
        total += (pa - pe) * math.log(pa / pe)
    return total


def _rate(x: int, n: int) -> str:
    return f"{x}/{n} ({100 * x / n:.2f}%)" if n else "0/0"


def check_error_rate(
    stable: ArmWindow, candidate: ArmWindow, t: Thresholds, *, stable_grows: bool = True
) -> Check:
    measured = {
        "stable": [stable.errors, stable.requests],
        "candidate": [candidate.errors, candidate.requests],
    }
    if min(stable.requests, candidate.requests) < t.min_requests:
        return Check(
            "error_rate",
            NO_DATA,
            f"{candidate.requests} candidate and {stable.requests} stable requests; "
            f"{t.min_requests} each are needed",
            measured,
        )
    summary = (
        f"candidate {_rate(candidate.errors, candidate.requests)} vs stable "
        f"{_rate(stable.errors, stable.requests)}"
    )
    return _compare_rates(
        "error_rate", (candidate.errors, candidate.requests), (stable.errors, stable.requests),
        t.error_tolerance, t, summary, measured, stable_grows,
    )  # fmt: skip


def _compare_rates(
    metric: str,
    candidate: tuple[int, int],
    stable: tuple[int, int],
    tolerance: float,
    t: Thresholds,
    summary: str,
    measured: dict[str, Any],
    stable_grows: bool,
) -> Check:
    """Fail when the candidate's rate is significantly higher and higher by more than
    ``tolerance``; inconclusive when it is higher by more than that but not yet significantly,
    and more traffic can settle it: not when stable's sample no longer grows (the candidate
    answers everything), where the p-value levels off and waiting would hold for ever."""
    p = sequential_greater(*candidate, *stable)
    diff = candidate[0] / candidate[1] - stable[0] / stable[1]
    level = t.alpha / max(t.looks, 1)
    worse = diff > tolerance
    status = FAIL if worse and p < level else INCONCLUSIVE if worse and stable_grows else PASS
    summary += (
        f": sequential p={p:.3g} (fails below {level:.3g} when worse by more than "
        f"{100 * tolerance:.2f} points)"
    )
    if status == INCONCLUSIVE:
        summary += "; worse so far but not significantly: waiting for more traffic"
    return Check(metric, status, summary, {**measured, "p_value": p, "difference": diff})


def check_latency(stable: ArmWindow, candidate: ArmWindow, t: Thresholds) -> Check:
    ps, pc = stable.p(0.95), candidate.p(0.95)
    measured = {"stable_p95_ms": ps, "candidate_p95_ms": pc}
    if min(stable.requests, candidate.requests) < t.min_requests or ps is None or pc is None:
        return Check("latency_p95", NO_DATA, "too few requests to compare latency", measured)
    ratio = pc / ps if ps > 0 else math.inf
    failed = ratio > t.max_latency_ratio and pc > t.min_latency_ms
    summary = (
        f"p95 {pc:.1f} ms vs {ps:.1f} ms stable (ratio {ratio:.2f}; at most {t.max_latency_ratio} allowed)"
    )
    return Check("latency_p95", FAIL if failed else PASS, summary, {**measured, "ratio": ratio})


def check_prediction_drift(stable: ArmWindow, candidate: ArmWindow, t: Thresholds) -> Check:
    if stable.classes or candidate.classes:
        n_s, n_c = sum(stable.classes.values()), sum(candidate.classes.values())
        if min(n_s, n_c) < t.min_predictions:
            return Check("prediction_drift", NO_DATA, f"{n_c} vs {n_s} predictions", {})
        keys = sorted(set(stable.classes) | set(candidate.classes))
        value = psi([stable.classes.get(k, 0) for k in keys], [candidate.classes.get(k, 0) for k in keys])
        what = f"class frequencies ({len(keys)} classes)"
    else:
        if min(len(stable.values), len(candidate.values)) < t.min_predictions:
            return Check(
                "prediction_drift",
                NO_DATA,
                f"{len(candidate.values)} vs {len(stable.values)} predictions",
                {},
            )
        edges = _quantile_edges(stable.values, 10)
        value = psi(_histogram(stable.values, edges), _histogram(candidate.values, edges))
        what = "10 quantile bins of stable's predictions"
    failed = value > t.max_prediction_psi
    summary = f"PSI {value:.3f} between the arms' predictions over {what} (at most {t.max_prediction_psi})"
    return Check("prediction_drift", FAIL if failed else PASS, summary, {"psi": value})


def check_quality(
    stable: ArmWindow, candidate: ArmWindow, t: Thresholds, *, stable_grows: bool = True
) -> Check:
    measured = {"stable": [stable.wrong, stable.labelled], "candidate": [candidate.wrong, candidate.labelled]}
    if min(stable.labelled, candidate.labelled) < t.min_labels:
        return Check(
            "live_quality", NO_DATA, f"{candidate.labelled} vs {stable.labelled} labels so far", measured
        )
    summary = (
        f"wrong answers: candidate {_rate(candidate.wrong, candidate.labelled)} vs stable "
        f"{_rate(stable.wrong, stable.labelled)}"
    )
    return _compare_rates(
        "live_quality", (candidate.wrong, candidate.labelled), (stable.wrong, stable.labelled),
        t.quality_tolerance, t, summary, measured, stable_grows,
    )  # fmt: skip


def analyse(
    stable: ArmWindow, candidate: ArmWindow, t: Thresholds | None = None, *, stable_grows: bool = True
) -> list[Check]:
    """Every check of candidate against stable; ``stable_grows=False`` when stable's window is a
    finished one (the candidate answers everything), so nothing waits for more of it."""
    t = t or Thresholds()
    return [
        check_error_rate(stable, candidate, t, stable_grows=stable_grows),
        check_latency(stable, candidate, t),
        check_prediction_drift(stable, candidate, t),
        check_quality(stable, candidate, t, stable_grows=stable_grows),
    ]


def judge(checks: Iterable[Check], *, failures: int = 0, failure_limit: int = 0) -> Verdict:
    """Promote when nothing failed or looks worse and the error rate had enough data; roll back
    once failed analyses exceed ``failure_limit``; otherwise hold and gather more traffic."""
    checks = list(checks)
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        failures += 1
        reasons = [f"{c.metric}: {c.summary}" for c in failed]
        if failures > failure_limit:
            return Verdict(ROLLBACK, reasons, checks, failures)
        return Verdict(
            HOLD, [*reasons, f"failure {failures} of at most {failure_limit} tolerated"], checks, failures
        )
    unsure = [f"{c.metric}: {c.summary}" for c in checks if c.status == INCONCLUSIVE]
    if unsure:
        return Verdict(HOLD, unsure, checks, failures)
    gate = next((c for c in checks if c.metric == "error_rate"), None)
    if gate is None or gate.status == NO_DATA:
        return Verdict(HOLD, ["not enough traffic yet to judge the error rate"], checks, failures)
    return Verdict(
        PROMOTE, [f"{c.metric}: {c.summary}" for c in checks if c.status == PASS], checks, failures
    )


def _quantile_edges(values: Sequence[float], bins: int) -> list[float]:
    ordered = sorted(values)
    edges = sorted({ordered[min(len(ordered) - 1, int(len(ordered) * i / bins))] for i in range(1, bins)})
    return edges


def _histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_right(edges, v)] += 1
    return counts
