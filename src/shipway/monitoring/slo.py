"""Service level objectives per model, their error budgets, and multi-window burn-rate alerts.

An SLO holds up to two objectives, each a share of requests that must be *good* over 30 days:

- ``availability``: requests answered without a server error (5xx); 4xx are the caller's mistakes.
- ``latency``: requests answered within ``latency_ms``, a bound of the latency histogram (the one
  ``/metrics`` exposes, so the same count is the ``le`` bucket in Prometheus).

The error budget is the share allowed to be bad (0.1 % for 99.9 %). A window's *burn rate* is its
bad share divided by the budget: at 1 the budget lasts exactly the 30 days, at 14.4 an hour spends
2 % of it. As in the Google SRE workbook, each objective pages when the 1 h and 5 m burn rates
both exceed 14.4, or the 6 h and 30 m both exceed 6, and opens a ticket when the 3 d and 6 h both
exceed 1: the long window says the budget really burns, the short one that it still does (so the
alert resolves soon after the problem does). A window without requests has no burn rate and
never fires. An SLO counts the traffic of one environment (prod unless set otherwise): a staging
server's failures do not spend prod's budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.errors import InvalidInput, NotFound
from shipway.governance.identity import require
from shipway.governance.webhooks import check_url
from shipway.monitoring.traffic import BOUNDS_MS, Totals, bound_index, nearest_bound, window_totals
from shipway.store import Store, audit, get_store, schema

__all__ = [
    "BURN_WINDOWS",
    "PAGE",
    "PERIOD_MS",
    "SLO",
    "TICKET",
    "BurnAlert",
    "delete_slo",
    "get_slo",
    "list_slos",
    "set_slo",
    "slo_status",
]

_S = schema.slos
PERIOD_MS = 30 * 86_400_000
BURN_WINDOWS: dict[str, int] = {
    "5m": 300_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "6h": 21_600_000,
    "3d": 259_200_000,
}
# (long window, short window, burn rate both must exceed), per severity.
PAGE: tuple[tuple[str, str, float], ...] = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET: tuple[tuple[str, str, float], ...] = (("3d", "6h", 1.0),)
SEVERITIES = {"page": PAGE, "ticket": TICKET}
_ENVIRONMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class SLO:
    """A model's objectives in ``environment``: ``availability`` and ``latency_share`` are fractions
    (0.999)."""

    model: str
    availability: float | None
    latency_ms: float | None
    latency_share: float | None
    webhooks: tuple[str, ...]
    updated_at: int
    updated_by: str
    environment: str = "prod"

    def objectives(self) -> dict[str, float]:
        """Each objective's name and target share of good requests."""
        found = {}
        if self.availability is not None:
            found["availability"] = self.availability
        if self.latency_ms is not None and self.latency_share is not None:
            found["latency"] = self.latency_share
        return found

    def bad(self, sli: str, totals: Totals) -> int:
        """The bad requests of one objective in ``totals``."""
        if sli == "availability":
            return totals.errors
        bound = bound_index(self.latency_ms or 0.0)
        assert bound is not None  # set_slo keeps latency_ms on a bound
        return totals.slower_than(bound)

    def describe(self, sli: str) -> str:
        """The objective as a sentence: '99.9% of requests without a server error'."""
        if sli == "availability":
            return f"{_pct(self.availability)} of requests without a server error"
        return f"{_pct(self.latency_share)} of requests within {self.latency_ms:g} ms"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["webhooks"] = list(self.webhooks)
        return data


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.6g}%"


def _slo(row: Any) -> SLO:
    return SLO(
        row.model,
        row.availability,
        row.latency_ms,
        row.latency_share,
        tuple(row.webhooks or ()),
        row.updated_at,
        row.updated_by,
        row.environment,
    )


def _percent(value: float, flag: str) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or not 0 < value < 100:
        raise InvalidInput(f"{flag} is a percentage between 0 and 100 (exclusive), like 99.9; not {value!r}.")
    if value <= 1:
        raise InvalidInput(
            f"{flag} {value!r} reads as a fraction, which would be an objective of {value}%: "
            "give a percentage, like 99.9."
        )
    return value / 100


