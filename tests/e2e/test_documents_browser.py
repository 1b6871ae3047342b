"""Documents and words in a real browser: a credit note found by its number, read and emailed; a running job's
live counts stay in words while they update."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select, update

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, JobRun
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.platform.clock import today
from tests.e2e.test_browser import RECORD_CSP_VIOLATIONS
from tests.factories import UserFactory
from tests.web.billing_world import billed_customer

pytestmark = pytest.mark.browser


def test_a_credit_note_is_found_by_number_read_and_emailed(page, sign_in):
    customer, invoice = billed_customer(start=today(), billing_day=today().day, name="Zoë O'Brien",
                                        email="zoe@mail.example")
    note = invoice_service.void(invoice.id, "Billed the wrong plan", today())
    db.session.commit()
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    sign_in(UserFactory(role="billing"))

    page.goto("/search")
    page.get_by_label("Customer, PPPoE login, IP, invoice or credit-note number, payment reference").fill(
        note.number.lower().replace("-00000", "-"))  # typed short and in lower case
    page.get_by_role("button", name="Search").click()

    expect(page.locator("h1").first).to_contain_text(f"Credit note {note.number}")
    expect(page.locator("#credited-invoice")).to_have_text(invoice.number)
    expect(page.locator("#credit-note-total")).to_have_text(f"${note.amount_cents / 100:,.2f}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Email to customer").click()
    expect(page.locator(".alert")).to_contain_text("written to the development outbox")
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "credit_note.send")) == 1

    page.locator("#credited-invoice").click()  # and back to the invoice it cancels
    expect(page.locator("h1").first).to_contain_text(invoice.number)
    assert page.evaluate("window.__cspViolations") == []


def test_the_credit_note_page_fits_a_phone(page, sign_in):
    _, invoice = billed_customer(start=today(), billing_day=today().day,
                                 name="Wanjiku Mwangi-Kariuki Enterprises Limited of Nairobi")
    note = invoice_service.void(invoice.id, "A very long reason " * 12, today())
    db.session.commit()
    sign_in(UserFactory(role="readonly"))
    page.set_viewport_size({"width": 375, "height": 800})
    for url in (f"/credit-notes/{note.id}", "/credit-notes/", f"/search?q=INV-{today().year}"):
        page.goto(url)
        wide = page.evaluate("""[...document.querySelectorAll('body *')]
            .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1
                            && !el.closest('.overflow-auto, .table-responsive'))
            .map((el) => el.tagName + '.' + el.className).slice(0, 5)""")  # what overflows, when something does
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (url, wide)


def test_live_counts_stay_in_words_while_a_run_updates(page, sign_in):
    run = JobRun(kind="nightly", as_of=today(), status="running", triggered_by="ops@isp.example", total_chunks=2,
                 done_chunks=0, counts={"invoices": 1, "total_cents": 1000})
    db.session.add(run)
    db.session.flush()
    db.session.add(JobRun(kind="generate_monthly_invoices", as_of=today(), status="running",
                          triggered_by="ops@isp.example", parent_id=run.id))
    db.session.commit()
    sign_in(UserFactory(role="readonly"))

    page.goto(f"/billing/jobs/{run.id}")
    counts = page.locator('[data-role="counts"]')
    expect(counts).to_contain_text("Invoiced")
    expect(counts).to_contain_text("$10.00")

    db.session.execute(update(JobRun).where(JobRun.id == run.id).values(
        done_chunks=2, status="succeeded", finished_at=func.now(), counts={"invoices": 3, "total_cents": 2550}))
    db.session.commit()
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(counts).to_contain_text("Invoices issued")
    expect(counts).to_contain_text("$25.50")
    expect(counts).not_to_contain_text("total cents")
    expect(page.locator('[data-role="steps"]')).to_contain_text("Invoicing")
    expect(page.locator('[data-role="finished"]')).to_contain_text(f"{today():%d %b %Y}")
