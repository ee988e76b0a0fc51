"""How long prediction logs and labels are kept: whole days older than a cutoff are deleted.

Serving writes the prediction log under ``predictions/<model>/date=YYYY-MM-DD/…`` and feedback
under ``feedback/<model>/date=YYYY-MM-DD/…`` in the artifact store, and nothing else removes them:
without a retention they grow for as long as models are served. :func:`prune_logs` deletes the
days that ended before the cutoff (a day is kept while any of it is younger), for every model or
one, records what it removed in the audit log, and is what ``shipway monitor prune`` and
``shipway up --keep-logs`` run. Files outside a ``date=`` partition are never touched.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shipway.core.errors import InvalidInput
from shipway.core.names import check_name
from shipway.governance.identity import parse_duration_ms, require
from shipway.store import Store, audit, get_store

__all__ = ["PruneReport", "prune", "prune_logs", "retention_ms"]

KINDS = ("predictions", "feedback")  # each the first segment of its keys
MAX_RETENTION_DAYS = 36_500
_DAY = re.compile(r"^(predictions|feedback)/([^/]+)/date=(\d{4}-\d{2}-\d{2})/")


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune_logs` deleted (or, with ``dry_run``, would delete)."""

    cutoff: date  # days before this one were deleted
    dry_run: bool
    files: dict[str, int] = field(default_factory=dict)  # kind -> files
    days: dict[str, list[str]] = field(default_factory=dict)  # model -> the days removed

    @property
    def total(self) -> int:
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "files": dict(self.files),
            "days": {m: list(d) for m, d in self.days.items()},
        }


def retention_ms(older_than: str | timedelta) -> int:
    """A retention as milliseconds: ``30d``, ``2w``, ``720h`` or a timedelta, at least one day."""
    if isinstance(older_than, timedelta):
        ms = int(older_than.total_seconds() * 1000)
    else:
        ms = parse_duration_ms(older_than)
    if ms < 86_400_000:
        raise InvalidInput(
            f"Logs are kept by whole days; a retention of {older_than!r} is under one day. Use 1d or more."
        )
    if ms > MAX_RETENTION_DAYS * 86_400_000:
        raise InvalidInput(
            f"A retention of {older_than!r} is over {MAX_RETENTION_DAYS:,} days; to keep logs for ever, "
            "do not prune them."
        )
    return ms


def prune_logs(
    older_than: str | timedelta,
    *,
    model: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    store: Store | None = None,
) -> PruneReport:
    """Delete the prediction-log and feedback days of ``model`` (every model when None) that ended
    more than ``older_than`` ago; needs the admin role. With ``dry_run``, only report them."""
    actor = require("admin")
    keep = retention_ms(older_than)
    return prune(store or get_store(), keep, model=model, dry_run=dry_run, now=now, actor=actor.name)


def prune(
    store: Store,
    keep_ms: int,
    *,
    model: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    actor: str,
) -> PruneReport:
    """:func:`prune_logs` without its role check, for the monitor of ``shipway up --keep-logs``
    (whoever started the platform chose the retention)."""
    if model is not None:
        check_name(model, "model")
    now = now or datetime.now(UTC)
    cutoff = (now - timedelta(milliseconds=keep_ms)).date()  # the oldest day kept: the cutoff's
    backend = store.blobs.backend
    doomed: list[str] = []
    for kind in KINDS:
        base = f"{kind}/"
        if model is not None:  # the prediction log percent-encodes the name; feedback refuses "/"
            base += f"{_segment(model) if kind == 'predictions' else model}/"
        for key in backend.list(base):
            m = _DAY.match(key)
            if m is None or (model is not None and _unquote(m[2]) != model):
                continue
            try:
                day = date.fromisoformat(m[3])
            except ValueError:  # date=2026-02-31: not a partition serving wrote
                continue
            if day >= cutoff:
                continue
            doomed.append(key)
    if dry_run or not doomed:
        return _report(cutoff, dry_run, doomed)
    deleted: list[str] = []
    try:
        for key in doomed:
            backend.delete(key)
            deleted.append(key)
        tidy = getattr(backend, "remove_empty_dirs", None)  # a local folder keeps empty day folders
        if tidy is not None:
            for folder in sorted({key[: key.index("/", key.index("/date=") + 1) + 1] for key in doomed}):
                tidy(folder)  # a day nobody writes to any more
    finally:  # what was deleted is audited, also when the store failed partway
        report = _report(cutoff, dry_run, deleted)
        if deleted:
            with store.write() as conn:
                audit.append(
                    conn,
                    "monitoring.pruned",
                    f"model/{model}" if model is not None else "monitoring",
                    {"older_than_ms": keep_ms, **report.to_dict(), "complete": deleted == doomed},
                    actor=actor,
                )
    return report


def _report(cutoff: date, dry_run: bool, keys: list[str]) -> PruneReport:
    files: Counter[str] = Counter()
    days: dict[str, set[str]] = {}
    for key in keys:
        m = _DAY.match(key)
        assert m is not None
        files[m[1]] += 1
        days.setdefault(_unquote(m[2]), set()).add(m[3])
    return PruneReport(cutoff, dry_run, dict(files), {k: sorted(v) for k, v in sorted(days.items())})


def _segment(model: str) -> str:
    from shipway.serving.predlog import segment

    return segment(model)


def _unquote(segment: str) -> str:
    from urllib.parse import unquote

    return unquote(segment)
