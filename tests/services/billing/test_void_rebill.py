"""Voiding an invoice, then billing its periods again.

A void alone leaves the periods billed (and credited): the run and "Generate invoice now" find nothing due. Void
and re-bill issues a new invoice for the same periods at the subscription's price now; the books, coverage and later
credits stay right.
"""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, InvoiceLine, Subscription
from isp_admin.services.billing import invoices, payments, rebill
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.calendar import prorate, tax_on
from isp_admin.services.billing.coverage import coverage_problems as service_coverage_problems
from isp_admin.services.customers import subscriptions
from isp_admin.services.platform.clock import today
from tests.concurrency.invariants import coverage_problems, ledger_problems
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.services.billing.test_statement_dates import backend, sqlite_app  # noqa: F401  (fixtures)


@pytest.fixture
def billed(app):
    """Zoe on Home 50 ($39.00 + 16 %), billed for this month through the run, half of it paid."""
    start = today().replace(day=1)
    plan = PlanFactory(name="Home 50", monthly_price_cents=3900, tax_rate_bp=1600, setup_fee_cents=0)
    customer = CustomerFactory(name="Zoe O'Brien")
    sub = SubscriptionFactory(customer=customer, plan=plan, start_date=start, billing_day=1, next_bill_date=start,
                              billed_from=start, pppoe_username="zoe.obrien")
    invoice = billing.generate_invoice_for_customer(customer.id, start)
    payments.record_payment(customer.id, 2000, "cash", start, today())
    db.session.commit()
    return sub, invoice


def lines_of(invoice_id: int) -> list[InvoiceLine]:
    return list(db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id)))


def books_are_sound() -> None:
    db.session.commit()
    assert ledger_problems() == []
    assert coverage_problems(today()) == []
    assert service_coverage_problems() == []


def test_a_void_alone_leaves_the_periods_billed_so_nothing_is_due(billed):
    sub, invoice = billed
    invoices.void(invoice.id, "Wrong price", today())
    db.session.commit()

    assert billing.generate_invoice_for_customer(sub.customer_id, today()) is None
    books_are_sound()


def test_void_and_rebill_bills_the_same_periods_at_todays_price(billed):
    sub, invoice = billed
    [old_line] = lines_of(invoice.id)
    sub = db.session.get(Subscription, sub.id)
    sub.price_override_cents = 2900  # the price that should have been billed
    db.session.commit()
    preview = rebill.plan_rebill(invoice.id)

    note, again = rebill.void_and_rebill(invoice.id, "Wrong price", today())
    db.session.commit()

    assert db.session.get(Invoice, invoice.id).status == "void" and note.kind == "void"
    [line] = lines_of(again.id)
    amount = prorate(2900, old_line.days, old_line.period_days)
    assert (line.kind, line.subscription_id, line.period_start, line.period_end) == \
        ("adjustment", sub.id, old_line.period_start, old_line.period_end)
    assert (line.amount_cents, line.tax_cents) == (amount, tax_on(amount, 1600))
    assert line.description.startswith("Home 50 · zoe.obrien, ") and invoice.number in line.description
    assert again.total_cents == preview.total_cents == amount + tax_on(amount, 1600)
    # The $20.00 paid on the voided invoice was freed as credit and pays the new one.
    assert again.amount_paid_cents + again.credit_applied_cents >= 2000 and again.number.startswith("INV-")
    assert billing.generate_invoice_for_customer(sub.customer_id, today()) is None  # billed once more, not twice
    books_are_sound()


def test_a_cancellation_after_a_rebill_credits_the_rebilled_days(billed, monkeypatch):
    sub, invoice = billed
    _, again = rebill.void_and_rebill(invoice.id, "Wrong name on it", today())
    db.session.commit()
    [line] = lines_of(again.id)
    end = line.period_end - timedelta(days=1)  # the period's last day: one day unused
    monkeypatch.setattr(subscriptions, "today", lambda: max(end, today()))

    subscriptions.cancel(sub.id, end)
    db.session.commit()

    credit = db.session.scalar(select(CreditNote).where(CreditNote.kind == "cancellation"))
    assert credit.subtotal_cents == min(line.amount_cents, prorate(line.unit_price_cents, 1, line.period_days))
    assert ledger_problems() == []


