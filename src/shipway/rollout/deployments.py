"""Deployments and rollouts: which version an environment serves, and moving it to a new one.

A deployment is a model in an environment (``churn`` in ``prod``). Its *stable* version answers
requests. ``deploy`` starts a rollout to the version that holds the environment's alias, which
only governance moves (``shipway promote``); the rollout moves traffic and never the governance
record. Strategies:

- ``canary``: the candidate gets ``steps`` percent of traffic in turn (5, 25, 50, 100 by
  default); each step lasts at least ``step_duration`` and needs ``min_requests`` per arm before
  the analysis may advance it.
- ``ab``: a fixed ``split`` with sticky assignment by ``sticky_key`` (a request field or header);
  the analysis reports and rolls back a failing arm, but only a person ends the test
  (``rollout promote`` or ``abort``).
- ``shadow``: the candidate sees a copy of ``mirror`` percent of requests and its answers are
  compared, never returned; once the analysis passes it waits for ``rollout promote``.
- ``blue-green``: first the candidate sees a copy of every request for ``step_duration`` (as
  in shadow); if that analysis passes, all traffic moves to it at once while the stable version
  stays loaded for another ``step_duration``, so a failing analysis (or ``abort``) moves it all
  back at once.

Aborting or failing returns all traffic to the stable version. Every change bumps the
deployment's ``generation`` (serving workers re-read the routing when it changes) and appends an
audit entry, in the same transaction; rollback reasons go to the audit log and to webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.errors import Conflict, InvalidInput, NotFound
from shipway.core.ids import new_id
from shipway.governance.identity import require
from shipway.rollout.analysis import PROMOTE, ROLLBACK, ArmWindow, Thresholds, analyse, judge
from shipway.store import Store, audit, get_store, schema

STRATEGIES = ("canary", "ab", "shadow", "blue-green")
IDLE, PROGRESSING, PAUSED = "idle", "progressing", "paused"
SUCCEEDED, ROLLED_BACK, ABORTED = "succeeded", "rolled_back", "aborted"
STABLE, CANDIDATE = "stable", "candidate"
# rollout_windows rows under this arm name hold a shadow's agreement with the answers returned.
AGREEMENT = "agreement"

log = logging.getLogger("shipway.rollout")

_D, _R, _W, _M = schema.deployments, schema.rollouts, schema.rollout_windows, schema.models


@dataclass(frozen=True)
class RolloutConfig:
    """How a rollout proceeds (stored with it, so a restarted controller carries on the same way)."""

    strategy: str = "canary"
    steps: tuple[int, ...] = (5, 25, 50, 100)
    step_duration_ms: int = 600_000
    min_requests: int = 500
    split: int = 50
    sticky_key: str | None = None
    mirror: int = 100
    failure_limit: int = 0
    webhooks: tuple[str, ...] = ()
    thresholds: dict[str, Any] = field(default_factory=dict)

    def check(self) -> RolloutConfig:
        if self.strategy not in STRATEGIES:
            raise InvalidInput(f"Strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}.")
        steps = tuple(int(s) for s in self.steps)
        if self.strategy == "canary" and (
            not steps
            or any(not 0 < s <= 100 for s in steps)
            or list(steps) != sorted(set(steps))
            or steps[-1] != 100
        ):
            raise InvalidInput(
                "Canary steps must rise strictly from above 0 to 100 percent, like 5,25,50,100; "
                f"got {list(steps)}."
            )
        if not 0 < self.split < 100:
            raise InvalidInput(f"An A/B split gives the candidate 1-99 percent, not {self.split}.")
        if not 0 < self.mirror <= 100:
            raise InvalidInput(f"Shadow mirroring copies 1-100 percent of requests, not {self.mirror}.")
        if self.step_duration_ms < 0 or self.min_requests < 1 or self.failure_limit < 0:
            raise InvalidInput("step_duration, min_requests and failure_limit must be positive.")
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise InvalidInput(f"Webhook {url!r} is not an http(s) URL.")
        unknown = set(self.thresholds) - set(Thresholds.__dataclass_fields__)
        if unknown:
            raise InvalidInput(
                f"Unknown threshold(s) {sorted(unknown)}; known: {sorted(Thresholds.__dataclass_fields__)}."
            )
        return RolloutConfig(**{**asdict(self), "steps": steps, "webhooks": tuple(self.webhooks)})

    def analysis_thresholds(self) -> Thresholds:
        # Each step is judged on its own window with an always-valid test (so it may look at every
        # tick), and live quality over the whole rollout with another: alpha is split across those.
        windows = {"canary": len(self.steps), "blue-green": 2}.get(self.strategy, 1)
        looks = max(windows, 1) + 1
        return Thresholds(**{"looks": looks, "min_requests": self.min_requests, **self.thresholds})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutConfig:
        return cls(
            **{**data, "steps": tuple(data.get("steps", ())), "webhooks": tuple(data.get("webhooks", ()))}
        )


@dataclass(frozen=True)
class Arm:
    """One version in the routing of a deployment."""

    version: int
    weight: float  # percent of traffic answered by this version
    role: str  # stable | candidate
    shadow: float = 0.0  # percent of requests mirrored to it (its answers are not returned)


@dataclass(frozen=True)
class Deployment:
    """A model in an environment: what it serves now and the rollout in progress, if any."""

    id: str
    model: str
    environment: str
    stable_version: int | None
    candidate_version: int | None
    status: str
    step: int
    step_started_at: int | None
    failures: int
    verdict: dict[str, Any] | None
    generation: int
    updated_at: int
    updated_by: str
    rollout_id: str | None = None
    config: RolloutConfig | None = None

    @property
    def arms(self) -> list[Arm]:
        """The routing this state asks for."""
        return routing(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["arms"] = [asdict(a) for a in self.arms]
        return data


def routing(d: Deployment) -> list[Arm]:
    """Arms and weights for a deployment's state (the candidate stays loaded while it is paused)."""
    if d.stable_version is None:
        return []
    if d.candidate_version is None or d.config is None or d.status == IDLE:
        return [Arm(d.stable_version, 100.0, STABLE)]
    c, strategy = d.config, d.config.strategy
    if strategy == "canary":
        share = float(c.steps[min(d.step, len(c.steps) - 1)])
    elif strategy == "ab":
        share = float(c.split)
    elif strategy == "blue-green" and d.step >= 1:
        return [Arm(d.stable_version, 0.0, STABLE), Arm(d.candidate_version, 100.0, CANDIDATE)]
    else:  # shadow, and blue-green before its switch
        return [
            Arm(d.stable_version, 100.0, STABLE),
            Arm(d.candidate_version, 0.0, CANDIDATE, shadow=float(c.mirror)),
        ]
    return [Arm(d.stable_version, 100.0 - share, STABLE), Arm(d.candidate_version, share, CANDIDATE)]


