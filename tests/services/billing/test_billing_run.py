"""The monthly run (DESIGN §3): in advance, catch-up one line per missed period, one invoice per customer,
idempotent, previewable, and safe when two runs race."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Invoice, InvoiceLine, Notification, Subscription
from isp_admin.services.billing import payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.customers import subscriptions
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.threads import in_threads

D = date


def sub_on(plan=None, customer=None, start=D(2026, 3, 1), billing_day=1, **fields) -> Subscription:
    """A subscription whose first bill is due on its start date."""
    return SubscriptionFactory(plan=plan or PlanFactory(monthly_price_cents=3000, tax_rate_bp=1600),
                               customer=customer or CustomerFactory(), start_date=start, billing_day=billing_day,
                               next_bill_date=fields.pop("next_bill_date", start), **fields)


def run(as_of: date, chunk_size: int = 2) -> dict:
    """Run the monthly billing as the job does: customer-id chunks, one transaction each."""
    totals = {"invoices": 0, "lines": 0, "total_cents": 0}
    for chunk in billing.chunk_ranges(billing.customers_due(as_of), chunk_size):
        counts = billing.bill_customer_range(as_of, chunk)
        db.session.commit()
        totals = {key: totals[key] + counts[key] for key in totals}
    return totals


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def lines_of(invoice_id: int) -> list[InvoiceLine]:
    return list(db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id)
                                   .order_by(InvoiceLine.id)))


def invoices_of(customer_id: int) -> list[Invoice]:
    return list(db.session.scalars(select(Invoice).where(Invoice.customer_id == customer_id).order_by(Invoice.id)))


def next_bill(sub_id: int) -> date:
    return db.session.scalar(select(Subscription.next_bill_date).where(Subscription.id == sub_id))


def test_running_twice_for_one_date_bills_once(app):
    subs = [sub_on() for _ in range(5)]

    first = run(D(2026, 3, 1))
    invoices, lines = count(Invoice), count(InvoiceLine)
    second = run(D(2026, 3, 1))

    assert first == {"invoices": 5, "lines": 5, "total_cents": 5 * 3480}
    assert second == {"invoices": 0, "lines": 0, "total_cents": 0}
    assert (count(Invoice), count(InvoiceLine)) == (invoices, lines) == (5, 5)
    assert all(next_bill(s.id) == D(2026, 4, 1) for s in subs)
    numbers = sorted(db.session.scalars(select(Invoice.number)))
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, 6)]
    # Every issued invoice has its audit event and exactly one queued email.
    assert db.session.scalar(select(func.count()).where(AuditEvent.action == "invoice.issue")) == 5
    assert db.session.scalar(select(func.count()).where(Notification.kind == "invoice")) == 5
    assert reconcile() == []


def test_missed_periods_catch_up_one_line_each(app):
    sub = sub_on(start=D(2026, 1, 1))

    run(D(2026, 3, 15))

    [invoice] = invoices_of(sub.customer_id)
    periods = [(line.period_start, line.period_end, line.amount_cents) for line in lines_of(invoice.id)]
    assert periods == [(D(2026, 1, 1), D(2026, 2, 1), 3000), (D(2026, 2, 1), D(2026, 3, 1), 3000),
                       (D(2026, 3, 1), D(2026, 4, 1), 3000)]
    assert (invoice.subtotal_cents, invoice.tax_cents, invoice.total_cents) == (9000, 1440, 10440)
    assert (invoice.issue_date, invoice.due_date) == (D(2026, 3, 15), D(2026, 3, 29))
    assert next_bill(sub.id) == D(2026, 4, 1)


def test_one_invoice_per_customer_with_the_lines_of_all_its_due_subscriptions(app):
    customer, other = CustomerFactory(), CustomerFactory()
    first = sub_on(customer=customer)
    second = sub_on(customer=customer, plan=PlanFactory(monthly_price_cents=5000, tax_rate_bp=0),
                    start=D(2026, 2, 15), billing_day=15)
    not_due = sub_on(customer=customer, start=D(2026, 3, 10), billing_day=10)
    theirs = sub_on(customer=other)

    run(D(2026, 3, 1))

    [invoice] = invoices_of(customer.id)
    assert [(line.subscription_id, line.amount_cents, line.tax_cents) for line in lines_of(invoice.id)] == [
        (first.id, 3000, 480), (second.id, 5000, 0)]
    assert invoice.total_cents == 3480 + 5000
    assert [len(lines_of(i.id)) for i in invoices_of(other.id)] == [1]
    assert lines_of(invoices_of(other.id)[0].id)[0].subscription_id == theirs.id
    assert next_bill(not_due.id) == D(2026, 3, 10)


def test_invoice_totals_equal_the_sum_of_their_lines(app):
    for price, rate, day in ((2999, 1600, 1), (4950, 1650, 17), (1, 1600, 31), (12345, 750, 29)):
        sub_on(plan=PlanFactory(monthly_price_cents=price, tax_rate_bp=rate), start=D(2026, 1, 10),
               billing_day=day)

    run(D(2026, 4, 30))

    for invoice in db.session.scalars(select(Invoice)):
        lines = lines_of(invoice.id)
        assert invoice.subtotal_cents == sum(line.amount_cents for line in lines)
        assert invoice.tax_cents == sum(line.tax_cents for line in lines)
        assert invoice.total_cents == invoice.subtotal_cents + invoice.tax_cents
    assert reconcile() == []


def test_a_pending_subscription_is_billed_and_activated_once_its_start_date_comes(app):
    due = sub_on(status="pending", start=D(2026, 3, 5))
    future = sub_on(status="pending", start=D(2026, 3, 20))

    run(D(2026, 3, 5))

    assert db.session.get(Subscription, due.id).status == "active"
    [line] = lines_of(invoices_of(due.customer_id)[0].id)
    assert (line.period_start, line.period_end, line.amount_cents) == (D(2026, 3, 5), D(2026, 4, 1), 2613)  # 27/31
    assert db.session.get(Subscription, future.id).status == "pending"
    assert invoices_of(future.customer_id) == []


def test_a_suspended_subscription_is_not_billed_by_default(app):
    sub = sub_on(status="suspended", suspension_reason="manual")

    assert run(D(2026, 3, 1))["invoices"] == 0
    assert next_bill(sub.id) == D(2026, 3, 1)


def test_a_suspended_subscription_is_billed_when_configured(make_app):
    from tests.conftest import clean_context

    with clean_context(make_app(BILL_WHILE_SUSPENDED=True)):
        sub = sub_on(status="suspended", suspension_reason="manual")

        assert run(D(2026, 3, 1))["invoices"] == 1
        assert next_bill(sub.id) == D(2026, 4, 1)


def test_a_closed_customer_is_not_billed(app):
    sub = sub_on(customer=CustomerFactory(status="closed"))

    assert run(D(2026, 3, 1))["invoices"] == 0
    assert count(Invoice) == 0 and next_bill(sub.id) == D(2026, 3, 1)


def test_after_a_long_suspension_billing_restarts_on_the_resume_date_prorated(app, monkeypatch):
    sub = sub_on(start=D(2026, 1, 1))
    run(D(2026, 1, 1))
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 1, 20))
    subscriptions.suspend(sub.id, "vacation")
    db.session.commit()
    for month in (2, 3, 4):
        assert run(D(2026, month, 1))["invoices"] == 0
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 4, 10))

    subscriptions.resume(sub.id)
    db.session.commit()
    run(D(2026, 4, 10))

    billed = list(db.session.execute(select(InvoiceLine.period_start, InvoiceLine.period_end, InvoiceLine.amount_cents)
                                     .order_by(InvoiceLine.id)))
    # No catch-up of February and March: only [10 Apr, 1 May), 21 of 30 days.
    assert billed == [(D(2026, 1, 1), D(2026, 2, 1), 3000), (D(2026, 4, 10), D(2026, 5, 1), 2100)]
    assert next_bill(sub.id) == D(2026, 5, 1)


def test_the_setup_fee_is_on_the_first_bill_only(app):
    sub = sub_on(plan=PlanFactory(monthly_price_cents=3000, setup_fee_cents=5000, tax_rate_bp=1600),
                 start=D(2026, 3, 10))

    run(D(2026, 3, 10))
    run(D(2026, 4, 1))
    run(D(2026, 5, 1))

    first, second, third = invoices_of(sub.customer_id)
    assert [(line.kind, line.amount_cents, line.tax_cents) for line in lines_of(first.id)] == [
        ("subscription", 2129, 341), ("setup_fee", 5000, 800)]  # 22/31 of March, then the fee
    assert first.total_cents == 2129 + 341 + 5000 + 800
    assert [(line.kind, line.amount_cents) for line in lines_of(second.id)] == [("subscription", 3000)]
    assert [(line.kind, line.amount_cents) for line in lines_of(third.id)] == [("subscription", 3000)]


def test_the_setup_fee_is_not_lost_when_the_first_bill_comes_after_a_resume(app, monkeypatch):
    sub = sub_on(plan=PlanFactory(monthly_price_cents=3000, setup_fee_cents=5000, tax_rate_bp=0))
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 3, 1))
    subscriptions.suspend(sub.id, "manual")  # before the first run ever billed it
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 3, 10))
    subscriptions.resume(sub.id)
    db.session.commit()

    run(D(2026, 3, 10))

    [invoice] = invoices_of(sub.customer_id)
    assert [(line.kind, line.amount_cents) for line in lines_of(invoice.id)] == [
        ("subscription", 2129), ("setup_fee", 5000)]


def test_earlier_credit_pays_the_new_invoice_automatically(app):
    covered = sub_on()
    partly = sub_on()
    payments.record_payment(covered.customer_id, 5000, "cash", D(2026, 2, 20), D(2026, 2, 20))
    payments.record_payment(partly.customer_id, 1000, "cash", D(2026, 2, 20), D(2026, 2, 20))
    db.session.commit()

    run(D(2026, 3, 1))

    [paid] = invoices_of(covered.customer_id)
    assert (paid.status, paid.amount_paid_cents, paid.balance_cents) == ("paid", 3480, 0)
    assert paid.paid_at is not None
    [still_open] = invoices_of(partly.customer_id)
    assert (still_open.status, still_open.amount_paid_cents, still_open.balance_cents) == ("open", 1000, 2480)
    # The rest of the overpayment stays credit for the next invoice.
    from isp_admin.services.billing.ledger import customer_balance

    assert customer_balance(covered.customer_id, D(2026, 3, 1)).credit_cents == 5000 - 3480
    assert reconcile() == []


def test_a_free_subscription_is_billed_on_a_paid_zero_invoice(app):
    sub = sub_on(plan=PlanFactory(monthly_price_cents=0, tax_rate_bp=1600))

    run(D(2026, 3, 1))

    # Nothing is owed, so nothing may sit "open" waiting for a payment that will never come.
    [invoice] = invoices_of(sub.customer_id)
    assert (invoice.total_cents, invoice.status) == (0, "paid")
    assert next_bill(sub.id) == D(2026, 4, 1)
    assert reconcile() == []


def _planned(plan) -> list[tuple]:
    return sorted((invoice.customer_id, line.subscription_id, line.kind, line.period_start, line.period_end,
                   line.amount_cents, line.tax_cents, invoice.total_cents)
                  for invoice in plan.invoices for line in invoice.lines)


def _written() -> list[tuple]:
    rows = db.session.execute(
        select(Invoice.customer_id, InvoiceLine.subscription_id, InvoiceLine.kind, InvoiceLine.period_start,
               InvoiceLine.period_end, InvoiceLine.amount_cents, InvoiceLine.tax_cents, Invoice.total_cents)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id))
    return sorted(tuple(row) for row in rows)


def test_the_dry_run_lists_exactly_what_the_run_writes_and_writes_nothing(app):
    fee_plan = PlanFactory(monthly_price_cents=4900, setup_fee_cents=2500, tax_rate_bp=1600)
    customer = CustomerFactory()
    sub_on(customer=customer, start=D(2026, 1, 20), billing_day=31)
    sub_on(customer=customer, plan=fee_plan, start=D(2026, 3, 3), billing_day=3, status="pending")
    sub_on(start=D(2026, 2, 1))
    sub_on(start=D(2026, 3, 4))  # not due yet
    sub_on(status="suspended", suspension_reason="manual")
    sub_on(customer=CustomerFactory(status="closed"))
    before = (count(Invoice), count(InvoiceLine), count(Notification), count(AuditEvent))

    preview = billing.plan_invoices(D(2026, 3, 3))
    db.session.rollback()

    assert (count(Invoice), count(InvoiceLine), count(Notification), count(AuditEvent)) == before
    assert db.session.scalar(select(func.count()).where(Subscription.status == "pending")) == 1
    run(D(2026, 3, 3))
    assert _planned(preview) == _written()
    assert sorted(i.customer_id for i in preview.invoices) == sorted(db.session.scalars(select(Invoice.customer_id)))
    assert preview.total_cents == db.session.scalar(select(func.sum(Invoice.total_cents)))
    assert len(_written()) == 3 + 2 + 2  # three periods of day 31; the pending one and its fee; Feb and Mar


def test_generate_invoice_for_one_customer_returns_none_when_nothing_is_due(app):
    sub = sub_on()

    invoice = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 3, 1))
    again = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 3, 1))

    assert invoice.number == "INV-2026-000001" and invoice.total_cents == 3480
    assert again is None


# --- two runs at once -----------------------------------------------------------------------------------------

def _seed_concurrent(n_customers: int = 12) -> tuple[int, int]:
    for _ in range(n_customers):
        customer = CustomerFactory()
        sub_on(customer=customer, start=D(2026, 1, 1))
        sub_on(customer=customer, start=D(2026, 2, 14), billing_day=14)
    db.session.commit()
    ids = list(db.session.scalars(select(Customer.id).order_by(Customer.id)))
    db.session.remove()  # the threads must not wait behind this session
    return ids[0], ids[-1]


def _assert_billed_once(n_customers: int) -> None:
    db.session.expire_all()
    keys = list(db.session.execute(select(InvoiceLine.subscription_id, InvoiceLine.period_start)))
    assert len(keys) == len(set(keys)) == n_customers * (3 + 2)  # Jan–Mar on day 1; Feb, Mar on day 14
    assert count(Invoice) == n_customers
    numbers = sorted(db.session.scalars(select(Invoice.number)))
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, n_customers + 1)]
    assert set(db.session.scalars(select(Subscription.next_bill_date))) == {D(2026, 4, 1), D(2026, 4, 14)}
    assert reconcile() == []


@pytest.fixture
def postgres(app):
    """The app, on PostgreSQL: row locks and concurrent writers need it."""
    if not is_postgres():
        pytest.skip("needs PostgreSQL")
    return app


def test_two_runs_at_once_bill_each_period_once(postgres):
    first, last = _seed_concurrent()

    results = in_threads(postgres, *[lambda: billing.bill_customer_range(D(2026, 3, 20), (first, last))] * 2)

    assert not any(isinstance(r, Exception) for r in results), results
    # FOR UPDATE makes the second run wait for the first, then find nothing due.
    assert sorted(r["invoices"] for r in results) == [0, 12]
    assert sorted(r["lines"] for r in results) == [0, 60]
    _assert_billed_once(12)


def test_if_two_unlocked_plans_race_the_unique_key_fails_the_loser_cleanly(postgres):
    first, last = _seed_concurrent()

    def unlocked_run():
        # What a run would do if the row locks were bypassed: the UNIQUE(subscription, period) is the last word.
        plan = billing.plan_invoices(D(2026, 3, 20), customer_range=(first, last))
        return billing.write_invoices(plan, D(2026, 3, 20))

    results = in_threads(postgres, unlocked_run, unlocked_run)

    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1, results
    assert "uq_invoice_lines_subscription_period" in str(failures[0]) or isinstance(failures[0], IntegrityError)
    # The loser rolled back whole (its numbers too), and a retry finds nothing due.
    assert billing.bill_customer_range(D(2026, 3, 20), (first, last))["invoices"] == 0
    db.session.commit()
    _assert_billed_once(12)
