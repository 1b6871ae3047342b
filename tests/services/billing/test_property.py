"""Random histories of billing, payments, reversals, voids, cancellations, plan changes and collections keep the
books consistent after every step: totals equal their lines, cached sums equal their allocations, reconcile is
clean, and every customer's balance equals what was invoiced less what was paid and credited."""
from __future__ import annotations

from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import (
    CreditAllocation,
    CreditNote,
    Customer,
    Invoice,
    InvoiceLine,
    Payment,
    PaymentAllocation,
    Subscription,
)
from isp_admin.services.billing import collections, invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.invoices import plan_changed_on
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.customers import subscriptions
from tests.conftest import delete_all_rows
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

START = date(2026, 1, 10)
CUSTOMERS = 2

step = st.one_of(
    st.tuples(st.just("advance"), st.integers(1, 45)),
    st.tuples(st.just("bill"), st.integers(0, CUSTOMERS - 1)),
    st.tuples(st.just("pay"), st.integers(0, CUSTOMERS - 1), st.integers(1, 9000), st.booleans()),
    st.tuples(st.just("reverse"), st.integers(0, 99)),
    st.tuples(st.just("void"), st.integers(0, 99)),
    st.tuples(st.just("cancel"), st.integers(0, 99), st.integers(0, 40)),
    st.tuples(st.just("add"), st.integers(0, CUSTOMERS - 1), st.integers(1, 31), st.integers(-20, 20)),
    st.tuples(st.just("change_plan"), st.integers(0, 99)),
    st.tuples(st.just("collect"), st.just(0)),
    st.tuples(st.just("suspend"), st.integers(0, 99), st.sampled_from(("manual", "vacation"))),
    st.tuples(st.just("resume"), st.integers(0, 99)),
)


def _pick(rows: list, index: int):
    return rows[index % len(rows)] if rows else None


class History:
    """Applies one random step through the services, as the edge would (one transaction, committed)."""

    def __init__(self, clock: dict):
        self.clock = clock
        self.customers = [CustomerFactory() for _ in range(CUSTOMERS)]
        self.plans = [PlanFactory(monthly_price_cents=3000, setup_fee_cents=1000, tax_rate_bp=1600),
                      PlanFactory(monthly_price_cents=4999, tax_rate_bp=1650),
                      PlanFactory(monthly_price_cents=0, tax_rate_bp=1600)]
        for index, customer in enumerate(self.customers):
            SubscriptionFactory(customer=customer, plan=self.plans[index], start_date=START, billing_day=index + 1,
                                next_bill_date=START)
        db.session.commit()

    @property
    def today(self) -> date:
        return self.clock["today"]

    def apply(self, op: tuple) -> None:
        getattr(self, op[0])(*op[1:])
        db.session.commit()

    def advance(self, days: int) -> None:
        self.clock["today"] = self.today + timedelta(days=days)

    def bill(self, who: int) -> None:
        billing.generate_invoice_for_customer(self.customers[who].id, self.today)

    def pay(self, who: int, cents: int, targeted: bool) -> None:
        customer_id = self.customers[who].id
        target = None
        if targeted:
            target = db.session.scalar(select(Invoice.id).where(
                Invoice.customer_id == customer_id, Invoice.status.in_(("open", "overdue")))
                .order_by(Invoice.id.desc()))
        payments.record_payment(customer_id, cents, "cash", self.today, self.today, invoice_id=target)

    def reverse(self, index: int) -> None:
        payment_id = _pick(list(db.session.scalars(select(Payment.id).where(Payment.status == "completed")
                                                   .order_by(Payment.id))), index)
        if payment_id:
            payments.reverse_payment(payment_id, "Bounced", self.today)

    def void(self, index: int) -> None:
        invoice_id = _pick(list(db.session.scalars(select(Invoice.id).where(
            Invoice.status.in_(("open", "overdue", "paid")), Invoice.total_cents > 0).order_by(Invoice.id))), index)
        if invoice_id:
            try:
                invoices.void(invoice_id, "Mistake", self.today)
            except BusinessRuleViolation as refused:   # every day it bills was credited already
                assert "already credited" in str(refused)

    def _live(self, index: int) -> Subscription | None:
        return _pick(list(db.session.scalars(select(Subscription).where(
            Subscription.status != "cancelled", Subscription.start_date <= self.today).order_by(Subscription.id))),
            index)

    def cancel(self, index: int, days_back: int) -> None:
        sub = self._live(index)
        if sub:
            subscriptions.cancel(sub.id, max(sub.start_date, self.today - timedelta(days=days_back)))

    def change_plan(self, index: int) -> None:
        sub = self._live(index)
        # One plan change per subscription per day (the line key): a second one is refused, tested elsewhere.
        if sub and not plan_changed_on(sub.id, self.today):
            subscriptions.change_plan(sub.id, next(p.id for p in self.plans if p.id != sub.plan_id))

    def suspend(self, index: int, reason: str) -> None:
        sub = _pick([s for s in self._all_live() if s.status == "active"], index)
        if sub:
            subscriptions.suspend(sub.id, reason)

    def resume(self, index: int) -> None:
        sub = _pick([s for s in self._all_live() if s.status == "suspended" and s.suspension_reason != "non_payment"],
                    index)
        if sub:
            subscriptions.resume(sub.id)

    def _all_live(self) -> list[Subscription]:
        return list(db.session.scalars(select(Subscription).where(Subscription.status != "cancelled")
                                       .order_by(Subscription.id)))

    def add(self, who: int, billing_day: int, offset: int) -> None:
        subscriptions.add_subscription(self.customers[who].id, self.plans[(billing_day + who) % 3].id,
                                       self.today + timedelta(days=offset), billing_day=billing_day)

    def collect(self, _unused: int) -> None:
        collections.run_mark_overdue(self.today)
        collections.run_enforce_overdue(self.today)
        collections.run_reactivate_paid(self.today)