# -- reading ------------------------------------------------------------------------------------


def _model_id(conn: sa.Connection, name: str) -> str:
    found = conn.execute(sa.select(_M.c.id).where(_M.c.name == name)).scalar()
    if found is None:
        raise NotFound(f"No model named {name!r}.")
    return found


def _deployment(conn: sa.Connection, row: Any, model: str) -> Deployment:
    config = None
    if row.rollout_id is not None:
        stored = conn.execute(sa.select(_R.c.config).where(_R.c.id == row.rollout_id)).scalar()
        config = RolloutConfig.from_dict(stored) if stored else None
    return Deployment(
        row.id,
        model,
        row.environment,
        row.stable_version,
        row.candidate_version,
        row.status,
        row.step,
        row.step_started_at,
        row.failures,
        row.verdict,
        row.generation,
        row.updated_at,
        row.updated_by,
        row.rollout_id,
        config,
    )


def get_deployment(name: str, environment: str = "prod", *, store: Store | None = None) -> Deployment:
    """The deployment of ``name`` in ``environment``."""
    store = store or get_store()
    with store.read() as conn:
        model_id = _model_id(conn, name)
        row = conn.execute(
            sa.select(_D).where(_D.c.model_id == model_id, _D.c.environment == environment)
        ).first()
        if row is None:
            raise NotFound(
                f"{name!r} is not deployed to {environment!r}; deploy it with "
                f"`shipway deploy {name} --env {environment}`."
            )
        return _deployment(conn, row, name)


