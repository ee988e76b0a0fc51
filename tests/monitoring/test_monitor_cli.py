"""`shipway monitor drift / quality / arms`, run as a real subprocess on a real prediction log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shipway.monitoring import record_feedback


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_monitor_drift_prints_the_table_writes_the_report_and_json(
    customers, churn, serve, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    ids = served.predict(customers(1_500, 41, shift=0.6))
    served.flush()
    record_feedback("churn", [{"request_id": ids[0], "row": r, "label": 0} for r in range(100)])

    out = sh("monitor", "drift", "churn@prod", "--window", "1h", "--report", str(tmp_path / "drift.html"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if "feature" in line and "method" in line)
    assert [w for w in header.replace("┃", " ").split()] == [
        "feature",
        "method",
        "statistic",
        "threshold",
        "drifted",
    ]
    charges = next(line for line in lines if line.strip("│ ").startswith("charges"))
    assert "yes" in charges and "ks" in charges
    tenure = next(line for line in lines if line.strip("│ ").startswith("tenure"))
    assert tenure.rstrip(" │").endswith("no")
    assert "training dataset 'churn-train' version 1" in out.stdout
    page = (tmp_path / "drift.html").read_text()
    assert "Live quality" in page and "charges" in page  # the labels that arrived are in the report

    data = json.loads(sh("monitor", "drift", "churn@prod", "--json").stdout)
    assert data["drifted_columns"] == ["charges"] and data["rows"]["current"] == 1_500


def test_monitor_quality_and_arms(customers, churn, serve) -> None:  # type: ignore[no-untyped-def]
    served = serve(("churn", "models:/churn@prod"))
    ids = served.predict(customers(200, 42))
    served.flush()
    record_feedback("churn", [{"request_id": ids[0], "row": r, "label": r % 2} for r in range(100)])
    out = sh("monitor", "quality", "churn@prod", "--window", "7d", "--timeline")
    assert out.returncode == 0, out.stderr
    assert "100 of 200 predictions labelled" in out.stdout
    for word in ("accuracy", "f1", "window", "stable", "time"):
        assert word in out.stdout
    data = json.loads(sh("monitor", "quality", "churn@prod", "--json").stdout)
    assert data["labelled"] == 100 and data["task"] == "classification"

    arms = sh("monitor", "arms", "churn")
    assert arms.returncode == 3 and "No candidate predictions" in arms.stderr


def test_monitor_errors_are_one_line_with_an_exit_code(churn) -> None:  # type: ignore[no-untyped-def]
    empty = sh("monitor", "drift", "churn@prod", "--window", "15m")
    assert empty.returncode == 3
    assert "No predictions of 'churn' (version 1)" in empty.stderr and "Traceback" not in empty.stderr
    unknown = sh("monitor", "drift", "nope@prod")
    assert unknown.returncode == 3 and "No model named 'nope'" in unknown.stderr
    alias = sh("monitor", "quality", "churn@staging")
    assert alias.returncode == 3 and "has no alias 'staging'" in alias.stderr
    window = sh("monitor", "drift", "churn@prod", "--window", "1y")
    assert window.returncode == 2 and "15m, 1h, 24h or 7d" in window.stderr
