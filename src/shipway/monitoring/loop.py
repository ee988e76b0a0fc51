"""The monitor: evaluates every alert rule and SLO, moves alerts, notifies webhooks, runs actions.

Each evaluation measures every rule's metric and every SLO's burn rates at one instant, then
moves each (rule, model)'s alert in a write transaction of its own: inactive → pending (the
condition holds) → firing (it held for the rule's ``for``; at once when ``for`` is 0) →
resolved (it no longer holds); a pending alert that clears is dropped. Each change appends an
audit entry in its transaction, and is conditional on the alert row as read (a row lock on
PostgreSQL, the write lock on SQLite, and a unique key on open alerts), so two monitors on one
store never both move an alert, and only the one that moved it notifies. A measurement is applied
only if its rule (or SLO objective) still exists and the alerts of (rule, model) have not changed
since it was taken (another monitor moved them, deleting the rule closed them): an older
measurement never reopens an alert that was closed after it.

An alert is notified when it starts firing and when it resolves, and reminded every
``repeat_ms`` while it fires unless acknowledged. Silenced alerts are not notified and run no
action; if a silence ends while the alert fires, it is notified (and acts) then. Notifications
are Slack-compatible JSON (``text`` plus structured fields) POSTed in the background with
retries; actions (``rollback``, or any registered with
:func:`~shipway.monitoring.alerts.register_action`) run in a small thread pool, and their
outcome is audited. Nothing a webhook or an action does can hold up an evaluation. A rule or SLO
that cannot be measured, for whatever reason (its reason is in ``Monitor.errors``), leaves its
alert as it was, and the others are evaluated as usual.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from shipway.core.actor import Actor, acting_as
from shipway.core.clock import iso, now_ms
from shipway.core.errors import ShipwayError
from shipway.core.ids import new_id
from shipway.governance.webhooks import post_json
from shipway.monitoring import alerts as _alerts
from shipway.monitoring.alerts import FIRING, PENDING, RESOLVED, SLO_RULES, Rule, covered, silenced_keys
from shipway.monitoring.signals import measure
from shipway.monitoring.slo import PERIOD_MS, burn_alerts, list_slos, slo_totals
from shipway.monitoring.traffic import prune_traffic
from shipway.store import Store, audit, get_store, schema

__all__ = ["Monitor", "Observation", "Transition"]

log = logging.getLogger("shipway.monitoring")

_A, _R, _S = schema.alerts, schema.alert_rules, schema.slos
PRUNE_EVERY_MS = 3_600_000
KEEP_TRAFFIC_MS = PERIOD_MS + 86_400_000  # a day beyond the SLO period


@dataclass(frozen=True)
class Observation:
    """One rule's condition on one model at one evaluation."""

    rule: str
    model: str
    severity: str
    active: bool
    value: float | None
    summary: str
    for_ms: int = 0
    webhooks: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    metric: str = ""
    threshold: float | None = None
    source: Rule | None = None
    # The alerts of (rule, model) as they were just before measuring (see _seen): applying the
    # observation is skipped when they changed since, as an older observation says nothing of them.
    seen: tuple[int, int, str | None] | None = None


@dataclass(frozen=True)
class Transition:
    """What one evaluation did to one alert (``after`` None: a pending alert cleared), and what it
    told: ``notify`` is ``firing``, ``resolved``, ``reminder`` or None."""

    alert: str
    rule: str
    model: str
    before: str | None
    after: str | None
    value: float | None
    summary: str
    notify: str | None = None
    act: bool = False
    since: int = 0


def _moved(
    alert: str,
    obs: Observation,
    before: str | None,
    after: str | None,
    notify: str | None = None,
    act: bool = False,
    since: int = 0,
) -> Transition:
    return Transition(alert, obs.rule, obs.model, before, after, obs.value, obs.summary, notify, act, since)


class _Lost(Exception):
    """Another monitor changed the alert between our read and our write."""