def test_a_period_a_plan_change_billed_since_is_not_rebilled(billed):
    sub, invoice = billed
    subscriptions.change_plan(sub.id, PlanFactory(name="Fibre 300").id)
    db.session.commit()
    before = db.session.scalar(select(func.count()).select_from(Invoice))

    plan = rebill.plan_rebill(invoice.id)
    with pytest.raises(BusinessRuleViolation, match="would charge those days twice"):
        rebill.void_and_rebill(invoice.id, "Wrong price", today())
    db.session.rollback()

    assert not plan.possible and "Another invoice already bills part of" in plan.refusal
    assert db.session.get(Invoice, invoice.id).status != "void"
    assert db.session.scalar(select(func.count()).select_from(Invoice)) == before


def test_a_period_is_rebilled_once(billed):
    _, invoice = billed
    _, again = rebill.void_and_rebill(invoice.id, "Wrong price", today())
    db.session.commit()

    with pytest.raises(BusinessRuleViolation, match="re-billed once"):
        rebill.void_and_rebill(again.id, "Wrong again", today())
    db.session.rollback()
    assert db.session.get(Invoice, again.id).status != "void"


def test_an_invoice_of_ad_hoc_lines_has_nothing_to_rebill(app):
    customer = CustomerFactory()
    draft = invoices.create_draft(customer.id, [{"description": "Router", "unit_price_cents": 4900}], today())
    issued = invoices.issue(draft.id, today())
    db.session.commit()

    plan = rebill.plan_rebill(issued.id)
    assert plan.lines == [] and plan.left_out == ["Router: not a subscription's charge (write a draft if still owed)"]
    with pytest.raises(BusinessRuleViolation, match="Nothing on this invoice can be re-billed"):
        rebill.void_and_rebill(issued.id, "Not installed", today())
    db.session.rollback()


def test_a_cancelled_subscriptions_period_is_left_out(billed, monkeypatch):
    sub, invoice = billed
    subscriptions.cancel(sub.id, today().replace(day=1) if today().day > 1 else today())
    db.session.commit()
    plan = rebill.plan_rebill(invoice.id)
    assert plan.lines == [] and "the subscription is cancelled" in plan.left_out[0]


def test_the_setup_fee_is_rebilled_at_the_plans_fee(app):
    start = date(today().year, today().month, 1)
    plan = PlanFactory(monthly_price_cents=3000, setup_fee_cents=1500, tax_rate_bp=0)
    sub = SubscriptionFactory(plan=plan, start_date=start, billing_day=1, next_bill_date=start, billed_from=start)
    invoice = billing.generate_invoice_for_customer(sub.customer_id, start)
    db.session.commit()

    kinds = [(line.kind, line.amount_cents) for line in rebill.plan_rebill(invoice.id).lines]

    assert sorted(kinds) == [("adjustment", 3000), ("setup_fee", 1500)]


@pytest.mark.usefixtures("backend")
def test_void_and_rebill_works_on_sqlite_too():
    from isp_admin.services.billing.reconcile import reconcile

    start = today().replace(day=1)
    sub = SubscriptionFactory(plan=PlanFactory(monthly_price_cents=3900, setup_fee_cents=0), start_date=start,
                              billing_day=1, next_bill_date=start, billed_from=start)
    invoice = billing.generate_invoice_for_customer(sub.customer_id, start)
    db.session.commit()

    _, again = rebill.void_and_rebill(invoice.id, "Wrong price", today())
    db.session.commit()

    assert again.total_cents == invoice.total_cents and again.status in ("open", "overdue", "paid")
    assert reconcile() == []
