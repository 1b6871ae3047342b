"""/metrics: request counts and latency by endpoint, SQL per request, business and job gauges, who may scrape."""
from __future__ import annotations

import re
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from isp_admin.extensions import cache, db
from isp_admin.models import Invoice
from isp_admin.models.base import utcnow
from isp_admin.observability.metrics import BUSINESS_CACHE_KEY
from isp_admin.services.platform.clock import today
from tests.api.helpers import bearer
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}


def scrape(client, **kwargs) -> dict[str, list]:
    """Return {metric sample name: [(labels, value), ...]} from one scrape."""
    response = client.get("/metrics", environ_base=kwargs.pop("environ_base", LOOPBACK), **kwargs)
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "text/plain"
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name: str, **labels) -> float:
    """Sum the samples of `name` whose labels include `labels`."""
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == str(x) for k, x in labels.items()))


def test_requests_are_counted_by_endpoint_and_status_with_latency_and_queries(client):
    headers = bearer()
    client.get("/api/plans/", headers=headers)  # the token's first use also records its last use (a 4th statement)
    before = scrape(client)
    for _ in range(3):
        assert client.get("/api/plans/", headers=headers).status_code == 200
    assert client.get("/api/customers/999999/", headers=headers).status_code == 404
    after = scrape(client)

    ok = dict(endpoint="api_plans.list_plans", method="GET", status=200)
    assert value(after, "flask_http_request_total", **ok) - value(before, "flask_http_request_total", **ok) == 3
    missing = dict(endpoint="api_customers.get_customer", method="GET", status=404)
    assert value(after, "flask_http_request_total", **missing) - value(before, "flask_http_request_total",
                                                                       **missing) == 1
    count = "flask_http_request_duration_seconds_count"
    assert value(after, count, endpoint="api_plans.list_plans") - value(before, count,
                                                                        endpoint="api_plans.list_plans") == 3
    assert value(after, "flask_http_request_duration_seconds_bucket", endpoint="api_plans.list_plans", le="+Inf") >= 3
    # The plans list runs 3 statements (token, page, count): every observation falls in the "≤ 3" bucket.
    queries = "isp_admin_sql_queries_per_request_bucket"
    assert (value(after, queries, endpoint="api_plans.list_plans", le="3.0")
            - value(before, queries, endpoint="api_plans.list_plans", le="3.0")) == 3
    assert (value(after, queries, endpoint="api_plans.list_plans", le="2.0")
            - value(before, queries, endpoint="api_plans.list_plans", le="2.0")) == 0
    assert not any("/api/customers/999999" in str(labels) for labels, _ in after["flask_http_request_total"])


def test_business_gauges_match_the_database(client):
    plan = PlanFactory()
    for status in ("active", "active", "suspended", "cancelled"):
        SubscriptionFactory(plan=plan, status=status, customer=CustomerFactory(),
                            suspension_reason="manual" if status == "suspended" else None)
    customer = CustomerFactory()
    day = today()
    rows = (("open", 5000, 1000), ("overdue", 3000, 0), ("overdue", 700, 200), ("paid", 900, 900), ("draft", 400, 0))
    for n, (status, total, paid) in enumerate(rows):
        issued = day - timedelta(days=45 if status == "overdue" else 0)
        db.session.add(Invoice(customer_id=customer.id, status=status, issue_date=issued, currency="USD",
                               due_date=issued + timedelta(days=14), number=None if status == "draft" else f"T-{n}",
                               paid_at=utcnow() if status == "paid" else None,
                               subtotal_cents=total, total_cents=total, amount_paid_cents=paid))
    db.session.commit()
    cache.delete(BUSINESS_CACHE_KEY)

    samples = scrape(client)
    assert value(samples, "isp_admin_open_invoices") == 3
    assert value(samples, "isp_admin_overdue_invoices") == 2
    assert value(samples, "isp_admin_receivables_cents") == 4000 + 3000 + 500
    assert value(samples, "isp_admin_subscriptions", status="active") == 2
    assert value(samples, "isp_admin_subscriptions", status="suspended") == 1
    assert 0 <= value(samples, "isp_admin_memory_used_ratio") <= 1
    assert 0 < value(samples, "isp_admin_disk_free_ratio") <= 1


def test_job_runs_are_reported_by_kind_and_outcome(client, runner):
    from isp_admin.services.platform import job_runs

    run = job_runs.start_run("mark_overdue", today(), dry_run=False, triggered_by="test")
    job_runs.fail_run(run.id, "boom")
    db.session.commit()
    cache.delete(BUSINESS_CACHE_KEY)
    samples = scrape(client)
    assert value(samples, "isp_admin_job_runs", kind="mark_overdue", status="failed") == 1
    assert value(samples, "isp_admin_job_last_duration_seconds", kind="mark_overdue") >= 0
    assert value(samples, "isp_admin_job_last_finished_timestamp_seconds", kind="mark_overdue") > 1.7e9


def test_only_the_monitoring_network_or_the_metrics_token_may_scrape(make_app):
    app = make_app(METRICS_TOKEN="scrape-secret-for-tests")
    client = app.test_client()
    public = {"REMOTE_ADDR": "8.8.8.8"}
    refused = client.get("/metrics", environ_base=public)
    assert refused.status_code == 403 and b"flask_http_request" not in refused.data
    assert client.get("/metrics", environ_base=public,
                      headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", environ_base=public,
                      headers={"Authorization": "Bearer scrape-secret-for-tests"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    closed = make_app(METRICS_ALLOW_PRIVATE=False).test_client()
    assert closed.get("/metrics", environ_base=LOOPBACK).status_code == 403


def test_a_scrape_is_not_itself_counted_and_names_no_ids(client):
    scrape(client)
    samples = scrape(client)
    assert value(samples, "flask_http_request_total", endpoint="metrics.metrics") == 0
    endpoints = {labels["endpoint"] for labels, _ in samples.get("flask_http_request_total", [])}
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_]+)?", e) for e in endpoints), endpoints  # names, never ids