def _seen(conn: sa.Connection, model: str, rules: list[str]) -> dict[str, tuple[int, int, str | None]]:
    """Per rule of ``model``: how many alerts it has, the sum of their revisions and the open one's
    id. Every change to them (one opened, moved, acknowledged, closed or dropped) changes this."""
    open_id = sa.func.max(sa.case((_A.c.open_key.is_not(None), _A.c.id)))
    query = (
        sa.select(_A.c.rule, sa.func.count(), sa.func.sum(_A.c.revision), open_id)
        .where(_A.c.model == model, _A.c.rule.in_(rules))
        .group_by(_A.c.rule)
    )
    found = {
        rule: (int(n), int(revisions or 0), opened) for rule, n, revisions, opened in conn.execute(query)
    }
    return {rule: found.get(rule, (0, 0, None)) for rule in rules}


@dataclass
class Monitor:
    """Evaluates alert rules and SLOs against the store, every ``interval`` seconds once started."""

    store: Store | None = None
    interval: float = 30.0
    repeat_ms: int | None = 4 * 3_600_000
    webhook_attempts: int = 5
    webhook_backoff: float = 1.0
    name: str = "shipway-monitor"
    # delete prediction logs and labels older than this (ms), hourly; None keeps them all
    keep_logs_ms: int | None = None
    # rule name (or slo/<model>) -> why it could not be measured at the last evaluation
    errors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="shipway-alert-action")
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._pruned_at = 0

    @property
    def _store(self) -> Store:
        return self.store or get_store()

    # -- one evaluation ------------------------------------------------------------------------

    def evaluate_once(self, now: int | None = None) -> list[Transition]:
        """Measure every rule and SLO at ``now`` (ms; the clock when None) and move their alerts."""
        store = self._store
        now = now_ms() if now is None else now
        quiet = silenced_keys(store, now)
        query = sa.select(_A.c.open_key).where(_A.c.open_key.is_not(None))
        with store.read() as conn:
            open_keys = set(conn.execute(query).scalars())
        moved = []
        for obs in self.observe(now):
            if not obs.active and f"{obs.rule}/{obs.model}" not in open_keys:
                continue  # nothing to open, nothing to close: no write transaction
            try:
                transition = self._apply(store, obs, now, covered(quiet, obs.model, obs.rule))
            except ShipwayError as exc:  # the store went away mid-evaluation: try again next time
                log.warning("could not update the alert of %s on %s: %s", obs.rule, obs.model, exc.message)
                continue
            except Exception:  # a bug: logged, and the other alerts still move
                log.exception("could not update the alert of %s on %s", obs.rule, obs.model)
                continue
            if transition is not None:
                moved.append(transition)
                self._deliver(store, transition, obs)
        if now - self._pruned_at >= PRUNE_EVERY_MS:
            self._pruned_at = now
            prune_traffic(store, now - KEEP_TRAFFIC_MS)
            if self.keep_logs_ms is not None:
                self._prune_logs(store, now)
        return moved

    def _prune_logs(self, store: Store, now: int) -> None:
        from shipway.monitoring.retention import prune

        assert self.keep_logs_ms is not None
        try:
            report = prune(
                store, self.keep_logs_ms, now=datetime.fromtimestamp(now / 1000, UTC), actor=self.name
            )
        except Exception:  # a store that went away, or a bug: logged, and tried again in an hour
            log.exception("could not prune the prediction logs and labels")
            return
        if report.total:
            log.info("pruned %d log file(s) from before %s", report.total, report.cutoff)

    def _failed(self, name: str, exc: Exception) -> None:
        """Record why ``name`` (a rule, or ``slo/<model>``) could not be measured, logging it when
        the reason is new: a ShipwayError's message, else the exception (a bug) with its traceback."""
        what = f"the SLO of {name[4:]}" if name.startswith("slo/") else f"alert rule {name}"
        if isinstance(exc, ShipwayError):
            message = exc.message
            if self.errors.get(name) != message:
                log.warning("%s cannot be evaluated: %s", what, message)
        else:
            message = f"{type(exc).__name__}: {exc}"
            if self.errors.get(name) != message:
                log.error("%s cannot be evaluated: %s", what, message, exc_info=exc)
        self.errors[name] = message

    def observe(self, now: int) -> list[Observation]:
        """Every rule's and SLO objective's condition at ``now``, without changing anything.

        A rule or SLO that cannot be measured (an alias that does not exist, a store that went
        away, a bug) is left out, its reason in ``errors``: its alert stays as it is rather than
        resolve on no evidence, and the others are still measured."""
        store = self._store
        found = []
        for rule in _alerts.list_rules(store=store):
            try:
                with store.read() as conn:
                    seen = _seen(conn, rule.model, [rule.name])[rule.name]
                value = measure(store, rule, now)
                self.errors.pop(rule.name, None)
            except Exception as exc:
                self._failed(rule.name, exc)
                continue
            shown = "no data" if value is None else f"{value:.4g}"
            found.append(
                Observation(
                    rule.name,
                    rule.model,
                    rule.severity,
                    rule.holds(value),
                    value,
                    f"{rule.model}: {rule.metric} is {shown} (alert when {rule.describe()})",
                    rule.for_ms,
                    rule.webhooks,
                    rule.actions,
                    rule.metric,
                    rule.threshold,
                    rule,
                    seen,
                )
            )
        for slo in list_slos(store=store):
            name = f"slo/{slo.model}"
            try:
                with store.read() as conn:
                    seen_slo = _seen(conn, slo.model, sorted(SLO_RULES))
                burns = burn_alerts(slo, slo_totals(slo, now=now, store=store))
                self.errors.pop(name, None)
            except Exception as exc:
                self._failed(name, exc)
                continue
            for burn in burns:
                found.append(
                    Observation(
                        burn.rule,
                        burn.model,
                        burn.severity,
                        burn.active,
                        burn.value,
                        burn.summary,
                        webhooks=slo.webhooks,
                        metric=f"{burn.objective}_burn_rate",
                        seen=seen_slo[burn.rule],
                    )
                )
        return found

    @staticmethod
    def _current(conn: sa.Connection, obs: Observation) -> bool:
        """Whether ``obs`` still speaks for its alert: its rule (or SLO objective) still exists as
        measured, and the alerts of (rule, model) have not changed since it was measured (another
        monitor moved them, or a rule deleted closed them). On PostgreSQL the rule's row stays
        locked to the end of the transaction, so monitors apply one (rule, model) at a time."""
        pg = conn.dialect.name == "postgresql"
        if obs.source is not None:
            query = sa.select(_R.c.created_at).where(_R.c.name == obs.rule, _R.c.model == obs.model)
            created = conn.execute(query.with_for_update() if pg else query).scalar()
            if created is None or created != obs.source.created_at:
                return False  # deleted (or deleted and added again) since it was measured
        elif obs.rule in SLO_RULES:
            query = sa.select(_S.c.availability, _S.c.latency_ms, _S.c.latency_share)
            row = conn.execute(
                (query.with_for_update() if pg else query).where(_S.c.model == obs.model)
            ).first()
            objective = obs.rule.split(":")[1]
            if row is None or (
                row.availability is None
                if objective == "availability"
                else row.latency_ms is None or row.latency_share is None
            ):
                return False  # the SLO, or this objective of it, is gone
        return obs.seen is None or _seen(conn, obs.model, [obs.rule])[obs.rule] == obs.seen

    def _apply(self, store: Store, obs: Observation, now: int, silenced: bool) -> Transition | None:
        key = f"{obs.rule}/{obs.model}"
        subject = f"alert/{obs.model}/{obs.rule}"
        try:
            with store.write() as conn:
                if not self._current(conn, obs):
                    return None
                query = sa.select(_A).where(_A.c.open_key == key)
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()
                row = conn.execute(query).first()
                if row is None:
                    return self._open(conn, obs, now, silenced, key, subject) if obs.active else None
                if obs.active:
                    return self._still(conn, row, obs, now, silenced, subject)
                return self._clear(conn, row, obs, now, silenced, subject)
        except (_Lost, sa.exc.IntegrityError):
            return None  # another monitor got there first; it notifies

    def _open(
        self, conn: sa.Connection, obs: Observation, now: int, silenced: bool, key: str, subject: str
    ) -> Transition:
        state = FIRING if obs.for_ms <= 0 else PENDING
        tell = state == FIRING and not silenced
        alert_id = new_id()
        conn.execute(
            _A.insert().values(
                id=alert_id,
                rule=obs.rule,
                model=obs.model,
                severity=obs.severity,
                state=state,
                value=obs.value,
                summary=obs.summary,
                open_key=key,
                revision=1,
                started_at=now,
                fired_at=now if state == FIRING else None,
                updated_at=now,
                notified=FIRING if tell else None,
                notified_at=now if tell else None,
            )
        )
        self._audit(conn, f"alert.{state}", subject, alert_id, None, obs, silenced)
        return Transition(
            alert_id,
            obs.rule,
            obs.model,
            None,
            state,
            obs.value,
            obs.summary,
            FIRING if tell else None,
            tell,
            now,
        )

    def _still(
        self, conn: sa.Connection, row: Any, obs: Observation, now: int, silenced: bool, subject: str
    ) -> Transition | None:
        values: dict[str, Any] = {"value": obs.value, "summary": obs.summary}
        unchanged = (row.value, row.summary) == (obs.value, obs.summary)
        if row.state == PENDING:
            if now - row.started_at < obs.for_ms:
                if not unchanged:
                    self._update(conn, row, now, values)
                return None
            tell = not silenced
            values.update(state=FIRING, fired_at=now)
            if tell:
                values.update(notified=FIRING, notified_at=now)
            self._update(conn, row, now, values)
            self._audit(conn, "alert.firing", subject, row.id, PENDING, obs, silenced)
            return Transition(
                row.id,
                obs.rule,
                obs.model,
                PENDING,
                FIRING,
                obs.value,
                obs.summary,
                FIRING if tell else None,
                tell,
                now,
            )
        # Firing, and still: tell whoever has not been told (a silence ended), or remind.
        notify = None
        if not silenced and row.notified != FIRING:
            notify = FIRING
        elif (
            not silenced
            and row.acked_at is None
            and self.repeat_ms is not None
            and now - (row.notified_at or row.fired_at or now) >= self.repeat_ms
        ):
            notify = "reminder"
        if notify is None:
            if not unchanged:
                self._update(conn, row, now, values)
            return None
        values.update(notified=FIRING, notified_at=now)
        self._update(conn, row, now, values)
        return Transition(
            row.id,
            obs.rule,
            obs.model,
            FIRING,
            FIRING,
            obs.value,
            obs.summary,
            notify,
            notify == FIRING,
            row.fired_at,
        )

    def _clear(
        self, conn: sa.Connection, row: Any, obs: Observation, now: int, silenced: bool, subject: str
    ) -> Transition:
        if row.state == PENDING:
            if (
                conn.execute(_A.delete().where(_A.c.id == row.id, _A.c.revision == row.revision)).rowcount
                != 1
            ):
                raise _Lost
            self._audit(conn, "alert.cleared", subject, row.id, PENDING, obs, silenced)
            return _moved(row.id, obs, PENDING, None, since=now)
        tell = row.notified == FIRING and not silenced
        values: dict[str, Any] = {
            "state": RESOLVED,
            "open_key": None,
            "resolved_at": now,
            "value": obs.value,
            "summary": obs.summary,
        }
        if tell:
            values.update(notified=RESOLVED, notified_at=now)
        self._update(conn, row, now, values)
        self._audit(conn, "alert.resolved", subject, row.id, FIRING, obs, silenced)
        return Transition(
            row.id,
            obs.rule,
            obs.model,
            FIRING,
            RESOLVED,
            obs.value,
            obs.summary,
            RESOLVED if tell else None,
            since=now,
        )

    @staticmethod
    def _update(conn: sa.Connection, row: Any, now: int, values: dict[str, Any]) -> None:
        changed = conn.execute(
            _A.update()
            .where(_A.c.id == row.id, _A.c.revision == row.revision)
            .values(**values, updated_at=now, revision=row.revision + 1)
        ).rowcount
        if changed != 1:
            raise _Lost

    def _audit(
        self,
        conn: sa.Connection,
        action: str,
        subject: str,
        alert_id: str,
        before: str | None,
        obs: Observation,
        silenced: bool,
    ) -> None:
        payload = {"alert": alert_id, "from": before, "value": obs.value, "summary": obs.summary}
        if silenced:
            payload["silenced"] = True
        audit.append(conn, action, subject, payload, actor=self.name)

    # -- telling and acting, in the background --------------------------------------------------

    def _deliver(self, store: Store, t: Transition, obs: Observation) -> None:
        if t.notify is not None:
            payload = notification(t, obs)
            for url in obs.webhooks:
                post_json(url, payload, attempts=self.webhook_attempts, backoff=self.webhook_backoff)
        if t.act and obs.actions and obs.source is not None:
            future = self._pool.submit(self._act, store, t, obs.source)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)

    def _act(self, store: Store, t: Transition, rule: Rule) -> None:
        alert = _alerts.get_alert(t.alert, store=store)
        for name in rule.actions:
            fn = _alerts.ACTIONS.get(name)
            ok, message = False, f"no action named {name!r} is registered in this process"
            if fn is not None:
                try:
                    with acting_as(Actor(name=self.name, role="contributor", kind="service")):
                        result = fn(alert, rule)
                    ok, message = True, str(result) if result is not None else "done"
                except ShipwayError as exc:
                    message = exc.message
                except Exception as exc:  # a hook's bug: recorded, never fatal to the monitor
                    log.exception("alert action %s failed", name)
                    message = f"{type(exc).__name__}: {exc}"
            try:
                with store.write() as conn:
                    audit.append(
                        conn,
                        "alert.action",
                        f"alert/{t.model}/{t.rule}",
                        {"alert": t.alert, "action": name, "ok": ok, "message": message},
                        actor=self.name,
                    )
            except ShipwayError:
                log.exception("could not record the outcome of alert action %s", name)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait for actions in flight; False if some were still running."""
        _, pending = concurrent.futures.wait(list(self._pending), timeout=timeout)
        return not pending

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> Monitor:
        """Evaluate every ``interval`` seconds in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="shipway-monitor", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.evaluate_once()
            except Exception:  # the store is unreachable, say: log, and try again next interval
                log.exception("alert evaluation failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and wait for actions in flight."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self.drain(timeout)


def notification(t: Transition, obs: Observation) -> dict[str, Any]:
    """The webhook body: Slack's ``text``, and the alert's fields for anything else."""
    word = {FIRING: "FIRING", RESOLVED: "RESOLVED", "reminder": "STILL FIRING"}[t.notify or FIRING]
    return {
        "text": f"[{word}] {t.model} · {t.rule} ({obs.severity}): {t.summary}",
        "status": t.notify,
        "state": t.after,
        "alert": t.alert,
        "rule": t.rule,
        "model": t.model,
        "severity": obs.severity,
        "metric": obs.metric,
        "value": t.value,
        "threshold": obs.threshold,
        "summary": t.summary,
        "since": iso(t.since),
    }
