"""Prometheus rules from SLOs and alert rules, checked and unit-tested by promtool itself.

promtool comes from Debian's ``prometheus`` package (scripts/test installs it). The unit test feeds
synthetic series named and labelled as the inference server's /metrics writes them, and asserts
that a fast burn pages, a slow one does not, and that shadow copies never count.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn.dummy import DummyClassifier

import shipway
from shipway.monitoring.alerts import add_rule
from shipway.monitoring.rules import ERRORS, LATENCY, REQUESTS, SERVER_ERROR_CODES, export_rules
from shipway.monitoring.slo import set_slo
from shipway.serving.metrics import ServingMetrics
from shipway.store import Store


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: run ./scripts/test, which installs Debian's prometheus package"
        )
    return found


@pytest.fixture
def rules_file(store: Store, tmp_path: Path) -> Path:
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for name in ("churn", "slow", "quiet"):
        shipway.register_model(model, name=name, store=store)
    set_slo("churn", availability=99.9, latency_ms=64, store=store)
    set_slo("slow", availability=99.9, store=store)
    add_rule("churn", "error_rate", above=0.01, window="5m", for_="2m", store=store)
    add_rule("churn", "latency_p99_ms", above=500, window="10m", severity="page", store=store)
    add_rule("quiet", "requests", below=10, window="10m", store=store)
    add_rule("churn", "drift_share", above=0.3, window="1h", store=store)
    path = tmp_path / "shipway-rules.yml"
    path.write_text(export_rules(store=store))
    return path


def test_exported_rules_pass_promtool_check(rules_file: Path) -> None:
    out = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = rules_file.read_text()
    assert "#   churn-drift_share-above-0.3: churn drift_share above 0.3 over 1h" in text, (
        "left out, and said so"
    )
    document = yaml.safe_load(text)
    names = [g["name"] for g in document["groups"]]
    assert names == ["shipway-slo-churn", "shipway-slo-slow", "shipway-alerts"]
    churn = {r.get("record") or r["alert"]: r for r in document["groups"][0]["rules"]}
    assert 'le="0.064"' in churn["shipway:slo_latency_bad:ratio_rate5m"]["expr"]
    page = churn["ShipwaySLOAvailabilityPage"]["expr"]
    assert "ratio_rate1h" in page and "ratio_rate5m" in page and "> 0.0144" in page and "> 0.006" in page
    assert "ratio_rate3d" in churn["ShipwaySLOAvailabilityTicket"]["expr"]


def _annotations(document: dict[str, Any], alert: str, model: str) -> dict[str, str]:
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert and rule["labels"]["model"] == model:
                return rule["annotations"]
    raise AssertionError(f"no {alert} for {model}")


def test_promtool_unit_test_fast_burn_pages_and_slow_burn_does_not(rules_file: Path, tmp_path: Path) -> None:
    document = yaml.safe_load(rules_file.read_text())
    requests, errors = "shipway_serving_requests_total", "shipway_serving_errors_total"
    bucket = "shipway_serving_request_duration_seconds_bucket"
    count = "shipway_serving_request_duration_seconds_count"

    def series(
        name: str, model: str, values: str, arm: str = "stable", version: str = "1", **labels: str
    ) -> dict[str, str]:
        extra = "".join(f',{k}="{v}"' for k, v in labels.items())
        return {
            "series": f'{name}{{model="{model}",version="{version}",arm="{arm}"{extra}}}',
            "values": values,
        }

    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # churn: 1,000 requests a minute, 2 % of them model errors: a burn rate of 20.
                    series(requests, "churn", "0+1000x120"),
                    series(errors, "churn", "0+20x120", code="model_error"),
                    # 4xx are the callers' mistakes, never counted against the SLO.
                    series(errors, "churn", "0+300x120", code="signature_mismatch"),
                    # 99 % within 64 ms: a latency burn of 0.2, no page.
                    series(bucket, "churn", "0+990x120", le="0.064"),
                    series(bucket, "churn", "0+995x120", le="0.512"),
                    series(bucket, "churn", "0+1000x120", le="+Inf"),
                    series(count, "churn", "0+1000x120"),
                    # slow: 0.3 % errors (burn 3, under 6 and 14.4), and a failing shadow that
                    # would page if its copies counted.
                    series(requests, "slow", "0+1000x120"),
                    series(errors, "slow", "0+3x120", code="overloaded"),
                    series(requests, "slow", "0+1000x120", arm="shadow", version="2"),
                    series(errors, "slow", "0+900x120", arm="shadow", code="model_error"),
                    # quiet has no series at all.
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "65m",
                        "alertname": "ShipwaySLOAvailabilityPage",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "page", "model": "churn", "slo": "availability"},
                                "exp_annotations": _annotations(
                                    document, "ShipwaySLOAvailabilityPage", "churn"
                                ),
                            }
                        ],
                    },
                    {"eval_time": "65m", "alertname": "ShipwaySLOLatencyPage", "exp_alerts": []},
                    {
                        "eval_time": "65m",
                        "alertname": "churn-error_rate-above-0.01",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "model": "churn",
                                    "rule": "churn-error_rate-above-0.01",
                                },
                                "exp_annotations": {
                                    "summary": "churn: error_rate above 0.01 over 5m for 2m",
                                },
                            }
                        ],
                    },
                    {"eval_time": "65m", "alertname": "churn-latency_p99_ms-above-500", "exp_alerts": []},
                    {
                        "eval_time": "65m",
                        "alertname": "quiet-requests-below-10",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "model": "quiet",
                                    "rule": "quiet-requests-below-10",
                                },
                                "exp_annotations": {"summary": "quiet: requests below 10 over 10m"},
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "rules_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_the_rules_name_the_series_the_server_exposes() -> None:
    # The rules are only as good as their names and labels: render the real /metrics and read it.
    from prometheus_client.parser import text_string_to_metric_families

    metrics = ServingMetrics()
    arm = metrics.bind("churn", "1", lambda: 0.0).arm("stable")
    arm.requests.inc()
    arm.errors(SERVER_ERROR_CODES[0]).inc()
    arm.latency.observe(0.01)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }
    base = (("arm", "stable"), ("model", "churn"), ("version", "1"))
    for name, extra in (
        (REQUESTS, ()),
        (ERRORS, (("code", "model_error"),)),
        (f"{LATENCY}_bucket", (("le", "0.064"),)),
        (f"{LATENCY}_count", ()),
    ):
        assert (name, tuple(sorted(base + extra))) in samples, name


def test_no_slos_and_no_rules_is_still_a_valid_file(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "empty.yml"
    path.write_text(export_rules(store=store))
    assert "No SLOs or traffic alert rules" in path.read_text()
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
