"""Delivery KPIs from the rollout record: how often versions reach an environment, how long a
change takes to get there, how often a change fails, and how long users see a failed change.

The four figures follow DORA's definitions, read off the ``rollouts`` table (every rollout of
every deployment, with when it started and ended and how) over a window of time:

- **deployments**: rollouts that ended ``succeeded`` in the window (first deployments included),
  and how many that is per day;
- **lead time**: for each of those, from the start of the training run that produced the version
  (its registration, when the version has no run) to the moment the version took all traffic;
  median and 90th percentile;
- **change failure rate**: rollouts that ended ``rolled_back`` (the controller's verdict) or
  ``aborted`` (a person's), over all rollouts that ended in the window;
- **time to restore**: for each failed rollout, from its start (the first request the bad
  version could answer) to its end (all traffic back on the stable version); median.

Rollouts still in progress count for none of these; they are reported as ``in_progress``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.errors import InvalidInput
from shipway.governance.identity import parse_duration_ms
from shipway.rollout.deployments import ABORTED, ROLLED_BACK, SUCCEEDED
from shipway.store import Store, get_store, schema

_R, _D, _M, _V, _RUNS = schema.rollouts, schema.deployments, schema.models, schema.model_versions, schema.runs


@dataclass(frozen=True)
class DeliveryKPIs:
    """Delivery figures for ``environment`` (one model, or all) over ``days`` days to ``until``."""

    environment: str
    model: str | None
    days: float
    until: int  # ms since the epoch
    deployments: int
    deployments_per_day: float
    lead_time_median_s: float | None
    lead_time_p90_s: float | None
    changes: int  # rollouts that ended in the window: the change failure rate's denominator
    failed_changes: int
    change_failure_rate: float | None
    time_to_restore_median_s: float | None
    in_progress: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)  # linear interpolation, like numpy's default
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def delivery_kpis(
    environment: str = "prod",
    *,
    model: str | None = None,
    since: str = "30d",
    until: int | None = None,
    store: Store | None = None,
) -> DeliveryKPIs:
    """The delivery KPIs of ``environment`` (or of one ``model`` in it) over the ``since`` window
    (``30d``, ``12h``, ``2w`` ...) ending at ``until`` (ms; default now)."""
    store = store or get_store()
    end = now_ms() if until is None else until
    length = parse_duration_ms(since)
    if length <= 0:
        raise InvalidInput(f"The window must be longer than nothing, not {since!r}: use 7d, 30d, 12h or 2w.")
    start = end - length
    trained = sa.func.coalesce(_RUNS.c.start_time, _V.c.created_at)
    query = (
        sa.select(_R.c.started_at, _R.c.ended_at, _R.c.outcome, trained.label("trained_at"), _M.c.name)
        .select_from(
            _R.join(_D, _D.c.id == _R.c.deployment_id)
            .join(_M, _M.c.id == _D.c.model_id)
            .join(_V, sa.and_(_V.c.model_id == _D.c.model_id, _V.c.version == _R.c.to_version))
            .outerjoin(_RUNS, _RUNS.c.id == _V.c.run_id)
        )
        .where(_D.c.environment == environment)
        .where(sa.or_(_R.c.ended_at.is_(None), sa.and_(_R.c.ended_at >= start, _R.c.ended_at <= end)))
    )
    if model is not None:
        query = query.where(_M.c.name == model)
    with store.read() as conn:
        if model is not None and conn.execute(sa.select(_M.c.id).where(_M.c.name == model)).first() is None:
            raise InvalidInput(f"There is no model named {model!r}; `shipway models list` shows them.")
        rows = conn.execute(query).all()
    ended = [r for r in rows if r.ended_at is not None]
    succeeded = [r for r in ended if r.outcome == SUCCEEDED]
    failed = [r for r in ended if r.outcome in (ROLLED_BACK, ABORTED)]
    lead = [(r.ended_at - r.trained_at) / 1000 for r in succeeded]
    restore = [(r.ended_at - r.started_at) / 1000 for r in failed]
    days = (end - start) / 86_400_000
    return DeliveryKPIs(
        environment=environment,
        model=model,
        days=days,
        until=end,
        deployments=len(succeeded),
        deployments_per_day=len(succeeded) / days,
        lead_time_median_s=_quantile(lead, 0.5),
        lead_time_p90_s=_quantile(lead, 0.9),
        changes=len(ended),
        failed_changes=len(failed),
        change_failure_rate=len(failed) / len(ended) if ended else None,
        time_to_restore_median_s=_quantile(restore, 0.5),
        in_progress=len(rows) - len(ended),
    )
