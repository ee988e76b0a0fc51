"""Prometheus recording and alerting rules equivalent to Shipway's SLOs and traffic alert rules.

``shipway monitor export-rules > shipway-rules.yml`` writes them for a team that runs Prometheus
and Alertmanager against the inference servers' ``/metrics``. They compute what the monitor
computes from its traffic counters, from the same metrics:

- requests: ``shipway_serving_requests_total``, excluding shadow copies (``arm="shadow"``) as the
  counters do;
- server errors: ``shipway_serving_errors_total`` with a 5xx code (:data:`SERVER_ERROR_CODES`);
- latency: ``shipway_serving_request_duration_seconds``, whose buckets are the latency bounds SLO
  thresholds are held to, so a 64 ms objective reads the ``le="0.064"`` bucket.

Each SLO objective gets one recording rule per burn window (its bad-request ratio) and the page
and ticket alerts of the SRE workbook over them. A window without requests gives no ratio
(0/0 is NaN in PromQL), so, as in the monitor, no data never fires. Drift and quality rules read
the prediction log, which Prometheus does not see: they are listed in a comment and left out.
"""

from __future__ import annotations

from typing import Any

import yaml

from shipway.core.latency import LATENCY_BUCKETS, bucket_label
from shipway.monitoring.alerts import Rule, duration_text, list_rules
from shipway.monitoring.signals import METRICS
from shipway.monitoring.slo import BURN_WINDOWS, SEVERITIES, SLO, list_slos
from shipway.monitoring.traffic import bound_index
from shipway.store import Store, get_store

__all__ = ["SERVER_ERROR_CODES", "export_rules", "rules_document"]

# The error codes of 5xx answers a version gave (serving/host.py): the model raised, or its queue
# was full. Counted against availability, like the status >= 500 the traffic counters check.
SERVER_ERROR_CODES = ("model_error", "overloaded")

REQUESTS = "shipway_serving_requests_total"
ERRORS = "shipway_serving_errors_total"
LATENCY = "shipway_serving_request_duration_seconds"
# Answers a caller waited for: every arm but shadow copies (and "", requests no version handled).
_ARMS = 'arm!~"|shadow"'


def _selector(model: str, *extra: str) -> str:
    return "{" + ",".join([f'model="{model}"', _ARMS, *extra]) + "}"


def _number(value: float) -> str:
    return f"{value:.12g}"


def _rate(metric: str, selector: str, window: str) -> str:
    return f"sum by (model) (rate({metric}{selector}[{window}]))"


def bad_ratio(slo: SLO, objective: str, window: str) -> str:
    """PromQL for the share of bad requests of one objective over ``window``."""
    requests = _rate(REQUESTS, _selector(slo.model), window)
    if objective == "availability":
        codes = "|".join(SERVER_ERROR_CODES)
        errors = _rate(ERRORS, _selector(slo.model, f'code=~"{codes}"'), window)
        # No error yet means no error series at all: count zero errors rather than no data.
        return f"({errors} or 0 * {requests}) / {requests}"
    bound = bound_index(slo.latency_ms or 0.0)
    assert bound is not None
    le = bucket_label(LATENCY_BUCKETS[bound])
    fast = _rate(f"{LATENCY}_bucket", _selector(slo.model, f'le="{le}"'), window)
    total = _rate(f"{LATENCY}_count", _selector(slo.model), window)
    return f"1 - ({fast} / {total})"


def record_name(objective: str, window: str) -> str:
    """The recording rule holding one objective's bad-request ratio over ``window``."""
    return f"shipway:slo_{objective}_bad:ratio_rate{window}"


