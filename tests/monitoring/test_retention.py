"""Retention: old days of prediction logs and labels are deleted, whole, audited, and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from shipway.core.actor import Actor, acting_as
from shipway.core.errors import InvalidInput, PermissionDenied
from shipway.governance import audit
from shipway.monitoring import Monitor, prune_logs, record_feedback
from shipway.serving import read_predictions
from shipway.store import get_store


def _age(keys: list[str], days: int, model: str | None = None) -> list[str]:
    """Copy each real log file to the same place ``days`` earlier (and under ``model`` if given)."""
    backend = get_store().blobs.backend
    copies = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, key in enumerate(keys):
            kind, name, day, rest = key.split("/", 3)
            earlier = datetime.fromisoformat(day.removeprefix("date=")) - timedelta(days=days)
            copy = f"{kind}/{model or name}/date={earlier:%Y-%m-%d}/{rest}"
            backend.get(key, Path(tmp) / str(i))
            backend.put(copy, Path(tmp) / str(i))
            copies.append(copy)
    return copies


@pytest.fixture
def logged(customers, churn, serve) -> list[str]:  # type: ignore[no-untyped-def]
    """Today's prediction log and labels of churn; the same files 10 and 40 days older."""
    served = serve(("churn", "models:/churn@prod"))
    ids = served.predict(customers(300, 7))
    served.flush()
    record_feedback("churn", [{"request_id": i, "label": 1} for i in ids])
    backend = get_store().blobs.backend
    today = [*backend.list("predictions/churn/"), *backend.list("feedback/churn/")]
    assert len(today) >= 2
    return [*today, *_age(today, 10), *_age(today, 40)]


def _forty_days_ago() -> str:
    """The day of the fixture's oldest copies (from the files, so a run across midnight agrees)."""
    return min(k.split("/")[2].removeprefix("date=") for k in get_store().blobs.backend.list("predictions/"))


def test_days_older_than_the_retention_are_deleted_and_the_deletion_is_audited(logged: list[str]) -> None:
    backend = get_store().blobs.backend
    forty = _forty_days_ago()
    third = len(logged) // 3
    before = read_predictions("churn").num_rows

    dry = prune_logs("30d", dry_run=True)
    assert dry.dry_run and dry.total == third
    assert all(backend.exists(k) for k in logged), "a dry run deletes nothing"

    report = prune_logs("30d")
    assert report.to_dict() == {**dry.to_dict(), "dry_run": False}
    assert report.days == {"churn": [forty]}
    assert report.files == {"predictions": third - 1, "feedback": 1}
    kept = set(backend.list("predictions/")) | set(backend.list("feedback/"))
    assert kept == set(logged[: 2 * third])
    assert read_predictions("churn").num_rows == before * 2 // 3
    root = Path(backend.root)
    assert not list(root.glob(f"*/churn/date={forty}")), "emptied day folders go too"
    assert list(root.glob("predictions/churn/date=*/hour=*")), "the other days keep theirs"

    (entry,) = audit.entries(action="monitoring.pruned")
    assert entry.subject == "monitoring" and entry.payload["files"] == report.files
    assert entry.payload["older_than_ms"] == 30 * 86_400_000
    assert audit.verify().ok
    assert prune_logs("30d").total == 0 and len(audit.entries(action="monitoring.pruned")) == 1


def test_a_day_is_kept_while_any_of_it_is_within_the_retention(logged: list[str]) -> None:
    # 40 days old, kept for 40 days: the cutoff falls inside that day, so all of it stays.
    forty = _forty_days_ago()
    assert prune_logs("40d").total == 0
    assert prune_logs("39d").days == {"churn": [forty]}


def test_only_the_named_model_is_pruned(logged: list[str]) -> None:
    backend = get_store().blobs.backend
    other = _age([k for k in logged if k.startswith("predictions/")][:1], 100, model="fraud")
    report = prune_logs("30d", model="fraud")
    assert report.days == {"fraud": [other[0].split("/")[2][5:]]} and not backend.exists(other[0])
    assert all(backend.exists(k) for k in logged)
    (entry,) = audit.entries(action="monitoring.pruned")
    assert entry.subject == "model/fraud"


def test_bad_retentions_and_non_admins_are_refused(churn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="whole days"):
        prune_logs("12h")
    with pytest.raises(InvalidInput, match="not a duration"):
        prune_logs("a month")
    with pytest.raises(InvalidInput, match="over 36,500 days"):
        prune_logs("1000000d")  # not an overflow deep inside the date arithmetic
    for name in ("", "..", "a/../b/"):  # never a model name that would widen the listing to all models
        with pytest.raises(InvalidInput, match="model"):
            prune_logs("30d", model=name)
    with acting_as(Actor(name="dana", role="approver")), pytest.raises(PermissionDenied, match="needs admin"):
        prune_logs("30d")


def test_the_monitor_prunes_with_keep_logs(logged: list[str]) -> None:
    backend = get_store().blobs.backend
    Monitor(keep_logs_ms=30 * 86_400_000).evaluate_once()
    assert sum(1 for k in logged if backend.exists(k)) == len(logged) // 3 * 2
    (entry,) = audit.entries(action="monitoring.pruned")
    assert entry.actor == "shipway-monitor"


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_the_cli_lists_then_prunes(logged: list[str]) -> None:
    listed = sh("monitor", "prune", "--older-than", "30d", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("Would delete") and "churn: 1 day(s)" in listed.stdout
    done = sh("monitor", "prune", "--older-than", "5d", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["days"]["churn"]) == 2
    again = sh("monitor", "prune", "--older-than", "5d")
    assert again.returncode == 0 and again.stdout.startswith("Nothing to prune")
    bad = sh("monitor", "prune", "--older-than", "3h")
    assert bad.returncode != 0 and "whole days" in bad.stderr and "Traceback" not in bad.stderr


def test_up_refuses_a_retention_under_a_day(shipway_home: Path) -> None:
    out = sh("up", "--keep-logs", "3h")
    assert out.returncode != 0 and "whole days" in out.stderr and "Traceback" not in out.stderr