def _model_exists(conn: sa.Connection, model: str) -> None:
    if conn.execute(sa.select(schema.models.c.id).where(schema.models.c.name == model)).first() is None:
        raise NotFound(f"No model named {model!r}; register it first (shipway.register_model).")


def set_slo(
    model: str,
    *,
    availability: float | None = None,
    latency_ms: float | None = None,
    latency_percentile: float = 95.0,
    webhooks: tuple[str, ...] | list[str] = (),
    environment: str = "prod",
    store: Store | None = None,
) -> SLO:
    """Set (replace) ``model``'s SLO: ``availability`` in percent (99.9), and/or ``latency_ms`` for
    ``latency_percentile`` percent of requests, of its traffic in ``environment``.

    ``latency_ms`` must be a bound of the latency histogram; another value is moved to the nearest
    bound (compare the returned ``latency_ms`` with the one asked for). The open alerts of an
    objective it no longer has resolve.
    """
    from shipway.monitoring.alerts import close_alerts

    store = store or get_store()
    actor = require("contributor", model)
    if availability is None and latency_ms is None:
        raise InvalidInput("An SLO needs an objective: give availability (like 99.9) and/or latency_ms.")
    objective = _percent(availability, "availability") if availability is not None else None
    bound_ms = share = None
    if latency_ms is not None:
        if not isinstance(latency_ms, int | float) or not 0 < latency_ms < math.inf:
            raise InvalidInput(
                f"The latency threshold is a positive number of milliseconds, not {latency_ms!r}."
            )
        bound_ms = BOUNDS_MS[nearest_bound(float(latency_ms))]
        share = _percent(latency_percentile, "The latency percentile")
    hooks = tuple(check_url(url) for url in webhooks)
    if not isinstance(environment, str) or not _ENVIRONMENT.match(environment):
        raise InvalidInput(
            f"Environment {environment!r} is not allowed: use 1-64 letters, digits or . _ - (like prod)."
        )
    now = now_ms()
    values = {
        "environment": environment,
        "availability": objective,
        "latency_ms": bound_ms,
        "latency_share": share,
        "webhooks": list(hooks),
        "updated_at": now,
        "updated_by": actor.name,
    }
    with store.write() as conn:
        _model_exists(conn, model)
        exists = conn.execute(sa.select(_S.c.model).where(_S.c.model == model)).first() is not None
        if exists:
            conn.execute(_S.update().where(_S.c.model == model).values(**values))
        else:
            conn.execute(_S.insert().values(model=model, **values))
        # The alerts of an objective the SLO no longer has would stay open forever: close them.
        kept = {"availability": objective is not None, "latency": bound_ms is not None}
        for sli in [sli for sli, keep in kept.items() if not keep]:
            reason = f"SLO objective {sli} removed"
            close_alerts(conn, model=model, rule_prefix=f"slo:{sli}:", reason=reason, actor=actor.name)
        audit.append(
            conn,
            "slo.set",
            f"slo/{model}",
            {
                "environment": environment,
                "availability": objective,
                "latency_ms": bound_ms,
                "latency_share": share,
                "webhooks": len(hooks),  # their count: a webhook URL is a secret
            },
            actor=actor.name,
        )
    return SLO(model, objective, bound_ms, share, hooks, now, actor.name, environment)


def get_slo(model: str, *, store: Store | None = None) -> SLO:
    """``model``'s SLO; NotFound when it has none."""
    store = store or get_store()
    with store.read() as conn:
        row = conn.execute(sa.select(_S).where(_S.c.model == model)).first()
    if row is None:
        raise NotFound(f"{model!r} has no SLO; set one with `shipway slo set {model} --availability 99.9`.")
    return _slo(row)


def list_slos(*, store: Store | None = None) -> list[SLO]:
    """Every SLO, by model name."""
    store = store or get_store()
    with store.read() as conn:
        return [_slo(row) for row in conn.execute(sa.select(_S).order_by(_S.c.model)).all()]


