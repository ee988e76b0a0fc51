"""`shipway slo`, `shipway alerts` and `shipway monitor export-rules`, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from sklearn.dummy import DummyClassifier

import shipway
from shipway.store import get_store


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_slos_and_alerts_from_the_command_line() -> None:
    # The embedded store only: the commands are a thin shell over functions tested on both stores.
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="churn", store=get_store())
    out = sh("slo", "set", "churn", "--availability", "99.9", "--latency-p95-ms", "50")
    assert out.returncode == 0, out.stderr
    assert "99.9% of requests without a server error and 95% of requests within 64 ms" in out.stdout
    assert "50 ms is not a bound of the latency histogram" in out.stderr and "uses 64 ms" in out.stderr
    show = sh("slo", "show", "churn")
    assert (
        "budget left" in show.stdout and "no data" in show.stdout and "SLO for churn in prod" in show.stdout
    )

    added = sh("alerts", "add", "churn", "--metric", "requests", "--below", "10", "--window", "10m")
    assert "Rule churn-requests-below-10: alert when churn's requests below 10 over 10m." in added.stdout
    rules = sh("alerts", "rules").stdout
    assert (
        "churn-requests-below-10" in rules
        and "slo:availability:page" in rules
        and "slo:latency:ticket" in rules
    )

    evaluated = sh("alerts", "evaluate")
    assert "churn churn-requests-below-10: inactive -> firing" in evaluated.stdout, evaluated.stderr
    (alert,) = json.loads(sh("alerts", "list", "--json").stdout)
    assert alert["state"] == "firing" and alert["value"] == 0.0
    acked = sh("alerts", "ack", alert["id"][:8])
    assert acked.returncode == 0 and "Acknowledged" in acked.stdout
    assert sh("alerts", "silence", "churn", "--for", "2h").returncode == 0
    listing = sh("alerts", "list").stdout
    assert "firing" in listing and "acked by" in listing and "silenced" in listing
    assert "Silenced: churn (all rules) until" in listing

    exported = sh("monitor", "export-rules")
    document = yaml.safe_load(exported.stdout)
    assert [g["name"] for g in document["groups"]] == ["shipway-slo-churn", "shipway-alerts"]

    assert sh("alerts", "delete", "churn-requests-below-10").returncode == 0
    assert json.loads(sh("alerts", "list", "--json").stdout)[0]["state"] == "resolved"
    staging = sh("slo", "set", "churn", "--availability", "99", "--env", "staging", "--json")
    assert json.loads(staging.stdout)["environment"] == "staging", staging.stderr
    assert sh("slo", "delete", "churn").returncode == 0

    for args, code, message in (
        (
            ("alerts", "add", "churn", "--metric", "eror", "--above", "1"),
            2,
            "alert rules can watch: requests",
        ),
        (("alerts", "ack", "ffffffff"), 3, "No alert with id"),
        (("slo", "show", "churn"), 3, "shipway slo set churn"),
        (("slo", "set", "churn", "--availability", "0.999"), 2, "reads as a fraction"),
        (("slo", "set", "churn", "--availability", "99", "--env", "pr od"), 2, "Environment 'pr od'"),
        (("alerts", "silence", "fraud", "--for", "1h"), 3, "No model named 'fraud'"),
    ):
        failed = sh(*args)
        assert failed.returncode == code and message in failed.stderr, (args, failed.stderr)
        assert "Traceback" not in failed.stderr and failed.stderr.count("\n") <= 2