def list_deployments(environment: str | None = None, *, store: Store | None = None) -> list[Deployment]:
    """Every deployment (in one environment when given), by model name."""
    store = store or get_store()
    query = (
        sa.select(_D, _M.c.name.label("model_name"))
        .join(_M, _M.c.id == _D.c.model_id)
        .order_by(_M.c.name, _D.c.environment)
    )
    if environment is not None:
        query = query.where(_D.c.environment == environment)
    with store.read() as conn:
        return [_deployment(conn, row, row.model_name) for row in conn.execute(query).all()]


def deployment_generations(environment: str, *, store: Store | None = None) -> dict[str, int]:
    """Each model deployed to ``environment`` and its generation: one cheap query to notice changes."""
    store = store or get_store()
    query = (
        sa.select(_M.c.name, _D.c.generation)
        .join(_M, _M.c.id == _D.c.model_id)
        .where(_D.c.environment == environment)
    )
    with store.read() as conn:
        return {name: generation for name, generation in conn.execute(query).all()}


def windows(store: Store, rollout_id: str, step: int) -> dict[str, ArmWindow]:
    """Each arm's traffic in one step of a rollout, summed over the workers that served it."""
    found = {STABLE: ArmWindow(), CANDIDATE: ArmWindow()}
    with store.read() as conn:
        rows = conn.execute(
            sa.select(_W.c.arm, _W.c.window)
            .where(_W.c.rollout_id == rollout_id, _W.c.step == step, _W.c.arm != AGREEMENT)
            .order_by(_W.c.worker)
        ).all()
    for arm, data in rows:
        found[arm] = found.get(arm, ArmWindow()).merge(ArmWindow.from_dict(data))
    return found


def read_window(store: Store, rollout_id: str, step: int, arm: str, worker: str) -> ArmWindow | None:
    """One worker's saved window of one arm for one step (a restarted worker carries on from it)."""
    with store.read() as conn:
        data = conn.execute(
            sa.select(_W.c.window).where(
                _W.c.rollout_id == rollout_id, _W.c.step == step, _W.c.arm == arm, _W.c.worker == worker
            )
        ).scalar()
    return ArmWindow.from_dict(data) if data is not None else None


def _upsert_window(
    store: Store, rollout_id: str, step: int, arm: str, worker: str, data: dict[str, Any]
) -> None:
    from shipway.store.db import insert_for

    stmt = insert_for(store.dialect)(_W).values(
        rollout_id=rollout_id, step=step, arm=arm, worker=worker, window=data, updated_at=now_ms()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[_W.c.rollout_id, _W.c.step, _W.c.arm, _W.c.worker],
        set_={"window": stmt.excluded.window, "updated_at": stmt.excluded.updated_at},
    )
    with store.write() as conn:
        conn.execute(stmt)


def record_window(store: Store, rollout_id: str, step: int, arm: str, worker: str, window: ArmWindow) -> None:
    """Save one worker's cumulative window of one arm for one step (serving workers call this)."""
    if arm == AGREEMENT:
        raise InvalidInput(f"{AGREEMENT!r} is not an arm; save a shadow's agreement with record_agreement.")
    _upsert_window(store, rollout_id, step, arm, worker, window.to_dict())