def delete_slo(model: str, *, store: Store | None = None) -> None:
    """Remove ``model``'s SLO; its burn-rate alerts that are open resolve."""
    from shipway.monitoring.alerts import close_alerts

    store = store or get_store()
    actor = require("contributor", model)
    with store.write() as conn:
        if conn.execute(_S.delete().where(_S.c.model == model)).rowcount == 0:
            raise NotFound(f"{model!r} has no SLO to delete.")
        audit.append(conn, "slo.deleted", f"slo/{model}", {}, actor=actor.name)
        close_alerts(conn, model=model, rule_prefix="slo:", reason="SLO deleted", actor=actor.name)


@dataclass(frozen=True)
class BurnAlert:
    """Whether one objective's page or ticket condition holds, and the burn rates behind it."""

    rule: str  # slo:<objective>:<severity>
    model: str
    objective: str
    severity: str
    active: bool
    value: float | None  # the long window's burn rate of the condition that holds (else the first)
    summary: str


def burn_rates(slo: SLO, sli: str, totals: dict[str, Totals]) -> dict[str, float | None]:
    """Each window's burn rate for one objective; None for a window without requests."""
    budget = 1.0 - slo.objectives()[sli]
    return {
        name: (slo.bad(sli, t) / t.requests / budget if t.requests else None) for name, t in totals.items()
    }


def burn_alerts(slo: SLO, totals: dict[str, Totals]) -> list[BurnAlert]:
    """The page and ticket conditions of every objective, from the burn windows' totals."""
    found = []
    for sli in slo.objectives():
        rates = burn_rates(slo, sli, totals)
        for severity, conditions in SEVERITIES.items():
            holding = [
                (long, short, factor)
                for long, short, factor in conditions
                if (rates[long] or 0) > factor and (rates[short] or 0) > factor
            ]
            long, short, factor = holding[0] if holding else conditions[0]
            value = rates[long]
            shown = "no data" if value is None else f"{value:.3g}"
            summary = (
                f"{slo.model} is burning its {sli} error budget ({slo.describe(sli)}): "
                f"burn rate {shown} over {long} and "
                f"{'no data' if rates[short] is None else f'{rates[short]:.3g}'} over {short} "
                f"({'above' if holding else 'threshold'} {factor:g})"
            )
            found.append(
                BurnAlert(f"slo:{sli}:{severity}", slo.model, sli, severity, bool(holding), value, summary)
            )
    return found


def slo_totals(slo: SLO, *, now: int | None = None, period: bool = False, store: Store) -> dict[str, Totals]:
    """The traffic totals an SLO needs: every burn window (and the 30 d period when asked)."""
    windows = dict(BURN_WINDOWS)
    if period:
        windows["30d"] = PERIOD_MS
    bounds = [] if slo.latency_ms is None else [bound_index(slo.latency_ms)]
    env = slo.environment
    return window_totals(store, slo.model, windows, environment=env, bounds=bounds, now=now)  # type: ignore[arg-type]


def slo_status(model: str, *, now: int | None = None, store: Store | None = None) -> dict[str, Any]:
    """``model``'s SLO with, per objective: the error budget left over 30 days, the burn rate of
    each window, and whether its page and ticket alerts' conditions hold now."""
    store = store or get_store()
    slo = get_slo(model, store=store)
    now = now_ms() if now is None else now
    totals = slo_totals(slo, now=now, period=True, store=store)
    period = totals.pop("30d")
    alerts = {(a.objective, a.severity): a for a in burn_alerts(slo, totals)}
    objectives = []
    for sli, target in slo.objectives().items():
        budget = 1.0 - target
        bad = slo.bad(sli, period)
        spent = bad / period.requests / budget if period.requests else None
        objectives.append(
            {
                "objective": sli,
                "target": target,
                "description": slo.describe(sli),
                "requests_30d": period.requests,
                "bad_30d": bad,
                "budget": budget,
                "budget_left": None if spent is None else 1.0 - spent,
                "burn_rates": burn_rates(slo, sli, totals),
                "page": alerts[(sli, "page")].active,
                "ticket": alerts[(sli, "ticket")].active,
            }
        )
    return {**slo.to_dict(), "at": now, "objectives": objectives}
