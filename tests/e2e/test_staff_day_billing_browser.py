"""Issue 16's billing defects where staff met them, in a real browser: Back after "Record payment", a plan change
that issued money without saying so, and invoice pages too wide for a phone."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, Payment, Plan, Subscription
from isp_admin.services.billing import payments
from isp_admin.services.platform.clock import today
from tests.e2e.test_browser import RECORD_CSP_VIOLATIONS
from tests.factories import PlanFactory, UserFactory
from tests.web.billing_world import billed_customer

pytestmark = pytest.mark.browser


def count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


def test_back_then_record_again_never_records_the_money_twice_unasked(page, sign_in):
    customer, _ = billed_customer()
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    sign_in(UserFactory(role="billing"))
    record = page.get_by_role("button", name="Record payment")

    page.goto(f"/payments/new?customer_id={customer.id}")
    page.get_by_label("Amount").fill("24.70")
    page.get_by_label("Reference").fill("TRX-889")
    record.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Payment #")

    # Back restores the form as it was sent (re-fetched, with a new key): sent again, it is the same payment.
    page.go_back()
    expect(page.get_by_label("Amount")).to_have_value("24.70")
    record.click()
    expect(page.get_by_role("alert").first).to_contain_text("already recorded (the form was sent twice)")
    assert count(Payment) == 1

    # Back again, and something changed: a new payment as far as the key goes, but it looks like the first.
    page.go_back()
    page.get_by_label("Method").select_option("bank_transfer")
    record.click()
    warning = page.locator("#similar-payments")
    expect(warning).to_contain_text("This looks like a payment already recorded")
    first = db.session.scalar(select(Payment))
    expect(warning.get_by_role("link", name=f"Payment #{first.id}")).to_be_visible()
    assert count(Payment) == 1

    page.get_by_label("Record it anyway").check()
    record.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Payment #")
    assert count(Payment) == 2
    assert page.evaluate("window.__cspViolations") == []


def test_a_plan_change_shows_its_amounts_then_says_what_it_issued(page, sign_in):
    start = today().replace(day=1)
    customer, _ = billed_customer(price=3900, start=start, billing_day=1)
    sub = db.session.scalar(select(Subscription).where(Subscription.customer_id == customer.id))
    fibre = PlanFactory(name="Fibre 300", monthly_price_cents=7900)
    sign_in(UserFactory(role="billing"))

    page.goto(f"/subscriptions/{sub.id}")
    page.get_by_label("New plan").select_option(str(fibre.id))
    page.get_by_role("button", name="Change plan").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Check the amounts")
    preview = page.locator("#money-preview")
    expect(preview.locator('tr[data-kind="invoice"]')).to_contain_text("Fibre 300")
    expect(preview.locator('tr[data-kind="credit_note"]')).to_contain_text("Unused")
    assert (count(Invoice), count(CreditNote)) == (1, 0)

    page.get_by_role("button", name="Confirm and issue").click()

    invoice = db.session.scalar(select(Invoice).order_by(Invoice.id.desc()))
    note = db.session.scalar(select(CreditNote))
    flash = page.get_by_role("alert").first
    expect(flash).to_contain_text(f"Plan changed to Fibre 300. Invoice {invoice.number} for $")
    expect(flash).to_contain_text(f"credit note {note.number} for $")
    assert db.session.get(Plan, db.session.get(Subscription, sub.id).plan_id).name == "Fibre 300"
    flash.get_by_role("link", name=invoice.number).click()
    expect(page.get_by_role("heading", level=1).first).to_contain_text(invoice.number)


@pytest.mark.parametrize("where", ["invoice", "statement"])
def test_the_invoice_page_and_the_statement_fit_a_phone(page, sign_in, where):
    customer, invoice = billed_customer(price=123_456_789, name="Wanjiru Achieng-Otieno Kamau-Mwangi Holdings",
                                        email="accounts.payable.department@wanjiru-achieng-holdings.example")
    payments.record_payment(customer.id, 5000, "bank_transfer", today(), today(),
                            reference="TRX-20261205-0000000001234567890")
    db.session.commit()
    sign_in(UserFactory(role="billing"))
    page.set_viewport_size({"width": 375, "height": 800})

    page.goto(f"/invoices/{invoice.id}" if where == "invoice" else f"/customers/{customer.id}/statement")

    expect(page.get_by_role("heading", level=1).first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]")
