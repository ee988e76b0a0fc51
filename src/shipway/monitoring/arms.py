"""Drift between the arms of a rollout: the candidate's logged inputs and predictions against the
stable arm's over the same window, for the rollout controller and reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shipway.core.errors import InvalidInput, NotFound
from shipway.data.reference import Column
from shipway.monitoring.drift import drift
from shipway.monitoring.live import (
    LiveDriftReport,
    WindowProfile,
    _add_predictions,
    _count_statuses,
    _features,
    _kinds_match,
    _version_order,
    _versions_in,
)
from shipway.monitoring.sources import (
    Window,
    answered,
    input_columns,
    log_batches,
    newest_version,
    reference_of,
    resolve_target,
)

if TYPE_CHECKING:
    from shipway.store import Store

STABLE, CANDIDATE = "stable", "candidate"


def arm_drift(
    model: str,
    window: str | timedelta = "1h",
    *,
    until: datetime | str | None = None,
    store: Store | None = None,
) -> LiveDriftReport:
    """Drift of the candidate arm against the stable arm of ``model``'s deployment, per feature and
    prediction, over the ``window`` ending at ``until`` (default now).

    Stable is the rows answered by the ``stable`` arm; candidate is the ``candidate`` arm's, shadow
    copies included (a shadow sees the same inputs, so there only its predictions can differ). Both are
    profiled on the bins of the first version's reference profile when it has one, else on the bins
    of the first batch, so memory stays bounded. NotFound when either arm logged nothing.
    """
    from shipway.store import get_store

    store = store or get_store()
    if not isinstance(model, str) or any(ch in model for ch in "@/"):
        raise InvalidInput(
            f"arm_drift compares the arms of a model's deployment: name the model ('churn'), not a "
            f"version ({model!r})."
        )
    target = resolve_target(model, None, store)
    span = Window.ending(window, until)
    layout: dict[str, Column] = {}
    pred_layout: dict[str, Column] = {}
    arms = {
        STABLE: (WindowProfile(layout, grow=True), WindowProfile(pred_layout, grow=True)),
        CANDIDATE: (WindowProfile(layout, grow=True), WindowProfile(pred_layout, grow=True)),
    }
    versions: dict[str, dict[str, None]] = {STABLE: {}, CANDIDATE: {}}
    statuses: dict[str, int] = {}
    features: list[str] | None = None
    source = "bins of the first logged batch"
    import pyarrow.compute as pc

    for batch in log_batches(target.name, span, version=None, store=store, include_mirrored=True):
        _count_statuses(batch, statuses)
        ok = answered(batch)
        arm = ok.meta("arm")
        if not len(ok) or arm is None:
            continue
        if features is None:
            seen: dict[str, None] = {}
            _versions_in(ok, seen)
            first = newest_version(target.name, set(seen), store)
            try:
                ref = reference_of(first, store)
                layout.update(ref.profile.columns)
                source = f"bins of {ref.source}"
                features = _features(ref, first)
            except NotFound:
                inputs = input_columns(first)
                features = [f for f in ok.features if inputs is None or f in inputs]
        mirrored = ok.meta("mirrored")
        for label, profiles in arms.items():
            mask = pc.fill_null(pc.equal(arm, label), False)
            if label == STABLE and mirrored is not None:
                mask = pc.and_(mask, pc.invert(pc.fill_null(mirrored, False)))
            part = ok.filter(mask)
            if not len(part):
                continue
            _versions_in(part, versions[label])
            profiles[0].add(part.batch, features, len(part))
            _add_predictions(profiles[1], part)
    empty = [label for label, (p, _) in arms.items() if p.rows == 0]
    if empty:
        raise NotFound(
            f"No {' or '.join(empty)} predictions of {target.name!r} were logged from {span.describe()}: "
            "arm drift needs both arms (is a rollout running?). Widen the window or move --until."
        )
    (stable, stable_pred), (candidate, candidate_pred) = arms[STABLE], arms[CANDIDATE]
    assert features is not None
    names = [f for f in features if f in stable.columns and f in candidate.columns]
    report = drift(stable.profile(names), candidate.profile(names), columns=names) if names else None
    pred_names = [
        n
        for n in stable_pred.columns
        if n in candidate_pred.columns and _kinds_match(stable_pred.columns[n], candidate_pred.columns[n])
    ]
    prediction = (
        drift(stable_pred.profile(pred_names), candidate_pred.profile(pred_names), columns=pred_names)
        if pred_names
        else None
    )

    def described(label: str) -> str:
        found = sorted(versions[label], key=_version_order)
        return f"{label} arm (version {', '.join(found)})"

    return LiveDriftReport(
        report.columns if report is not None else [],
        report.reference if report is not None else stable.profile([]),
        report.current if report is not None else candidate.profile([]),
        model=target.name,
        versions=sorted({*versions[STABLE], *versions[CANDIDATE]}, key=_version_order),
        window=span,
        reference_source=described(STABLE),
        current_source=described(CANDIDATE),
        prediction=prediction,
        prediction_baseline=described(STABLE),
        data_quality=[],
        statuses=statuses,
        notes=[f"Both arms profiled on the {source}."],
    )
