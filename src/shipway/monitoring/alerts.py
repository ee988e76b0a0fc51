"""Alert rules on monitored metrics, the alerts they raise, acknowledgements and silences.

A rule watches one metric of one model: ``error_rate`` above 0.05 over the last 5 minutes, for
2 minutes. Its alert is *pending* from the first evaluation that finds the condition true and
*firing* once it has stayed true for the rule's ``for`` duration; it *resolves* when the
condition no longer holds (a pending alert that clears is dropped). There is at most one open
(pending or firing) alert per (rule, model); the monitor (:mod:`shipway.monitoring.loop`)
evaluates the rules, moves the alerts, notifies webhooks and runs actions. Every SLO adds
burn-rate rules of its own (:mod:`shipway.monitoring.slo`), named ``slo:<objective>:<severity>``.

Acknowledging an alert stops reminders about it (its state still follows the metric); a silence
holds back every notification and action for a model, or one of its rules, until it ends.
Creating, deleting, acknowledging and silencing need the contributor role on the model; reading
needs viewer.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from shipway.core.ids import new_id
from shipway.core.pages import decode_cursor, encode_cursor
from shipway.governance.identity import parse_duration_ms, require
from shipway.governance.webhooks import check_url
from shipway.monitoring.signals import METRICS, check_metric
from shipway.store import Store, audit, get_store, schema

__all__ = [
    "ACTIONS",
    "Alert",
    "AlertPage",
    "Rule",
    "Silence",
    "ack_alert",
    "add_rule",
    "delete_rule",
    "get_alert",
    "list_alerts",
    "list_rules",
    "list_silences",
    "register_action",
    "silence",
]

_R, _A, _SIL = schema.alert_rules, schema.alerts, schema.silences
PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
STATES = (PENDING, FIRING, RESOLVED)
SEVERITIES = ("page", "ticket", "warning", "info")
# The burn-rate rules every SLO brings (shipway.monitoring.slo): slo:<objective>:<severity>.
SLO_RULES = frozenset(f"slo:{o}:{s}" for o in ("availability", "latency") for s in ("page", "ticket"))
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


def register_action(name: str, fn: Any) -> None:
    """Let rules name ``fn`` as an action: ``fn(alert, rule)`` runs when their alert starts firing."""
    if not isinstance(name, str) or not _RULE_NAME.match(name):
        raise InvalidInput(f"Action name {name!r} is not allowed: use letters, digits and . _ -.")
    if not callable(fn):
        raise InvalidInput(f"The action {name!r} must be callable as fn(alert, rule).")
    ACTIONS[name] = fn


@dataclass(frozen=True)
class Rule:
    """A condition on one model's metric: ``metric`` ``op`` ``threshold`` over ``window_ms``,
    held for ``for_ms``."""

    name: str
    model: str
    metric: str
    op: str  # above | below
    threshold: float
    window_ms: int
    for_ms: int
    severity: str = "warning"
    environment: str = "prod"
    webhooks: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    created_at: int = 0
    created_by: str = ""

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` meets the condition (never without a value: no data never fires)."""
        if value is None or math.isnan(value):
            return False
        return value > self.threshold if self.op == "above" else value < self.threshold

    def describe(self) -> str:
        """'error_rate above 0.05 over 5m for 2m'."""
        text = f"{self.metric} {self.op} {self.threshold:g} over {duration_text(self.window_ms)}"
        return text + (f" for {duration_text(self.for_ms)}" if self.for_ms else "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(webhooks=list(self.webhooks), actions=list(self.actions), description=self.describe())
        return data


def duration_text(ms: int) -> str:
    """Milliseconds as the largest whole unit: 300000 -> '5m', 90000 -> '90s'."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _rule(row: Any) -> Rule:
    return Rule(
        row.name,
        row.model,
        row.metric,
        row.op,
        row.threshold,
        row.window_ms,
        row.for_ms,
        row.severity,
        row.environment,
        tuple(row.webhooks or ()),
        tuple(row.actions or ()),
        row.created_at,
        row.created_by,
    )


def _duration(value: int | str, what: str) -> int:
    ms = parse_duration_ms(value) if isinstance(value, str) else value
    if not isinstance(ms, int) or ms < 0:
        raise InvalidInput(f"The {what} must be a duration like 90s, 5m or 1h; not {value!r}.")
    return ms


def add_rule(
    model: str,
    metric: str,
    *,
    above: float | None = None,
    below: float | None = None,
    window: int | str = "5m",
    for_: int | str = 0,
    name: str | None = None,
    severity: str = "warning",
    environment: str = "prod",
    webhooks: tuple[str, ...] | list[str] = (),
    actions: tuple[str, ...] | list[str] = (),
    store: Store | None = None,
) -> Rule:
    """Watch ``model``'s ``metric``: alert when it is ``above`` (or ``below``) a threshold over
    ``window``, for ``for_`` (durations as 90s, 5m, 1h or milliseconds)."""
    store = store or get_store()
    actor = require("contributor", model)
    check_metric(metric)
    if (above is None) == (below is None):
        raise InvalidInput("Give exactly one threshold: above (alert when higher) or below (when lower).")
    op, threshold = ("above", above) if above is not None else ("below", below)
    if not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise InvalidInput(f"The threshold must be a finite number, not {threshold!r}.")
    window_ms, for_ms = _duration(window, "window"), _duration(for_, "'for' duration")
    least = METRICS[metric].min_window_ms
    if not least <= window_ms <= 30 * 86_400_000:
        raise InvalidInput(
            f"The window of {metric} must be between {duration_text(least)} and 30d; "
            f"got {duration_text(window_ms)}."
        )
    if severity not in SEVERITIES:
        raise InvalidInput(f"Severity {severity!r} is not one of {', '.join(SEVERITIES)}.")
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise InvalidInput(
            f"No action named {', '.join(map(repr, unknown))}; "
            f"known actions: {', '.join(sorted(ACTIONS)) or 'none'}."
        )
    hooks = tuple(check_url(url) for url in webhooks)
    name = name or f"{model}-{metric}-{op}-{float(threshold):g}"
    if not _RULE_NAME.match(name):
        raise InvalidInput(f"Rule name {name!r} is not allowed: use 1-128 letters, digits or . _ -.")
    rule = Rule(
        name,
        model,
        metric,
        op,
        float(threshold),
        window_ms,
        for_ms,
        severity,
        environment,
        hooks,
        tuple(actions),
        now_ms(),
        actor.name,
    )
    values = rule.to_dict()
    values.pop("description")
    with store.write() as conn:
        if conn.execute(sa.select(schema.models.c.id).where(schema.models.c.name == model)).first() is None:
            raise NotFound(f"No model named {model!r}; register it first (shipway.register_model).")
        if conn.execute(sa.select(_R.c.name).where(_R.c.name == name)).first() is not None:
            raise AlreadyExists(
                f"An alert rule named {name!r} exists; delete it first (shipway alerts delete {name}) "
                "or give this one another --name."
            )
        conn.execute(_R.insert().values(**values))
        # Webhook URLs are secrets (a Slack URL is its own credential): the audit log keeps their count.
        audited = {**values, "webhooks": len(hooks)}
        audit.append(conn, "alert.rule_added", f"alert-rule/{name}", audited, actor=actor.name)
    return rule


def get_rule(name: str, *, store: Store | None = None) -> Rule:
    """The rule named ``name``."""
    store = store or get_store()
    with store.read() as conn:
        row = conn.execute(sa.select(_R).where(_R.c.name == name)).first()
    if row is None:
        raise NotFound(f"No alert rule named {name!r}; `shipway alerts rules` lists them.")
    return _rule(row)


def list_rules(model: str | None = None, *, store: Store | None = None) -> list[Rule]:
    """Alert rules (of one model when given), by name; SLO burn-rate rules are not rows here."""
    store = store or get_store()
    query = sa.select(_R).order_by(_R.c.name)
    if model is not None:
        query = query.where(_R.c.model == model)
    with store.read() as conn:
        return [_rule(row) for row in conn.execute(query).all()]


def delete_rule(name: str, *, store: Store | None = None) -> Rule:
    """Delete a rule; its open alert, if any, resolves (and is not notified)."""
    store = store or get_store()
    rule = get_rule(name, store=store)
    actor = require("contributor", rule.model)
    with store.write() as conn:
        conn.execute(_R.delete().where(_R.c.name == name))
        audit.append(
            conn, "alert.rule_deleted", f"alert-rule/{name}", {"model": rule.model}, actor=actor.name
        )
        close_alerts(conn, model=rule.model, rule=name, reason="rule deleted", actor=actor.name)
    return rule


def close_alerts(
    conn: sa.Connection,
    *,
    model: str,
    reason: str,
    actor: str,
    rule: str | None = None,
    rule_prefix: str | None = None,
) -> int:
    """Resolve open alerts of a rule (or of rules named ``rule_prefix``...) that no longer exists."""
    query = sa.select(_A).where(_A.c.model == model, _A.c.open_key.is_not(None))
    if rule is not None:
        query = query.where(_A.c.rule == rule)
    if rule_prefix is not None:
        query = query.where(_A.c.rule.startswith(rule_prefix))
    now = now_ms()
    rows = conn.execute(query).all()
    for row in rows:
        conn.execute(
            _A.update()
            .where(_A.c.id == row.id)
            .values(state=RESOLVED, open_key=None, resolved_at=now, updated_at=now, revision=row.revision + 1)
        )
        audit.append(
            conn,
            "alert.resolved",
            f"alert/{row.model}/{row.rule}",
            {"alert": row.id, "from": row.state, "reason": reason},
            actor=actor,
        )
    return len(rows)


# -- alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One episode of a rule's condition on a model."""

    id: str
    rule: str
    model: str
    severity: str
    state: str
    value: float | None
    summary: str
    started_at: int
    fired_at: int | None
    resolved_at: int | None
    updated_at: int
    acked_at: int | None
    acked_by: str | None
    silenced: bool = False

    @property
    def since(self) -> int:
        """When it entered its current state."""
        if self.state == RESOLVED and self.resolved_at is not None:
            return self.resolved_at
        if self.state == FIRING and self.fired_at is not None:
            return self.fired_at
        return self.started_at

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since
        return data


def _alert(row: Any, silenced: bool = False) -> Alert:
    return Alert(
        row.id,
        row.rule,
        row.model,
        row.severity,
        row.state,
        row.value,
        row.summary,
        row.started_at,
        row.fired_at,
        row.resolved_at,
        row.updated_at,
        row.acked_at,
        row.acked_by,
        silenced,
    )


class AlertPage(list[Alert]):
    """A page of alerts, with the token of the next page (None on the last)."""

    next_page_token: str | None = None


def list_alerts(
    *,
    state: str | None = None,
    model: str | None = None,
    limit: int = 100,
    page_token: str | None = None,
    now: int | None = None,
    store: Store | None = None,
) -> AlertPage:
    """Alerts, newest first (by when they started), with whether a silence covers each now."""
    store = store or get_store()
    if state is not None and state not in STATES:
        raise InvalidInput(f"State {state!r} is not one of {', '.join(STATES)}.")
    if not 1 <= limit <= 1000:
        raise InvalidInput(f"limit must be between 1 and 1000, not {limit}.")
    query = sa.select(_A).order_by(_A.c.started_at.desc(), _A.c.id).limit(limit + 1)
    if state is not None:
        query = query.where(_A.c.state == state)
    if model is not None:
        query = query.where(_A.c.model == model)
    if page_token:
        started, after = decode_cursor(page_token, (int, str))
        query = query.where(
            sa.or_(_A.c.started_at < started, sa.and_(_A.c.started_at == started, _A.c.id > after))
        )
    now = now_ms() if now is None else now
    with store.read() as conn:
        rows = conn.execute(query).all()
    quiet = silenced_keys(store, now)
    page = AlertPage(_alert(r, covered(quiet, r.model, r.rule)) for r in rows[:limit])
    if len(rows) > limit:
        page.next_page_token = encode_cursor((page[-1].started_at, page[-1].id))
    return page


def get_alert(alert_id: str, *, store: Store | None = None) -> Alert:
    """One alert by id (a unique prefix of at least 6 characters will do)."""
    store = store or get_store()
    if not isinstance(alert_id, str) or not re.fullmatch(r"[0-9a-f]{6,32}", alert_id):
        raise InvalidInput(f"Alert id {alert_id!r} is not one: ids are hex, as `shipway alerts list` shows.")
    with store.read() as conn:
        rows = conn.execute(sa.select(_A).where(_A.c.id.startswith(alert_id)).limit(2)).all()
    if not rows:
        raise NotFound(f"No alert with id {alert_id!r}; `shipway alerts list` shows them.")
    if len(rows) > 1:
        raise InvalidInput(f"Alert id {alert_id!r} is ambiguous; give more of it.")
    quiet = silenced_keys(store, now_ms())
    return _alert(rows[0], covered(quiet, rows[0].model, rows[0].rule))


def ack_alert(alert_id: str, *, store: Store | None = None) -> Alert:
    """Acknowledge an open alert: someone is on it, so the monitor stops reminding."""
    store = store or get_store()
    found = get_alert(alert_id, store=store)
    actor = require("contributor", found.model)
    if found.state == RESOLVED:
        raise Conflict(
            f"Alert {found.id[:8]} ({found.rule} on {found.model}) is resolved; nothing to acknowledge."
        )
    if found.acked_at is not None:
        return found
    now = now_ms()
    with store.write() as conn:
        changed = conn.execute(
            _A.update()
            .where(_A.c.id == found.id, _A.c.state != RESOLVED, _A.c.acked_at.is_(None))
            .values(acked_at=now, acked_by=actor.name, updated_at=now, revision=_A.c.revision + 1)
        ).rowcount
        if changed:
            audit.append(
                conn,
                "alert.acked",
                f"alert/{found.model}/{found.rule}",
                {"alert": found.id, "state": found.state},
                actor=actor.name,
            )
    return get_alert(found.id, store=store)


def _rollback(alert: Alert, rule: Rule) -> str:
    """Abort the rule's model's rollout in the rule's environment: all traffic back to stable."""
    from shipway.rollout import abort_rollout

    d = abort_rollout(rule.model, rule.environment, reason=f"alert {rule.name}: {alert.summary}")
    return f"rolled back: {rule.model} in {rule.environment} serves v{d.stable_version} again"


# name -> fn(alert, rule), called by the monitor when an alert starts firing (its result, if any,
# is audited as the action's message); pipelines add theirs with register_action.
ACTIONS: dict[str, Any] = {"rollback": _rollback}


# -- silences -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Silence:
    """Notifications and actions held back for a model (one rule, or all) until ``until``."""

    id: str
    model: str
    rule: str | None
    until: int
    reason: str | None
    created_at: int
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def silence(
    model: str,
    duration: int | str,
    *,
    rule: str | None = None,
    reason: str | None = None,
    store: Store | None = None,
) -> Silence:
    """Hold back notifications and actions of ``model``'s alerts (of ``rule`` only, when given)
    for ``duration`` (2h, 30m or milliseconds). Alerts still change state, and are audited."""
    store = store or get_store()
    actor = require("contributor", model)
    ms = _duration(duration, "silence")
    if ms <= 0:
        raise InvalidInput("A silence must last a while, like 30m or 2h.")
    now = now_ms()
    found = Silence(new_id(), model, rule, now + ms, reason, now, actor.name)
    with store.write() as conn:
        if conn.execute(sa.select(schema.models.c.id).where(schema.models.c.name == model)).first() is None:
            raise NotFound(f"No model named {model!r}.")
        if rule is not None:
            owner = (
                model
                if rule in SLO_RULES
                else conn.execute(sa.select(_R.c.model).where(_R.c.name == rule)).scalar()
            )
            if owner != model:
                raise NotFound(
                    f"{model!r} has no alert rule named {rule!r}; `shipway alerts rules` lists them."
                )
        conn.execute(_SIL.insert().values(**found.to_dict()))
        audit.append(
            conn,
            "alert.silenced",
            f"alert/{model}/{rule or '*'}",
            {"silence": found.id, "until": found.until, "reason": reason},
            actor=actor.name,
        )
    return found


def list_silences(*, active_at: int | None = None, store: Store | None = None) -> list[Silence]:
    """Silences still in force at ``active_at`` (now), soonest to end first."""
    store = store or get_store()
    at = now_ms() if active_at is None else active_at
    with store.read() as conn:
        rows = conn.execute(sa.select(_SIL).where(_SIL.c.until > at).order_by(_SIL.c.until)).all()
    return [Silence(**row._mapping) for row in rows]


def silenced_keys(store: Store, now: int) -> set[tuple[str, str | None]]:
    """(model, rule or None for every rule) of the silences in force at ``now``."""
    with store.read() as conn:
        return {
            (m, r) for m, r in conn.execute(sa.select(_SIL.c.model, _SIL.c.rule).where(_SIL.c.until > now))
        }


def covered(keys: set[tuple[str, str | None]], model: str, rule: str) -> bool:
    """Whether a silence among ``keys`` covers ``rule`` on ``model``."""
    return (model, None) in keys or (model, rule) in keys
