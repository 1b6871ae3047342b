"""Billing operations pages: tonight's run (a dry run, then the real one), job runs with live progress, and the
notification outbox with retries."""
from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
import redis
from rq import Queue
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import Invoice, JobRun, Notification
from isp_admin.services.billing import collections, steps
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.billing import run as billing
from isp_admin.services.platform.clock import today
from tests.conftest import REDIS_URL, RUN_ID
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.web.billing_world import billed_customer, billing_records


def text_of(response) -> str:
    return response.get_data(as_text=True)


def row_counts() -> dict[str, int]:
    db.session.rollback()
    return {t.name: db.session.scalar(select(func.count()).select_from(t)) for t in db.metadata.sorted_tables}


@pytest.fixture
def due_on_the_first(app):
    """Three customers due on 1 March 2026 (one of them catching up February too), one due later."""
    plan = PlanFactory(monthly_price_cents=3000, tax_rate_bp=1600, setup_fee_cents=0)
    due = [SubscriptionFactory(plan=plan, start_date=date(2026, 1, 1), billing_day=1, next_bill_date=day,
                               customer=CustomerFactory(name=name)).customer_id
           for name, day in (("Amina Due", date(2026, 3, 1)), ("Carlos Due", date(2026, 2, 1)),
                             ("Mei Due", date(2026, 3, 1)))]
    SubscriptionFactory(plan=plan, start_date=date(2026, 1, 1), billing_day=15, next_bill_date=date(2026, 3, 15),
                        customer=CustomerFactory(name="Later Not Due"))
    return due


# --- tonight's run: the dry run ------------------------------------------------------------------------------------


def test_the_dry_run_lists_exactly_who_plan_invoices_would_bill_and_writes_nothing(client, login, due_on_the_first):
    login("readonly")
    before = row_counts()

    page = text_of(client.get("/billing/run?as_of=2026-03-01"))

    plan = billing.plan_invoices(date(2026, 3, 1))
    invoiced = page.split('id="step-invoice"', 1)[1].split("</table>", 1)[0]
    listed = re.findall(r'href="/customers/(\d+)"', invoiced)
    assert [int(i) for i in listed] == [i.customer_id for i in plan.invoices] == sorted(due_on_the_first)
    assert "Later Not Due" not in invoiced
    assert re.search(r'id="count-invoice">3<', page)
    assert re.search(r'id="invoice-grand-total">\$139\.20<', page)  # 4 full months × (30.00 + 4.80)
    assert "4 lines" in page
    assert row_counts() == before


def test_the_dry_run_shows_each_collection_step_with_counts(client, login):
    customer, invoice = billed_customer()  # issued 10 Jan 2026, due 24 Jan, unpaid
    login("readonly")
    as_of = date(2026, 2, 5)  # past due and past the 7 days' grace

    page = text_of(client.get(f"/billing/run?as_of={as_of}"))

    for key, planner in (("mark_overdue", collections.plan_mark_overdue), ("suspend", collections.plan_enforce_overdue),
                         ("reactivate", collections.plan_reactivate_paid), ("remind", collections.plan_reminders)):
        expected = planner(as_of)
        assert re.search(rf'id="count-{key}">{len(expected)}<', page), key
    assert len(collections.plan_mark_overdue(as_of)) == 1 and len(collections.plan_enforce_overdue(as_of)) == 1
    overdue = page.split('id="step-mark_overdue"', 1)[1].split("</table>", 1)[0]
    assert invoice.number in overdue and customer.name in overdue and "$24.70" in overdue
    assert invoice.number in page.split('id="step-remind"', 1)[1]


def test_the_dry_run_is_bounded_but_counts_and_totals_everything(due_on_the_first):
    [preview] = steps.preview("generate_monthly_invoices", date(2026, 3, 1), limit=2)
    assert len(preview.rows) == 2 and preview.count == 3 and preview.truncated
    assert preview.total_cents == 4 * 3480 and preview.totals["lines"] == 4


def test_the_run_page_defaults_to_today_and_refuses_a_bad_date(client, login):
    login("billing")
    page = text_of(client.get("/billing/run"))
    assert f'value="{today().isoformat()}"' in page and "Nobody is due to be invoiced." in page
    assert "Run it for" in page
    assert client.get("/billing/run?as_of=2026-02-30").status_code == 400
    future = (today() + timedelta(days=30)).isoformat()
    assert "A future date can be previewed, not run." in text_of(client.get(f"/billing/run?as_of={future}"))


def test_a_readonly_user_sees_the_dry_run_but_no_run_button(client, login):
    login("readonly")
    page = text_of(client.get("/billing/run"))
    assert "dry run" in page and "Run it" not in page


# --- tonight's run: running it ---------------------------------------------------------------------------------------


@pytest.fixture
def queued_app(make_app):
    """An app whose jobs go to a queue of this test run's own; the queue is deleted afterwards."""
    name = f"test-web-{RUN_ID}"
    yield make_app(RQ_QUEUE=name)
    Queue(name, connection=redis.Redis.from_url(REDIS_URL)).delete(delete_jobs=True)


