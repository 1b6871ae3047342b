"""`flask perf test-api-performance`, in-process: every main endpoint timed, with its queries, and the token revoked.

The --url mode runs against a live gunicorn in tests/test_api_docs_live.py.
"""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import ApiToken
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data.demo import bill_history
from isp_admin.services.sample_data.generator import generate
from tests.factories import UserFactory

ENDPOINTS = [
    "customers: page 1", "customers: deep page", "customers: search", "customers: cursor", "customer detail",
    "invoices: page 1", "invoices: status + due", "invoice detail", "payments: page 1", "payment detail",
    "stats: invoices", "stats: payments", "plans: list", "subscriptions: page 1",
]


@pytest.fixture
def seeded(app):
    """A small billing history (customers, subscriptions, invoices, payments) and an admin."""
    with acting_as(SYSTEM):
        generate(40, seed=3)
        db.session.flush()
        counts = bill_history(today())
    db.session.commit()
    assert counts["invoices"] and counts["payments"]
    return UserFactory(role="admin", email="perf-owner@isp.example")


def run_perf(runner, *args: str):
    return runner.invoke(args=["perf", "test-api-performance", "--page-size", "10", *args])


def test_every_endpoint_is_timed_with_its_queries(runner, seeded):
    result = run_perf(runner, "--requests", "6", "--warmup", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "in-process" and report["requests"] == 6
    rows = {row["endpoint"]: row for row in report["endpoints"]}
    assert list(rows) == ENDPOINTS
    for name, row in rows.items():
        assert row["skipped"] is None, name
        assert row["requests"] == 6 and row["errors"] == 0 and row["statuses"] == {"200": 6}, name
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"], name
        assert row["app_p50_ms"] > 0 and 0 <= row["db_p50_ms"] <= row["app_p50_ms"] + 0.1, name
        assert isinstance(row["queries_max"], int) and 1 <= row["queries_median"] <= row["queries_max"], name
    assert "after=" in rows["customers: cursor"]["path"]
    assert "page=4" in rows["customers: deep page"]["path"]  # 40 customers, 10 a page
    assert "status=" in rows["invoices: status + due"]["path"] and "due_from=" in rows["invoices: status + due"]["path"]


def test_the_throwaway_token_is_revoked_afterwards(runner, seeded):
    result = run_perf(runner, "--requests", "1", "--warmup", "0", "--email", seeded.email)
    assert result.exit_code == 0, result.output
    tokens = db.session.scalars(select(ApiToken)).all()
    assert [(t.user_id, t.scopes, t.name) for t in tokens] == [(seeded.id, "read", "flask perf test-api-performance")]
    assert tokens[0].revoked_at is not None and tokens[0].last_used_at is not None


def test_the_table_lists_every_endpoint_with_numbers(runner, seeded):
    result = run_perf(runner, "--requests", "3", "--warmup", "0")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("in-process: 3 requests per endpoint")
    assert lines[1].split() == ["endpoint", "reqs", "errors", "p50", "ms", "p95", "ms", "max", "ms", "app", "p50",
                                "db", "p50", "SQL", "med", "SQL", "max"]
    for name, line in zip(ENDPOINTS, lines[2:], strict=True):
        assert line.startswith(name)
        figures = line[len(name):].split()
        assert figures[:2] == ["3", "0"] and all(float(cell) >= 0 for cell in figures[2:]), line


def test_an_empty_database_skips_the_detail_rows_instead_of_failing(runner, app):
    UserFactory(role="admin")
    result = run_perf(runner, "--requests", "2", "--warmup", "0", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["endpoint"]: row for row in json.loads(result.stdout)["endpoints"]}
    assert rows["customer detail"]["skipped"] == "no customers" and rows["invoice detail"]["skipped"] == "no invoices"
    assert rows["customers: page 1"]["requests"] == 2 and rows["customers: page 1"]["errors"] == 0


def test_without_an_admin_it_says_what_to_do(runner, app):
    result = run_perf(runner)
    assert result.exit_code == 1 and "needs an active admin" in result.output


def test_an_unreachable_server_exits_non_zero(runner, app):
    # A port nothing listens on: the run says so instead of printing a table.
    result = run_perf(runner, "--url", "http://127.0.0.1:9", "--token", "ispa_nope")
    assert result.exit_code == 1 and "no answer (ConnectionRefusedError" in result.output