def _slo_group(slo: SLO) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for objective, target in slo.objectives().items():
        for window in BURN_WINDOWS:
            rules.append(
                {"record": record_name(objective, window), "expr": bad_ratio(slo, objective, window)}
            )
        budget = 1.0 - target
        for severity, conditions in SEVERITIES.items():
            clauses = []
            for long, short, factor in conditions:
                limit = _number(factor * budget)
                clauses.append(
                    f'({record_name(objective, long)}{{model="{slo.model}"}} > {limit} and '
                    f'{record_name(objective, short)}{{model="{slo.model}"}} > {limit})'
                )
            burns = " or ".join(f"{f:g}x over {long}/{short}" for long, short, f in conditions)
            rules.append(
                {
                    "alert": f"ShipwaySLO{objective.capitalize()}{severity.capitalize()}",
                    "expr": " or ".join(clauses),
                    "labels": {"severity": severity, "model": slo.model, "slo": objective},
                    "annotations": {
                        "summary": f"{slo.model} is burning its {objective} error budget",
                        "description": f"Objective: {slo.describe(objective)} over 30 days. "
                        f"Fires at a burn rate above {burns}.",
                    },
                }
            )
    return {"name": f"shipway-slo-{slo.model}", "rules": rules}


def alert_expr(rule: Rule) -> str:
    """PromQL for a traffic rule's condition."""
    window = duration_text(rule.window_ms)
    op = ">" if rule.op == "above" else "<"
    limit = _number(rule.threshold)
    requests = _rate(REQUESTS, _selector(rule.model), window)
    if rule.metric == "requests":
        count = f"sum by (model) (increase({REQUESTS}{_selector(rule.model)}[{window}]))"
        # With no series at all there were no requests: zero, so `below` still fires.
        return f'({count} or on() label_replace(vector(0), "model", "{rule.model}", "", "")) {op} {limit}'
    if rule.metric == "error_rate":
        codes = "|".join(SERVER_ERROR_CODES)
        errors = _rate(ERRORS, _selector(rule.model, f'code=~"{codes}"'), window)
        return f"(({errors} or 0 * {requests}) / {requests}) {op} {limit}"
    if rule.metric.startswith("latency_p"):
        q = int(rule.metric[len("latency_p") : -len("_ms")]) / 100
        buckets = f"sum by (model, le) (rate({LATENCY}_bucket{_selector(rule.model)}[{window}]))"
        return f"(histogram_quantile({q:g}, {buckets}) * 1000) {op} {limit}"
    raise ValueError(f"{rule.metric} has no Prometheus form")


def _rule_alert(rule: Rule) -> dict[str, Any]:
    alert: dict[str, Any] = {"alert": rule.name, "expr": alert_expr(rule)}
    if rule.for_ms:
        alert["for"] = duration_text(rule.for_ms)
    alert["labels"] = {"severity": rule.severity, "model": rule.model, "rule": rule.name}
    alert["annotations"] = {"summary": f"{rule.model}: {rule.describe()}"}
    return alert


def rules_document(*, store: Store | None = None) -> tuple[dict[str, Any], list[Rule]]:
    """The rules file as a dict, and the rules it leaves out (not measurable from /metrics)."""
    store = store or get_store()
    groups = [_slo_group(slo) for slo in list_slos(store=store)]
    exported, skipped = [], []
    for rule in list_rules(store=store):
        (exported if METRICS[rule.metric].prometheus else skipped).append(rule)
    if exported:
        groups.append({"name": "shipway-alerts", "rules": [_rule_alert(r) for r in exported]})
    return {"groups": groups}, skipped


def export_rules(*, store: Store | None = None) -> str:
    """The Prometheus rules file (YAML) for every SLO and every traffic alert rule."""
    document, skipped = rules_document(store=store)
    head = [
        "# Prometheus rules generated by `shipway monitor export-rules` from Shipway's SLOs and alert",
        "# rules, over the inference servers' /metrics. Check them with: promtool check rules FILE",
    ]
    if not document["groups"]:
        head.append("# No SLOs or traffic alert rules are defined yet.")
    if skipped:
        head.append("# Left out (they read the prediction log, which Prometheus does not see):")
        head.extend(f"#   {r.name}: {r.model} {r.describe()}" for r in skipped)
    body = yaml.safe_dump(document, sort_keys=False, width=100_000, allow_unicode=True)
    return "\n".join(head) + "\n" + body