def test_run_it_starts_the_nightly_run_and_its_page_follows_progress(app, login, queued_app, backends):
    if not backends["redis_url"]:
        pytest.skip("needs Redis")
    client = queued_app.test_client()
    user = login("billing", client_=client)

    response = client.post("/billing/run", data={"as_of": today().isoformat()})

    [run] = db.session.scalars(select(JobRun))
    assert (run.kind, run.as_of, run.triggered_by, run.status) == ("nightly", today(), user.email, "running")
    assert response.headers["Location"].endswith(f"/billing/jobs/{run.id}")
    assert len(Queue(f"test-web-{RUN_ID}", connection=redis.Redis.from_url(REDIS_URL))) == 1
    page = text_of(client.get(response.headers["Location"]))
    assert f'data-progress-url="/billing/jobs/{run.id}/progress.json"' in page
    assert 'src="/static/js/job_progress.js"' in page and 'role="progressbar"' in page
    progress = json.loads(client.get(f"/billing/jobs/{run.id}/progress.json").data)
    assert progress["status"] == "running" and progress["total"] == run.total_chunks and progress["percent"] == 0


def test_run_it_with_redis_down_says_so_and_starts_nothing(app, login, make_app):
    broken = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    client = broken.test_client()
    login("admin", client_=client)

    response = client.post("/billing/run", data={"as_of": today().isoformat()}, follow_redirects=True)

    assert response.status_code == 200
    assert "The run could not be started" in text_of(response) and "does not answer" in text_of(response)
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0


def test_run_it_refuses_a_future_date(client, login):
    login("billing")
    response = client.post("/billing/run", data={"as_of": (today() + timedelta(days=1)).isoformat()},
                           follow_redirects=True)
    assert "cannot be started for a future date" in text_of(response)
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0


# --- job runs -----------------------------------------------------------------------------------------------------


def test_job_runs_are_listed_and_a_finished_one_reports_full_progress(client, login):
    customer = CustomerFactory()
    ids = billing_records(customer.id)
    login("readonly")

    listing = text_of(client.get("/billing/jobs/"))
    assert f'href="/billing/jobs/{ids["job_run"]}"' in listing and "succeeded" in listing
    page = text_of(client.get(f"/billing/jobs/{ids['job_run']}"))
    assert 'data-width="100"' in page and 'data-status="succeeded"' in page and "invoices" in page
    progress = json.loads(client.get(f"/billing/jobs/{ids['job_run']}/progress.json").data)
    assert (progress["status"], progress["percent"], progress["finished"]) == ("succeeded", 100, True)
    assert client.get("/billing/jobs/999999").status_code == 404
    assert client.get("/billing/jobs/999999/progress.json").status_code == 404


def test_no_job_runs_yet_is_an_empty_state(client, login):
    login("readonly")
    assert "No runs yet" in text_of(client.get("/billing/jobs/"))


# --- notifications ------------------------------------------------------------------------------------------------


def test_notifications_open_on_the_failed_ones_and_a_retry_queues_it_again(client, login):
    customer = CustomerFactory()
    ids = billing_records(customer.id)
    _, other = billed_customer()  # its invoice email is queued, not failed
    login("billing")

    page = text_of(client.get("/billing/notifications/"))
    rows = page.split('id="notifications"', 1)[1]
    assert "SMTP down" in rows and "INV-2025-000007" in rows
    assert other.number not in rows and rows.count("Retry</button>") == 1
    assert other.number in text_of(client.get("/billing/notifications/?status=all"))

    response = client.post(f"/billing/notifications/{ids['notification']}/retry")

    assert response.status_code == 302
    notification = db.session.get(Notification, ids["notification"])
    assert (notification.status, notification.attempts, notification.last_error) == ("queued", 0, None)
    assert "No failed notifications" in text_of(client.get("/billing/notifications/"))


def test_a_readonly_user_sees_notifications_without_retry(client, login):
    billing_records(CustomerFactory().id)
    login("readonly")
    page = text_of(client.get("/billing/notifications/"))
    assert "SMTP down" in page and "Retry</button>" not in page
    assert client.get("/billing/notifications/?status=bogus").status_code == 302


# --- the pages obey the content security policy ---------------------------------------------------------------------


def test_billing_pages_have_no_inline_script_or_style(client, login):
    customer, invoice = billed_customer()
    payment, _ = payment_service.record_payment(customer.id, 500, "cash", today(), today())
    ids = billing_records(customer.id)
    db.session.commit()
    login("admin")
    urls = ["/invoices/", f"/invoices/{invoice.id}", f"/invoices/{ids['draft']}/edit",
            f"/customers/{customer.id}/invoices/new", f"/customers/{customer.id}/statement",
            f"/customers/{customer.id}",
            "/payments/", f"/payments/{payment.id}", f"/payments/new?customer_id={customer.id}", "/payments/new",
            "/billing/run", "/billing/jobs/", f"/billing/jobs/{ids['job_run']}", "/billing/notifications/"]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        html = text_of(response)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert " style=" not in html and "<style" not in html, url
    script = client.get("/static/js/job_progress.js")
    script.close()
    assert script.status_code == 200
    assert db.session.scalar(select(func.count()).select_from(Invoice)) == 3
