"""deploy/prometheus/alerts.yml: valid for Prometheus, proven to fire (and stay quiet) by its unit tests, and built
only from metrics /metrics really serves, with labels those metrics really carry.

promtool (Debian's prometheus package, installed by .ci/run) checks the rules and runs alerts_test.yml; without it
the Python checks below still hold every expression to the served metric names. Every alert has a runbook.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from isp_admin.extensions import cache, db
from isp_admin.observability.metrics import BUSINESS_CACHE_KEY
from isp_admin.services.network import reconcile
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.clock import today
from tests.conftest import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}
PROMETHEUS_OWN = {"up"}  # written by Prometheus for every target, not served by the app
TARGET_LABELS = {"job", "instance"}  # attached by Prometheus at scrape time


def promtool() -> str:
    """The promtool binary, or skip (fail in CI, where .ci/run installs it)."""
    binary = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("promtool is missing; .ci/run installs Debian's prometheus package for it")
        pytest.skip("promtool not installed (apt-get install prometheus); the Python checks still ran")
    return binary


def rules() -> list[dict]:
    """Every alerting rule in alerts.yml."""
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def selectors(expr: str) -> dict[str, set[str]]:
    """{metric name: label names its matchers use} for every series an expression selects."""
    found: dict[str, set[str]] = {}
    expr = _without_noise(expr)
    for name, matchers in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{([^}]*)\})?", expr):
        if name.lower() in PROMQL_WORDS or _called(expr, name):
            continue
        found.setdefault(name, set()).update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return found


def _without_noise(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values (regexes hold dots and words)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors: [5m]
    expr = re.sub(r"\boffset\s+-?\w+", "", expr)  # offset modifiers: offset 1d
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping label lists
    return re.sub(r"(?<![A-Za-z_])\d[\d.eE+-]*", "", expr)  # numbers, 1e-9 included


def _called(expr: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\s*\(", expr) is not None


def served(client) -> dict[str, set[str]]:
    """{sample name: label names} from a real scrape, after traffic and a failed run have filled every family."""
    client.get("/login")
    client.get("/health/")
    run = job_runs.start_run("mark_overdue", today(), dry_run=False, triggered_by="test")
    job_runs.fail_run(run.id, "boom")
    reconcile.check(limit=1, triggered_by="test")  # the network mismatch gauges exist once a check has run
    db.session.commit()
    cache.delete(BUSINESS_CACHE_KEY)
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_promtool_accepts_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_alert_fires_past_its_threshold_and_not_short_of_it():
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_has_a_firing_and_a_quiet_unit_test():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown to fire"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown to stay quiet"


def test_rules_are_complete_and_name_only_served_metrics_and_labels(client):
    metrics = served(client)
    issue_thresholds = {"IspAdminSlowResponses", "IspAdminHighErrorRate", "IspAdminDatabasePoolSaturated",
                        "IspAdminHighMemory", "IspAdminLowDisk"}
    assert issue_thresholds <= {rule["alert"] for rule in rules()}
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        used = selectors(rule["expr"])
        assert used, rule["alert"]
        for name, labels in used.items():
            if name in PROMETHEUS_OWN:
                continue
            assert name in metrics, f"{rule['alert']} uses {name}, which /metrics does not serve"
            missing = labels - TARGET_LABELS - metrics[name]
            assert not missing, f"{rule['alert']} matches {name} on labels it does not carry: {missing}"


def test_the_metric_name_parser_finds_what_an_expression_selects():
    expr = ('histogram_quantile(0.95, sum by (le) (rate(flask_http_request_duration_seconds_bucket'
            '{job="isp-admin", endpoint!~"health\\\\..*"}[5m]))) > 1 and up == 0 / clamp_min(x_total, 1e-9)'
            ' > max(y offset 1d)')
    assert selectors(expr) == {"flask_http_request_duration_seconds_bucket": {"job", "endpoint"}, "up": set(),
                               "x_total": set(), "y": set()}


def test_every_alert_has_a_runbook():
    guide = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules():
        assert re.search(rf"^#+ .*\b{rule['alert']}\b", guide, re.MULTILINE), f"no runbook for {rule['alert']}"