def record_agreement(
    store: Store, rollout_id: str, step: int, worker: str, agreed: int, compared: int
) -> None:
    """Save one worker's cumulative count of shadow rows that agreed with the answer returned."""
    _upsert_window(store, rollout_id, step, AGREEMENT, worker, {"agreed": agreed, "compared": compared})


def agreement(store: Store, rollout_id: str, step: int) -> tuple[int, int]:
    """(rows the shadow answered like the arm that answered, rows compared) in one step, all workers."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(_W.c.window).where(
                _W.c.rollout_id == rollout_id, _W.c.step == step, _W.c.arm == AGREEMENT
            )
        ).scalars()
        counts = [(int(r.get("agreed", 0)), int(r.get("compared", 0))) for r in rows]
    return sum(a for a, _ in counts), sum(c for _, c in counts)


def rollout_status(name: str, environment: str = "prod", *, store: Store | None = None) -> dict[str, Any]:
    """The deployment with live weights and, per arm, this step's traffic: requests, error rate,
    p50/p95/p99 latency; and the latest analysis (drift between the arms, verdict, reasons)."""
    store = store or get_store()
    d = get_deployment(name, environment, store=store)
    data = d.to_dict()
    active = bool(d.rollout_id) and d.status != IDLE
    arms = windows(store, d.rollout_id, d.step) if active else {}  # type: ignore[arg-type]
    for arm in data["arms"]:
        w = arms.get(arm["role"], ArmWindow())
        arm.update(
            requests=w.requests,
            errors=w.errors,
            error_rate=w.errors / w.requests if w.requests else None,
            p50_ms=w.p(0.5),
            p95_ms=w.p(0.95),
            p99_ms=w.p(0.99),
        )
        if arm["shadow"]:
            agreed, compared = agreement(store, d.rollout_id, d.step)  # type: ignore[arg-type]
            arm.update(agreed=agreed, compared=compared, agreement=agreed / compared if compared else None)
    return data


# -- changing -----------------------------------------------------------------------------------


def _subject(name: str, environment: str) -> str:
    return f"deployment/{name}/{environment}"


def deploy(
    name: str,
    environment: str = "prod",
    *,
    config: RolloutConfig | None = None,
    store: Store | None = None,
) -> Deployment:
    """Roll ``environment`` out to the version its alias names (the first deployment serves it at once)."""
    from shipway.registry import get_version

    store = store or get_store()
    config = (config or RolloutConfig()).check()
    actor = require("contributor", name)
    target = get_version(name, alias=environment, store=store)
    now = now_ms()
    with store.write() as conn:
        model_id = _model_id(conn, name)
        row = conn.execute(
            sa.select(_D).where(_D.c.model_id == model_id, _D.c.environment == environment)
        ).first()
        if row is not None and row.status != IDLE:
            raise Conflict(
                f"{name} in {environment} is already rolling out v{row.candidate_version} ({row.status}); "
                f"`shipway rollout promote {name}` or `shipway rollout abort {name}` first."
            )
        if row is not None and row.stable_version == target.version:
            raise Conflict(
                f"{name} in {environment} already serves v{target.version}, the version its alias names. "
                f"Promote another version first: shipway promote {name} <version> --to {environment}"
            )
        rollout_id = new_id()
        if row is None:
            deployment_id = new_id()
            conn.execute(
                _D.insert().values(
                    id=deployment_id,
                    model_id=model_id,
                    environment=environment,
                    stable_version=None,
                    candidate_version=None,
                    rollout_id=None,
                    status=IDLE,
                    step=0,
                    step_started_at=None,
                    failures=0,
                    verdict=None,
                    generation=0,
                    updated_at=now,
                    updated_by=actor.name,
                )
            )
            stable = None
        else:
            deployment_id, stable = row.id, row.stable_version
        conn.execute(
            _R.insert().values(
                id=rollout_id,
                deployment_id=deployment_id,
                from_version=stable,
                to_version=target.version,
                strategy=config.strategy if stable is not None else "initial",
                config=asdict(config),
                started_at=now,
                started_by=actor.name,
                ended_at=now if stable is None else None,
                outcome=SUCCEEDED if stable is None else None,
                reasons=["first deployment: nothing to compare with"] if stable is None else None,
            )
        )
        values: dict[str, Any] = {
            "rollout_id": rollout_id,
            "step": 0,
            "step_started_at": now,
            "failures": 0,
            "verdict": None,
            "generation": _D.c.generation + 1,
            "updated_at": now,
            "updated_by": actor.name,
        }
        if stable is None:
            values.update(stable_version=target.version, candidate_version=None, status=IDLE)
        else:
            values.update(candidate_version=target.version, status=PROGRESSING)
        conn.execute(_D.update().where(_D.c.id == deployment_id).values(**values))
        audit.append(
            conn,
            "rollout.started" if stable is not None else "deployment.created",
            _subject(name, environment),
            {
                "rollout": rollout_id,
                "from": stable,
                "to": target.version,
                "strategy": config.strategy,
                "config": {**asdict(config), "webhooks": len(config.webhooks)},  # URLs are secrets
            },
        )
    return get_deployment(name, environment, store=store)


def _finish(
    conn: sa.Connection,
    d: Deployment,
    outcome: str,
    reasons: list[str],
    actor: str,
    verdict: dict[str, Any] | None = None,
) -> None:
    now = now_ms()
    stable = d.candidate_version if outcome == SUCCEEDED else d.stable_version
    conn.execute(
        _D.update()
        .where(_D.c.id == d.id)
        .values(
            stable_version=stable,
            candidate_version=None,
            status=IDLE,
            verdict=verdict if verdict is not None else d.verdict,
            generation=_D.c.generation + 1,
            updated_at=now,
            updated_by=actor,
        )
    )
    conn.execute(
        _R.update().where(_R.c.id == d.rollout_id).values(ended_at=now, outcome=outcome, reasons=reasons)
    )
    action = {SUCCEEDED: "rollout.succeeded", ROLLED_BACK: "rollout.rolled_back", ABORTED: "rollout.aborted"}[
        outcome
    ]
    audit.append(
        conn,
        action,
        _subject(d.model, d.environment),
        {
            "rollout": d.rollout_id,
            "from": d.stable_version,
            "to": d.candidate_version,
            "serving": stable,
            "reasons": reasons,
        },
        actor=actor,
    )


def _active(store: Store, name: str, environment: str) -> Deployment:
    d = get_deployment(name, environment, store=store)
    if d.status == IDLE or d.candidate_version is None:
        raise Conflict(f"{name} in {environment} has no rollout in progress; it serves v{d.stable_version}.")
    return d


def _locked(conn: sa.Connection, d: Deployment) -> Any:
    # The row as it is now, locked (PostgreSQL) so a controller tick and a person cannot both act.
    query = sa.select(_D).where(_D.c.id == d.id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).one()


def promote_rollout(name: str, environment: str = "prod", *, store: Store | None = None) -> Deployment:
    """End the rollout now with the candidate serving all traffic (a person's decision)."""
    store = store or get_store()
    actor = require("contributor", name)
    d = _active(store, name, environment)
    with store.write() as conn:
        if _locked(conn, d).generation != d.generation:
            raise Conflict(
                f"The rollout of {name} changed meanwhile; look at `shipway rollout status {name}` and retry."
            )
        _finish(conn, d, SUCCEEDED, [f"promoted by {actor.name}"], actor.name)
    return get_deployment(name, environment, store=store)


def abort_rollout(
    name: str, environment: str = "prod", *, reason: str = "aborted by hand", store: Store | None = None
) -> Deployment:
    """End the rollout now and return all traffic to the stable version."""
    store = store or get_store()
    actor = require("contributor", name)
    d = _active(store, name, environment)
    with store.write() as conn:
        if _locked(conn, d).generation != d.generation:
            raise Conflict(
                f"The rollout of {name} changed meanwhile; look at `shipway rollout status {name}` and retry."
            )
        _finish(conn, d, ABORTED, [f"{reason} ({actor.name})"], actor.name)
    _notify(d, ABORTED, [reason])
    return get_deployment(name, environment, store=store)


def pause_rollout(
    name: str, environment: str = "prod", *, resume: bool = False, store: Store | None = None
) -> Deployment:
    """Hold the traffic split where it is (the analysis keeps reporting), or resume."""
    store = store or get_store()
    actor = require("contributor", name)
    d = _active(store, name, environment)
    target = PROGRESSING if resume else PAUSED
    if d.status == target:
        return d
    with store.write() as conn:
        values: dict[str, Any] = {
            "status": target,
            "generation": _D.c.generation + 1,
            "updated_at": now_ms(),
            "updated_by": actor.name,
        }
        if resume:
            values["step_started_at"] = now_ms()  # a resumed step lasts its full duration again
        conn.execute(_D.update().where(_D.c.id == d.id).values(**values))
        audit.append(
            conn,
            "rollout.resumed" if resume else "rollout.paused",
            _subject(name, environment),
            {"rollout": d.rollout_id, "step": d.step},
        )
    return get_deployment(name, environment, store=store)


# -- the controller -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """What one controller tick did to one deployment."""

    model: str
    environment: str
    action: str  # promote (next step), succeeded, hold, rollback
    reasons: list[str]


def tick(
    *, now: int | None = None, environment: str | None = None, store: Store | None = None
) -> list[Event]:
    """Analyse every rollout in progress (in ``environment`` when given) once and act on the
    verdicts (the controller's loop body).

    The state lives in the store, so a controller that restarts mid-rollout carries on from the
    step it was in; two controllers cannot both act on one rollout (the write is conditional on
    the generation they read).
    """
    store = store or get_store()
    now = now_ms() if now is None else now
    events = []
    for d in list_deployments(environment, store=store):
        if d.status != PROGRESSING or d.config is None or d.rollout_id is None:
            continue
        event = _step(store, d, now)
        if event is not None:
            events.append(event)
    return events


def _step(store: Store, d: Deployment, now: int) -> Event | None:
    c = d.config
    assert c is not None and d.rollout_id is not None
    arms = windows(store, d.rollout_id, d.step)
    stable, candidate = arms[STABLE], arms[CANDIDATE]
    thresholds = c.analysis_thresholds()
    stable_grows = not (stable.requests == 0 and d.step > 0)
    if not stable_grows:
        # The candidate answers everything now (canary at 100 %, blue-green after the switch):
        # compare it with what stable served in the step before.
        stable = windows(store, d.rollout_id, d.step - 1)[STABLE]
    stable, candidate = _with_labels(store, d, stable, candidate)
    checks = analyse(stable, candidate, thresholds, stable_grows=stable_grows)
    verdict = judge(checks, failures=d.failures, failure_limit=c.failure_limit)
    elapsed = now - (d.step_started_at or now)
    enough = candidate.requests >= c.min_requests
    record = {
        "at": now,
        "step": d.step,
        "action": verdict.action,
        "reasons": verdict.reasons,
        "checks": [asdict(ch) for ch in verdict.checks],
    }
    actor = "shipway-controller"
    with store.write() as conn:
        if _locked(conn, d).generation != d.generation:
            return None  # someone else acted since we read it
        subject = _subject(d.model, d.environment)
        if verdict.action == ROLLBACK:
            _finish(conn, d, ROLLED_BACK, verdict.reasons, actor, record)
            result = Event(d.model, d.environment, ROLLBACK, verdict.reasons)
        elif (
            verdict.action == PROMOTE
            and enough
            and elapsed >= c.step_duration_ms
            and c.strategy in ("canary", "blue-green")
        ):
            last = d.step + 1 >= (2 if c.strategy == "blue-green" else len(c.steps))
            if last:
                _finish(conn, d, SUCCEEDED, verdict.reasons, actor, record)
                result = Event(d.model, d.environment, SUCCEEDED, verdict.reasons)
            else:
                conn.execute(
                    _D.update()
                    .where(_D.c.id == d.id)
                    .values(
                        step=d.step + 1,
                        step_started_at=now,
                        verdict=record,
                        generation=_D.c.generation + 1,
                        updated_at=now,
                        updated_by=actor,
                    )
                )
                audit.append(
                    conn,
                    "rollout.step",
                    subject,
                    {
                        "rollout": d.rollout_id,
                        "step": d.step + 1,
                        "arms": [asdict(a) for a in routing(replace(d, step=d.step + 1))],
                        "reasons": verdict.reasons,
                    },
                    actor=actor,
                )
                result = Event(d.model, d.environment, PROMOTE, verdict.reasons)
        else:
            # Hold: record what the analysis saw (and a failure that did not yet exceed the limit).
            failures = verdict.failures
            if failures != d.failures:
                audit.append(
                    conn,
                    "rollout.check_failed",
                    subject,
                    {"rollout": d.rollout_id, "failures": failures, "reasons": verdict.reasons},
                    actor=actor,
                )
            conn.execute(
                _D.update().where(_D.c.id == d.id).values(verdict=record, failures=failures, updated_at=now)
            )
            return None
    if result.action in (ROLLBACK, SUCCEEDED):
        from shipway.rollout.labels import forget

        forget(d.rollout_id)
    if result.action == ROLLBACK:
        _notify(d, ROLLED_BACK, verdict.reasons)
    return result


def _with_labels(
    store: Store, d: Deployment, stable: ArmWindow, candidate: ArmWindow
) -> tuple[ArmWindow, ArmWindow]:
    """The arms' windows with the live quality the labels show so far (see rollout/labels.py)."""
    from shipway.rollout.labels import labelled_by_arm

    assert d.rollout_id is not None
    try:
        quality = labelled_by_arm(store, d.model, d.rollout_id)
    except Exception:  # reading logs or labels failed: judge on the rest, and say so in the log
        log.exception("could not read the labels of the rollout of %s; judging without them", d.model)
        return stable, candidate
    if not quality:
        return stable, candidate
    (s_n, s_wrong), (c_n, c_wrong) = quality["stable"], quality["candidate"]
    return replace(stable, labelled=s_n, wrong=s_wrong), replace(candidate, labelled=c_n, wrong=c_wrong)


def _notify(d: Deployment, outcome: str, reasons: Sequence[str]) -> None:
    """POST the outcome to the rollout's webhooks, in the background; a failed call never blocks."""
    if d.config is None or not d.config.webhooks:
        return
    from shipway.governance.webhooks import post_json

    payload = {
        "model": d.model,
        "environment": d.environment,
        "outcome": outcome,
        "from": d.stable_version,
        "to": d.candidate_version,
        "rollout": d.rollout_id,
        "reasons": list(reasons),
        "text": (
            f"Shipway: rollout of {d.model} v{d.candidate_version} in {d.environment} "
            f"{outcome.replace('_', ' ')}: " + "; ".join(reasons)
        ),
    }
    for url in d.config.webhooks:
        post_json(url, payload)  # retried with backoff in the background; the audit log has the outcome


def history(
    name: str, environment: str = "prod", *, limit: int = 20, store: Store | None = None
) -> list[dict[str, Any]]:
    """The latest rollouts of a deployment, newest first, with how each ended."""
    d = get_deployment(name, environment, store=store)
    store = store or get_store()
    with store.read() as conn:
        rows = conn.execute(
            sa.select(_R).where(_R.c.deployment_id == d.id).order_by(_R.c.started_at.desc()).limit(limit)
        ).all()
    return [dict(r._mapping) for r in rows]
