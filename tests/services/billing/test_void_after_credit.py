"""Voiding an invoice whose days a cancellation or plan change already credited: no day is credited twice."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import CreditAllocation, CreditNote, Invoice
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.customers import subscriptions
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

D = date


@pytest.fixture
def world(app, monkeypatch):
    """A customer billed for March (31 days) at 3,100 + 10% tax on Home; Fibre costs 6,200 + 10%."""
    customer = CustomerFactory()
    home = PlanFactory(name="Home", monthly_price_cents=3100, tax_rate_bp=1000)
    fibre = PlanFactory(name="Fibre", monthly_price_cents=6200, tax_rate_bp=1000)
    sub = SubscriptionFactory(customer=customer, plan=home, start_date=D(2026, 3, 1), billing_day=1,
                              next_bill_date=D(2026, 3, 1))
    march = billing.generate_invoice_for_customer(customer.id, D(2026, 3, 1))
    assert march.total_cents == 3410

    def on(day: date) -> None:
        monkeypatch.setattr(subscriptions, "today", lambda: day)

    return customer, sub, fibre, march, on


def notes(customer_id: int) -> dict[str, int]:
    return dict(db.session.execute(select(CreditNote.kind, func.sum(CreditNote.amount_cents))
                                   .where(CreditNote.customer_id == customer_id).group_by(CreditNote.kind)).all())


def test_void_after_a_plan_change_credits_only_the_days_before_it(world):
    customer, sub, fibre, march, on = world
    payments.record_payment(customer.id, 3410, "cash", D(2026, 3, 2), D(2026, 3, 2))
    on(D(2026, 3, 17))   # 15 days of Home unused (17–31 March): 1,500 + 150 back; Fibre for them: 3,000 + 300
    subscriptions.change_plan(sub.id, fibre.id)
    change = db.session.scalar(select(Invoice).where(Invoice.id != march.id))
    assert (change.total_cents, notes(customer.id)) == (3300, {"plan_change": 1650})
    assert (change.status, change.credit_applied_cents) == ("open", 1650)   # March was paid: the credit paid half

    note = invoices.void(march.id, "Wrong plan all along", D(2026, 3, 18))

    # March's 1–16 are credited by the void (1,600 + 160); 17–31 were credited by the plan change. The payment
    # comes off March and pays the Fibre invoice; what is left is credit.
    assert (note.subtotal_cents, note.tax_cents, note.amount_cents) == (1600, 160, 1760)
    assert notes(customer.id) == {"plan_change": 1650, "void": 1760}
    assert (march.status, march.credit_applied_cents, march.amount_paid_cents) == ("void", 3410, 0)
    db.session.refresh(change)
    assert (change.status, change.balance_cents) == ("paid", 0)
    # Paid 3,410; owes 3,300 for Fibre's 15 days and nothing for March: 110 is the customer's credit.
    assert customer_balance(customer.id, D(2026, 3, 18)).credit_cents == 110
    assert reconcile() == []


def test_the_plan_change_credit_is_taken_back_from_the_invoice_it_paid(world):
    customer, sub, fibre, march, on = world
    on(D(2026, 3, 17))
    subscriptions.change_plan(sub.id, fibre.id)   # nothing paid: the 1,650 credit goes to March (oldest)
    change = db.session.scalar(select(Invoice).where(Invoice.id != march.id))
    db.session.refresh(march)
    assert march.credit_applied_cents == 1650
    other = invoices.issue(invoices.create_draft(customer.id, [{"description": "Router", "unit_price_cents": 500,
                                                                "tax_rate_bp": 0}], D(2026, 3, 17)).id,
                           D(2026, 3, 17))
    payments.record_payment(customer.id, 1760, "cash", D(2026, 3, 17), D(2026, 3, 17))   # March's rest

    invoices.void(march.id, "Wrong plan all along", D(2026, 3, 18))

    # Owed: Fibre 3,300 + router 500; paid 1,760 (freed from March, now paying the oldest open one).
    balance = customer_balance(customer.id, D(2026, 3, 18))
    assert (balance.owed_cents, balance.credit_cents) == (3300 + 500 - 1760, 0)
    assert {i.status for i in (change, other)} <= {"open", "paid"}
    assert reconcile() == []


def test_a_plan_change_credit_spent_elsewhere_is_moved_back_and_that_invoice_reopens(world):
    customer, sub, fibre, march, on = world
    payments.record_payment(customer.id, 3410, "cash", D(2026, 3, 2), D(2026, 3, 2))
    on(D(2026, 3, 17))
    subscriptions.change_plan(sub.id, fibre.id)   # credit 1,650 pays part of the 3,300 Fibre invoice
    change = db.session.scalar(select(Invoice).where(Invoice.id != march.id))
    payments.record_payment(customer.id, 1650, "cash", D(2026, 3, 17), D(2026, 3, 17))
    db.session.refresh(change)
    assert change.status == "paid"
    moved = db.session.scalar(select(CreditAllocation).where(CreditAllocation.invoice_id == change.id))
    assert moved.amount_cents == 1650

    invoices.void(march.id, "Wrong plan all along", D(2026, 3, 18))

    db.session.refresh(moved)
    assert moved.reversed_at is not None   # the plan-change credit now settles (part of) the void March
    assert db.session.scalar(select(func.sum(CreditAllocation.amount_cents)).where(
        CreditAllocation.invoice_id == march.id, CreditAllocation.reversed_at.is_(None))) == 3410
    # Paid 3,410 + 1,650 = 5,060 against Fibre's 3,300: 1,760 (the void's credit) left over.
    db.session.refresh(change)
    assert (change.status, change.balance_cents) == ("paid", 0)
    assert customer_balance(customer.id, D(2026, 3, 18)).credit_cents == 1760
    assert reconcile() == []


def test_a_back_dated_cancellation_of_the_whole_period_leaves_nothing_to_void(world):
    customer, sub, _, march, on = world
    on(D(2026, 3, 5))
    subscriptions.cancel(sub.id, D(2026, 3, 1))   # never served: all 31 days credited
    assert notes(customer.id) == {"cancellation": 3410}

    with pytest.raises(BusinessRuleViolation, match="already credited"):
        invoices.void(march.id, "Never connected", D(2026, 3, 6))
    assert march.status == "paid"
    assert reconcile() == []


def test_voiding_the_plan_change_invoice_then_cancelling_does_not_credit_its_days_again(world):
    customer, sub, fibre, march, on = world
    payments.record_payment(customer.id, 3410, "cash", D(2026, 3, 2), D(2026, 3, 2))
    on(D(2026, 3, 17))
    subscriptions.change_plan(sub.id, fibre.id)   # Home's 17–31 credited (1,650)
    change = db.session.scalar(select(Invoice).where(Invoice.id != march.id))
    invoices.void(change.id, "Fibre was never installed", D(2026, 3, 18))
    assert notes(customer.id) == {"plan_change": 1650, "void": 3300}

    on(D(2026, 3, 20))
    subscriptions.cancel(sub.id, D(2026, 3, 20))

    # 20–31 March were credited by the plan change, and Fibre's charge for them is void: nothing is left to credit
    # (before, March's line priced them again and a cancellation credit of 1,320 was issued).
    assert "cancellation" not in notes(customer.id)
    assert reconcile() == []


def test_the_void_form_shows_the_netted_credit(world, client, login):
    customer, sub, fibre, march, on = world
    on(D(2026, 3, 17))
    subscriptions.change_plan(sub.id, fibre.id)
    db.session.commit()
    login("billing")

    page = client.get(f"/invoices/{march.id}").get_data(as_text=True)

    assert "A credit note for $17.60 cancels the invoice" in page
    assert "already credited $16.50 of it" in page
