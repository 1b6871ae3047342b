"""Billing pages in a real browser: a run's progress updates live, and a payment is recorded once."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select, update

from isp_admin.extensions import db
from isp_admin.models import JobRun, Payment
from isp_admin.services.platform.clock import today
from tests.e2e.test_browser import RECORD_CSP_VIOLATIONS
from tests.factories import UserFactory
from tests.web.billing_world import billed_customer

pytestmark = pytest.mark.browser


def test_a_running_job_page_follows_the_run_until_it_ends(page, sign_in):
    run = JobRun(kind="nightly", as_of=today(), status="running", triggered_by="ops@isp.example", total_chunks=4,
                 done_chunks=1, counts={"invoices": 10})
    db.session.add(run)
    db.session.commit()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    sign_in(UserFactory(role="readonly"))

    page.goto(f"/billing/jobs/{run.id}")
    bar = page.locator('[data-role="bar"]')
    expect(bar).to_have_text("25%")

    db.session.execute(update(JobRun).where(JobRun.id == run.id).values(done_chunks=3, counts={"invoices": 31}))
    db.session.commit()
    expect(bar).to_have_text("75%")
    expect(page.locator('[data-role="counts"]')).to_contain_text("31")

    db.session.execute(update(JobRun).where(JobRun.id == run.id).values(
        done_chunks=4, status="succeeded", finished_at=func.now(), counts={"invoices": 40}))
    db.session.commit()
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(bar).to_have_text("100%")
    assert re.search(r"width:\s*100%", bar.get_attribute("style") or "")
    assert errors == [] and page.evaluate("window.__cspViolations") == []


def test_a_double_clicked_payment_form_records_one_payment(page, sign_in):
    customer, invoice = billed_customer()
    sign_in(UserFactory(role="billing"))

    page.goto(f"/payments/new?customer_id={customer.id}&invoice_id={invoice.id}")
    page.get_by_label("Amount").fill("24.70")
    page.get_by_role("button", name="Record payment").dblclick()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Payment #")
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1
    expect(page.locator("#allocations")).to_contain_text(invoice.number)