def _grouped(key, *sums, where=()) -> dict:
    rows = db.session.execute(select(key, *[func.sum(x) for x in sums]).where(*where).group_by(key))
    return {row[0]: tuple(row[1:]) for row in rows}


def assert_books_consistent(today: date) -> None:
    """The invariants every step must keep (computed set-based, independently of reconcile)."""
    lines = _grouped(InvoiceLine.invoice_id, InvoiceLine.amount_cents, InvoiceLine.tax_cents)
    paid = _grouped(PaymentAllocation.invoice_id, PaymentAllocation.amount_cents,
                    where=[PaymentAllocation.reversed_at.is_(None)])
    credit = _grouped(CreditAllocation.invoice_id, CreditAllocation.amount_cents,
                      where=[CreditAllocation.reversed_at.is_(None)])
    for invoice in db.session.execute(select(Invoice.id, Invoice.subtotal_cents, Invoice.tax_cents,
                                             Invoice.total_cents, Invoice.amount_paid_cents,
                                             Invoice.credit_applied_cents)):
        amount, tax = lines[invoice.id]
        assert (invoice.subtotal_cents, invoice.tax_cents, invoice.total_cents) == (amount, tax, amount + tax)
        assert invoice.amount_paid_cents == paid.get(invoice.id, (0,))[0]
        assert invoice.credit_applied_cents == credit.get(invoice.id, (0,))[0]
    assert reconcile() == []
    invoiced = _grouped(Invoice.customer_id, Invoice.total_cents, where=[Invoice.status != "draft"])
    received = _grouped(Payment.customer_id, Payment.amount_cents, where=[Payment.status == "completed"])
    credited = _grouped(CreditNote.customer_id, CreditNote.amount_cents)
    for customer_id in db.session.scalars(select(Customer.id)):
        expected = sum(table.get(customer_id, (0,))[0] * sign
                       for table, sign in ((invoiced, 1), (received, -1), (credited, -1)))
        balance = customer_balance(customer_id, today)
        assert balance.net_cents == expected
        # No day is credited twice: whatever was voided, cancelled or changed, credit never exceeds the invoices.
        assert credited.get(customer_id, (0,))[0] <= invoiced.get(customer_id, (0,))[0]
        # Credit is always applied: nobody is chased for an invoice their own unapplied money would pay.
        assert balance.credit_cents == 0 or balance.owed_cents == 0, balance
    # A subscription is never billed twice for one day, whatever the order of suspensions and runs.
    periods: dict[int, list[tuple[date, date]]] = {}
    for sub_id, start, end in db.session.execute(
            select(InvoiceLine.subscription_id, InvoiceLine.period_start, InvoiceLine.period_end)
            .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
            .where(InvoiceLine.kind == "subscription", Invoice.status != "void")
            .order_by(InvoiceLine.subscription_id, InvoiceLine.period_start)):
        previous = periods.setdefault(sub_id, [])
        assert not previous or previous[-1][1] <= start, (sub_id, previous[-1], (start, end))
        previous.append((start, end))


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(step, min_size=1, max_size=12))
def test_random_histories_keep_the_books_consistent(app, monkeypatch, ops):
    delete_all_rows()
    clock = {"today": START}
    monkeypatch.setattr(subscriptions, "today", lambda: clock["today"])
    history = History(clock)
    for op in ops:
        history.apply(op)
        assert_books_consistent(history.today)
