"""Payments and the ledger (DESIGN §3): allocation order, partial and over-payments, idempotency, reversal,
and reactivation the moment nothing is overdue any more."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid
from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Notification, Payment, PaymentAllocation, Subscription
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.billing.reconcile import reconcile
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, SubscriptionFactory
from tests.support.threads import in_threads

D = date


def issued(customer_id: int, cents: int, day: date) -> Invoice:
    """An issued, untaxed invoice of `cents`, due 14 days after `day`."""
    draft = invoices.create_draft(customer_id, [{"description": "Service", "quantity": 1, "unit_price_cents": cents,
                                                 "tax_rate_bp": 0}], day)
    return invoices.issue(draft.id, day)


def pay(customer_id: int, cents: int, today: date, **kw) -> Payment:
    payment, created = payments.record_payment(customer_id, cents, kw.pop("method", "bank_transfer"), today, today,
                                               **kw)
    assert created
    return payment


def allocations(payment_id: int) -> list[tuple[int, int, bool]]:
    """(invoice id, cents, still active) for each allocation of a payment."""
    return [(a.invoice_id, a.amount_cents, a.reversed_at is None) for a, _ in payments.allocations_of(payment_id)]


def state(invoice: Invoice) -> tuple[str, int, int]:
    db.session.refresh(invoice)
    return invoice.status, invoice.amount_paid_cents, invoice.balance_cents


@pytest.fixture
def customer(app):
    return CustomerFactory()


@pytest.fixture
def three_invoices(customer):
    """Invoices of 1000, 2000 and 4000 due 15 Jan, 15 Feb and 15 Mar."""
    return [issued(customer.id, 1000, D(2026, 1, 1)), issued(customer.id, 2000, D(2026, 2, 1)),
            issued(customer.id, 4000, D(2026, 3, 1))]


def test_a_payment_goes_to_the_named_invoice_first_then_the_oldest_due(customer, three_invoices):
    oldest, middle, newest = three_invoices

    payment = pay(customer.id, 4500, D(2026, 3, 2), invoice_id=newest.id)

    assert allocations(payment.id) == [(newest.id, 4000, True), (oldest.id, 500, True)]
    assert state(newest) == ("paid", 4000, 0)
    assert state(oldest) == ("overdue", 500, 500)
    assert state(middle) == ("open", 0, 2000)  # untouched: the nightly step marks it overdue
    assert reconcile() == []


def test_without_a_named_invoice_the_oldest_due_date_comes_first(customer, three_invoices):
    oldest, middle, newest = three_invoices

    payment = pay(customer.id, 2500, D(2026, 3, 2))

    assert allocations(payment.id) == [(oldest.id, 1000, True), (middle.id, 1500, True)]
    assert [state(i)[0] for i in three_invoices] == ["paid", "overdue", "open"]


def test_partial_payments_add_up_to_paid(customer):
    invoice = issued(customer.id, 1000, D(2026, 3, 1))

    pay(customer.id, 300, D(2026, 3, 2))
    assert state(invoice) == ("open", 300, 700)
    assert invoice.paid_at is None
    pay(customer.id, 700, D(2026, 3, 3))

    assert state(invoice) == ("paid", 1000, 0)
    assert invoice.paid_at is not None
    assert customer_balance(customer.id, D(2026, 3, 3)).net_cents == 0


def test_an_overpayment_becomes_credit_that_pays_the_next_invoice(customer):
    first = issued(customer.id, 1000, D(2026, 3, 1))

    payment = pay(customer.id, 1500, D(2026, 3, 2))
    balance = customer_balance(customer.id, D(2026, 3, 2))
    assert (balance.owed_cents, balance.credit_cents, balance.net_cents) == (0, 500, -500)
    second = issued(customer.id, 800, D(2026, 4, 1))

    assert allocations(payment.id) == [(first.id, 1000, True), (second.id, 500, True)]
    assert state(second) == ("open", 500, 300)
    assert customer_balance(customer.id, D(2026, 4, 1)).credit_cents == 0
    assert reconcile() == []


def test_a_payment_with_nothing_to_pay_is_all_credit(customer):
    payment = pay(customer.id, 2000, D(2026, 3, 2))

    assert allocations(payment.id) == []
    assert customer_balance(customer.id, D(2026, 3, 2)).credit_cents == 2000


@pytest.mark.parametrize(("amount", "received_on", "field"), [
    pytest.param(0, D(2026, 3, 1), "amount_cents", id="zero"),
    pytest.param(-5, D(2026, 3, 1), "amount_cents", id="negative"),
    pytest.param(10**12, D(2026, 3, 1), "amount_cents", id="huge"),
    pytest.param(100, D(2026, 3, 2), "received_on", id="future"),
])
def test_a_bad_payment_is_refused(customer, amount, received_on, field):
    with pytest.raises(Invalid) as refused:
        payments.record_payment(customer.id, amount, "cash", received_on, D(2026, 3, 1))
    assert field in refused.value.details
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 0


# --- idempotency -----------------------------------------------------------------------------------------------

def test_a_retry_with_the_same_key_returns_the_first_payment(customer):
    issued(customer.id, 1000, D(2026, 3, 1))
    first, created = payments.record_payment(customer.id, 600, "card", D(2026, 3, 2), D(2026, 3, 2),
                                             idempotency_key="abc", reference="R1")
    again, created_again = payments.record_payment(customer.id, 600, "card", D(2026, 3, 2), D(2026, 3, 2),
                                                   idempotency_key="abc", reference="R1")

    assert (created, created_again, again.id) == (True, False, first.id)
    assert db.session.scalar(select(func.sum(PaymentAllocation.amount_cents))) == 600


def test_the_same_key_with_a_different_amount_is_a_conflict(customer):
    payments.record_payment(customer.id, 600, "card", D(2026, 3, 2), D(2026, 3, 2), idempotency_key="abc")

    with pytest.raises(Conflict):
        payments.record_payment(customer.id, 700, "card", D(2026, 3, 2), D(2026, 3, 2), idempotency_key="abc")
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1


def test_the_same_key_in_another_scope_is_another_payment(customer):
    payments.record_payment(customer.id, 600, "card", D(2026, 3, 2), D(2026, 3, 2), idempotency_key="abc")
    _, created = payments.record_payment(customer.id, 600, "card", D(2026, 3, 2), D(2026, 3, 2),
                                         idempotency_key="abc", idempotency_scope="token:7")
    assert created


def test_a_provider_reference_is_recorded_once(customer):
    pay(customer.id, 600, D(2026, 3, 2), method="provider", provider="mpesa", provider_ref="QX1")
    db.session.commit()

    with pytest.raises(Conflict):
        payments.record_payment(customer.id, 600, "provider", D(2026, 3, 2), D(2026, 3, 2), provider="mpesa",
                                provider_ref="QX1")
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1


def test_two_concurrent_requests_with_one_key_make_one_payment(app, customer):
    if not is_postgres():
        pytest.skip("concurrent writers need PostgreSQL")
    issued(customer.id, 1000, D(2026, 3, 1))
    db.session.commit()
    customer_id = customer.id
    db.session.remove()

    def attempt():
        payment, created = payments.record_payment(customer_id, 400, "card", D(2026, 3, 2), D(2026, 3, 2),
                                                   idempotency_key="retry-1", reference="R")
        return payment.id, created

    results = in_threads(app, attempt, attempt)

    assert not any(isinstance(r, Exception) for r in results), results
    assert sorted(created for _, created in results) == [False, True]
    assert len({payment_id for payment_id, _ in results}) == 1
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1
    assert db.session.scalar(select(Invoice.amount_paid_cents)) == 400


# --- reversal --------------------------------------------------------------------------------------------------

def test_a_reversal_undoes_only_its_own_allocations_and_reopens_the_invoices(customer):
    january = issued(customer.id, 1000, D(2026, 1, 1))   # due 15 Jan
    march = issued(customer.id, 2000, D(2026, 3, 1))     # due 15 Mar
    bounced = pay(customer.id, 1500, D(2026, 3, 2))      # Jan in full, 500 of March
    good = pay(customer.id, 1500, D(2026, 3, 3))         # the rest of March, 0 left
    assert [state(i)[0] for i in (january, march)] == ["paid", "paid"]
    good_before = allocations(good.id)

    payments.reverse_payment(bounced.id, "Cheque bounced", D(2026, 3, 4))

    assert db.session.get(Payment, bounced.id).status == "reversed"
    assert allocations(bounced.id) == [(january.id, 1000, False), (march.id, 500, False)]
    assert allocations(good.id) == good_before == [(march.id, 1500, True)]
    assert state(january) == ("overdue", 0, 1000)  # past its due date
    assert state(march) == ("open", 1500, 500)
    assert january.paid_at is None
    assert reconcile() == []
    with pytest.raises(BusinessRuleViolation):
        payments.reverse_payment(bounced.id, "again", D(2026, 3, 4))


def test_after_a_reversal_the_customers_other_credit_pays_the_reopened_invoice(customer):
    invoice = issued(customer.id, 1000, D(2026, 3, 1))
    bounced = pay(customer.id, 1000, D(2026, 3, 2))
    spare = pay(customer.id, 700, D(2026, 3, 3))  # nothing open: all credit
    assert allocations(spare.id) == []

    payments.reverse_payment(bounced.id, "Bounced", D(2026, 3, 4))

    # The spare credit is not left idle while the customer is chased for the reopened invoice.
    assert allocations(spare.id) == [(invoice.id, 700, True)]
    assert state(invoice) == ("open", 700, 300)
    balance = customer_balance(customer.id, D(2026, 3, 4))
    assert (balance.owed_cents, balance.credit_cents) == (300, 0)
    assert reconcile() == []


def test_a_reversal_needs_a_reason(customer):
    payment = pay(customer.id, 100, D(2026, 3, 2))
    with pytest.raises(Invalid):
        payments.reverse_payment(payment.id, "  ", D(2026, 3, 2))


def test_a_payment_into_a_void_or_paid_invoice_is_refused(customer):
    voided = issued(customer.id, 1000, D(2026, 3, 1))
    invoices.void(voided.id, "Duplicate", D(2026, 3, 1))
    paid = issued(customer.id, 500, D(2026, 3, 1))
    pay(customer.id, 500, D(2026, 3, 1))
    theirs = issued(CustomerFactory().id, 500, D(2026, 3, 1))

    for invoice in (voided, paid):
        with pytest.raises(BusinessRuleViolation):
            payments.record_payment(customer.id, 100, "cash", D(2026, 3, 2), D(2026, 3, 2), invoice_id=invoice.id)
    with pytest.raises(Invalid):
        payments.record_payment(customer.id, 100, "cash", D(2026, 3, 2), D(2026, 3, 2), invoice_id=theirs.id)


# --- reactivation ------------------------------------------------------------------------------------------------

@pytest.fixture
def cut_off(customer):
    """The customer is suspended for non-payment of two overdue invoices (1000 and 2000)."""
    sub = SubscriptionFactory(customer=customer, status="suspended", suspension_reason="non_payment",
                              start_date=D(2026, 1, 1), billing_day=1, next_bill_date=D(2026, 3, 1))
    customer.status = "suspended"
    invoices_ = [issued(customer.id, 1000, D(2026, 1, 1)), issued(customer.id, 2000, D(2026, 2, 1))]
    db.session.commit()
    return sub, invoices_


def test_paying_the_overdue_balance_reactivates_in_the_same_transaction(customer, cut_off):
    sub, _ = cut_off

    pay(customer.id, 3000, D(2026, 3, 10))

    # Not yet committed: the reactivation is part of the payment's own transaction.
    assert (sub.status, sub.suspension_reason) == ("active", None)
    assert sub.next_bill_date == D(2026, 3, 10)  # the suspended period restarts today, prorated
    assert db.session.get(Customer, customer.id).status == "active"
    assert db.session.scalar(select(func.count()).where(Notification.kind == "reactivation")) == 1
    db.session.rollback()
    assert db.session.get(Subscription, sub.id).status == "suspended"


def test_a_partial_payment_that_leaves_something_overdue_does_not_reactivate(customer, cut_off):
    sub, (older, newer) = cut_off

    pay(customer.id, 1000, D(2026, 3, 10))   # clears the older one only
    pay(customer.id, 1999, D(2026, 3, 10))   # one cent still overdue
    db.session.commit()

    assert state(older)[0] == "paid" and state(newer) == ("overdue", 1999, 1)
    assert db.session.get(Subscription, sub.id).status == "suspended"
    pay(customer.id, 1, D(2026, 3, 10))
    assert db.session.get(Subscription, sub.id).status == "active"


def test_reactivation_only_needs_the_overdue_part_paid(customer, cut_off):
    sub, _ = cut_off
    issued(customer.id, 5000, D(2026, 3, 9))   # not due until 23 March

    pay(customer.id, 3000, D(2026, 3, 10))

    assert db.session.get(Subscription, sub.id).status == "active"
    assert customer_balance(customer.id, D(2026, 3, 10)).owed_cents == 5000


@pytest.mark.parametrize("reason", ["manual", "vacation"])
def test_a_payment_never_ends_a_manual_or_vacation_suspension(customer, reason):
    sub = SubscriptionFactory(customer=customer, status="suspended", suspension_reason=reason)
    issued(customer.id, 1000, D(2026, 1, 1))

    pay(customer.id, 5000, D(2026, 3, 10))

    assert (sub.status, sub.suspension_reason) == ("suspended", reason)
