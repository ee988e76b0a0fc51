"""Promotion gates: each a small class that measures one thing and says pass, fail or insufficient evidence.

Metrics are computed here, from the registered model and a logged dataset version scored against
its target column, never taken from what a run claims. Missing evidence (no such dataset, no
target column, too few rows in a group) fails the gate; it never passes it.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any

from shipway.core.errors import ShipwayError
from shipway.governance import metrics
from shipway.governance.policy import GateSpec
from shipway.registry import ModelVersion, get_version
from shipway.store import Store

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient_evidence"
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


@dataclass(frozen=True)
class GateResult:
    """One line of a gate report."""

    gate: str
    status: str  # pass | fail | insufficient_evidence
    summary: str  # what was measured, on what, against what
    measured: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evidence:
    """What gates look at, loaded once per evaluation: models, datasets, predictions."""

    def __init__(self, store: Store, version: ModelVersion) -> None:
        self.store = store
        self.version = version
        self._models: dict[str, Any] = {}
        self._datasets: dict[tuple[str, int | None], Any] = {}
        self._predictions: dict[tuple[str, str, int], Any] = {}

    def holder(self, alias: str) -> ModelVersion | None:
        from shipway.core.errors import NotFound

        try:
            return get_version(self.version.name, alias=alias, store=self.store)
        except NotFound:
            return None

    def model(self, version: ModelVersion) -> Any:
        from shipway.registry import load_model

        if version.id not in self._models:
            self._models[version.id] = load_model(version.uri, store=self.store)
        return self._models[version.id]

    def dataset(self, name: str, number: int | None) -> tuple[Any, Any]:
        from shipway.data import get_dataset

        key = (name, number)
        if key not in self._datasets:
            found = get_dataset(name, number, store=self.store)
            self._datasets[key] = (found, found.load(self.store))
        return self._datasets[key]

    def predictions(self, version: ModelVersion, name: str, number: int | None, need_scores: bool) -> Any:
        """(dataset version, frame, y_true, y_pred, y_score or None) for ``version`` on a dataset."""
        import numpy as np

        dsv, frame = self.dataset(name, number)
        target = dsv.schema.get("target")
        if not target or target not in frame.columns:
            raise _Insufficient(
                f"dataset {name} v{dsv.version} has no target column; log it with target=<column>"
            )
        key = (version.id, dsv.id, int(need_scores))
        if key not in self._predictions:
            loaded = self.model(version)
            signature = version.model_signature
            features = frame.drop(columns=[target])
            if signature is not None and signature.input_kind != "ndarray":
                missing = [c.name for c in signature.inputs if c.name not in features.columns]
                if missing:
                    raise _Insufficient(f"dataset {name} v{dsv.version} lacks model inputs {missing}")
                features = features[[c.name for c in signature.inputs]]
            y_pred = np.asarray(loaded.predict(features)).ravel()
            y_score = None
            if need_scores:
                try:
                    y_score = np.asarray(loaded.predict_proba(features))
                except ShipwayError as exc:
                    raise _Insufficient(f"{version.uri} gives no probabilities: {exc}") from None
            self._predictions[key] = (dsv, frame, frame[target].to_numpy(), y_pred, y_score)
        return self._predictions[key]

    def score(self, version: ModelVersion, metric: str, name: str, number: int | None) -> tuple[float, Any]:
        need = metrics.needs_scores(metric)
        dsv, _frame, y_true, y_pred, y_score = self.predictions(version, name, number, need)
        return metrics.compute(metric, y_true, y_pred=y_pred, y_score=y_score), dsv


class _Insufficient(Exception):
    """Raised inside a gate when the evidence it needs is missing."""


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def metric_threshold(ev: Evidence, c: Any) -> GateResult:
    value, dsv = ev.score(ev.version, c.metric, c.dataset, c.dataset_version)
    ok = _OPS[c.op](value, c.value)
    return GateResult(
        "metric_threshold",
        PASS if ok else FAIL,
        f"{c.metric} = {_fmt(value)} on {dsv.name} v{dsv.version} ({dsv.num_rows} rows); "
        f"needs {c.op} {c.value}",
        {"metric": c.metric, "value": value, "dataset": dsv.name, "dataset_version": dsv.version},
    )


def no_regression(ev: Evidence, c: Any) -> GateResult:
    champion = ev.holder(c.against)
    if champion is None:
        return GateResult(
            "no_regression",
            PASS,
            f"no version holds {c.against}, so there is nothing to regress against",
            {"against": c.against, "champion": None},
        )
    if champion.id == ev.version.id:
        return GateResult(
            "no_regression", PASS, f"this version already holds {c.against}", {"champion": champion.version}
        )
    mine, dsv = ev.score(ev.version, c.metric, c.dataset, c.dataset_version)
    theirs, _ = ev.score(champion, c.metric, c.dataset, c.dataset_version)
    higher = metrics.HIGHER_IS_BETTER[c.metric]
    worse_by = (theirs - mine) if higher else (mine - theirs)
    ok = worse_by <= c.tolerance
    return GateResult(
        "no_regression",
        PASS if ok else FAIL,
        f"{c.metric} = {_fmt(mine)} vs {_fmt(theirs)} for v{champion.version} ({c.against}) on "
        f"{dsv.name} v{dsv.version}; may be worse by at most {c.tolerance}",
        {
            "metric": c.metric,
            "value": mine,
            "champion": champion.version,
            "champion_value": theirs,
            "dataset": dsv.name,
            "dataset_version": dsv.version,
        },
    )


def lineage_required(ev: Evidence, items: list[str]) -> GateResult:
    lin = ev.version.lineage
    git = lin.get("git") or {}
    have = {
        "run": bool(lin.get("run_id")),
        "git_commit": bool(git.get("commit")),
        "clean_worktree": bool(git.get("commit")) and git.get("dirty") is False,
        "training_dataset": any(d.get("role") == "train" for d in lin.get("datasets", [])),
        "environment": bool((lin.get("environment") or {}).get("hash")),
        "metrics": bool(lin.get("metrics")),
    }
    missing = [i for i in items if not have[i]]
    return GateResult(
        "lineage_required",
        FAIL if missing else PASS,
        f"missing: {', '.join(missing)}" if missing else f"recorded: {', '.join(items)}",
        {"required": items, "missing": missing, "git_commit": git.get("commit")},
    )


def artifact_format(ev: Evidence, c: Any) -> GateResult:
    fmt = ev.version.format
    ok = fmt in c.allow
    return GateResult(
        "artifact_format",
        PASS if ok else FAIL,
        f"format {fmt} ({ev.version.flavor}); allowed: {', '.join(c.allow)}",
        {"format": fmt, "allow": c.allow},
    )


def signature_required(ev: Evidence, c: Any) -> GateResult:
    import tempfile
    from pathlib import Path

    from shipway.registry import integrity

    v = ev.version
    if not v.signed:
        return GateResult(
            "signature_required", FAIL, f"{v.uri} is not signed (shipway models sign)", {"signed": False}
        )
    payload = v.payload()
    if integrity.manifest_digest(payload) != v.manifest_digest:
        return GateResult(
            "signature_required", FAIL, "the manifest no longer matches its digest", {"signed": True}
        )
    if c.public_key is None:
        return GateResult(
            "signature_required",
            PASS,
            f"signed by key {v.signing_key}; manifest intact",
            {"signed": True, "key": v.signing_key},
        )
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "policy.pub"
        key.write_text(c.public_key)
        ok = integrity.verify_signature(payload, v.signature or "", key)
        key_id = integrity.key_id(c.public_key.encode())
    return GateResult(
        "signature_required",
        PASS if ok else FAIL,
        f"signature {'verifies' if ok else 'does NOT verify'} with the policy's key {key_id}",
        {"signed": True, "key": v.signing_key, "trusted_key": key_id, "verified": ok},
    )


def fairness(ev: Evidence, c: Any) -> GateResult:
    dsv, frame, y_true, y_pred, _ = ev.predictions(ev.version, c.dataset, c.dataset_version, False)
    if c.sensitive not in frame.columns:
        raise _Insufficient(f"dataset {dsv.name} v{dsv.version} has no column {c.sensitive!r}")
    result = metrics.fairness(
        c.metric,
        y_true,
        y_pred,
        frame[c.sensitive].to_numpy(),
        min_group_size=c.min_group_size,
        positive=c.positive,
    )
    measured = {
        "metric": c.metric,
        "value": result.value,
        "dataset": dsv.name,
        "dataset_version": dsv.version,
        "groups": [asdict(g) for g in result.groups],
        "excluded": [list(e) for e in result.excluded],
    }
    excluded = (
        f"; excluded (< {c.min_group_size} rows): " + ", ".join(f"{g} ({n})" for g, n in result.excluded)
        if result.excluded
        else ""
    )
    if result.insufficient():
        return GateResult(
            "fairness",
            INSUFFICIENT,
            f"{c.metric} on {c.sensitive}: fewer than two groups large enough to judge{excluded}",
            measured,
        )
    ok = _OPS[c.op](result.value, c.value)
    return GateResult(
        "fairness",
        PASS if ok else FAIL,
        f"{c.metric} on {c.sensitive} = {_fmt(result.value)} over {len(result.groups)} groups of "
        f"{dsv.name} v{dsv.version}; needs {c.op} {c.value}{excluded}",
        measured,
    )


def model_card_complete(ev: Evidence, fields: list[str]) -> GateResult:
    missing = [f for f in fields if not str(ev.version.card.get(f, "")).strip()]
    return GateResult(
        "model_card_complete",
        FAIL if missing else PASS,
        f"empty: {', '.join(missing)} (shipway models edit)" if missing else f"written: {', '.join(fields)}",
        {"required": fields, "missing": missing},
    )


GATES = {
    "metric_threshold": metric_threshold,
    "no_regression": no_regression,
    "lineage_required": lineage_required,
    "artifact_format": artifact_format,
    "signature_required": signature_required,
    "fairness": fairness,
    "model_card_complete": model_card_complete,
}


def evaluate(specs: list[GateSpec], version: ModelVersion, store: Store) -> list[GateResult]:
    """Run every gate (all of them, even after a failure, so the report is complete)."""
    evidence = Evidence(store, version)
    results = []
    for spec in specs:
        try:
            results.append(GATES[spec.kind](evidence, spec.config))
        except _Insufficient as exc:
            results.append(GateResult(spec.kind, INSUFFICIENT, str(exc), {}))
        except ShipwayError as exc:  # no such dataset, a model that cannot load, bad labels …
            results.append(GateResult(spec.kind, INSUFFICIENT, exc.message, {"error": exc.code}))
    return results
