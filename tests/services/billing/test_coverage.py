"""Resume loses nothing (DESIGN §3, issue 11 item 5): only days actually spent suspended go unbilled; periods
that began while active are billed, however late the resume. Coverage (billed periods plus suspended days cover
[start, next_bill_date), no gap, no overlap) holds over random histories."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from isp_admin.extensions import db
from isp_admin.models import InvoiceLine, Subscription, SuspensionPeriod
from isp_admin.services.billing import collections, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.coverage import coverage_problems
from isp_admin.services.billing.invoices import plan_changed_on
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.customers import subscriptions
from tests.conftest import delete_all_rows
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

D = date


def periods(sub_id: int) -> list[tuple[date, date, int]]:
    return list(db.session.execute(
        select(InvoiceLine.period_start, InvoiceLine.period_end, InvoiceLine.amount_cents)
        .where(InvoiceLine.subscription_id == sub_id, InvoiceLine.kind == "subscription")
        .order_by(InvoiceLine.period_start)).tuples())


def on(monkeypatch, day: date) -> None:
    monkeypatch.setattr(subscriptions, "today", lambda: day)


def new_sub(start: date, billing_day: int = 1, price: int = 3000) -> Subscription:
    sub = SubscriptionFactory(plan=PlanFactory(monthly_price_cents=price, tax_rate_bp=0), start_date=start,
                              billing_day=billing_day, next_bill_date=start, billed_from=None)
    db.session.commit()
    return sub


def test_a_resume_bills_the_periods_that_began_while_active(app, monkeypatch):
    sub = new_sub(D(2026, 1, 1))
    billing.generate_invoice_for_customer(sub.customer_id, D(2026, 1, 1))  # January billed on time
    # The runs of 1 Feb and 1 Mar never happened (the scheduler was down); suspended on 10 Mar, resumed 20 May.
    on(monkeypatch, D(2026, 3, 10))
    subscriptions.suspend(sub.id, "vacation")
    db.session.commit()
    on(monkeypatch, D(2026, 5, 20))
    subscriptions.resume(sub.id)
    db.session.commit()
    billing.generate_invoice_for_customer(sub.customer_id, D(2026, 5, 20))
    db.session.commit()

    # February and March began while active: billed in full. April and 1–19 May began suspended: not billed.
    # The rest of May from the resume, 12 of 31 days: 3000 × 12 / 31 = 1161.29 → 1161.
    assert periods(sub.id) == [(D(2026, 1, 1), D(2026, 2, 1), 3000), (D(2026, 2, 1), D(2026, 3, 1), 3000),
                               (D(2026, 3, 1), D(2026, 4, 1), 3000), (D(2026, 5, 20), D(2026, 6, 1), 1161)]
    [period] = db.session.scalars(select(SuspensionPeriod).where(SuspensionPeriod.subscription_id == sub.id))
    assert (period.started_on, period.ended_on, period.reason) == (D(2026, 3, 10), D(2026, 5, 20), "vacation")
    assert coverage_problems() == []
    assert reconcile() == []


def test_a_resume_inside_a_billed_period_bills_nothing_more(app, monkeypatch):
    sub = new_sub(D(2026, 1, 1))
    billing.generate_invoice_for_customer(sub.customer_id, D(2026, 1, 1))
    on(monkeypatch, D(2026, 1, 5))
    subscriptions.suspend(sub.id, "manual")
    on(monkeypatch, D(2026, 1, 25))
    subscriptions.resume(sub.id)
    db.session.commit()

    assert db.session.get(Subscription, sub.id).next_bill_date == D(2026, 2, 1)
    assert periods(sub.id) == [(D(2026, 1, 1), D(2026, 2, 1), 3000)]
    assert reconcile() == []


def test_a_non_payment_reactivation_after_a_late_run_bills_what_began_while_active(app, monkeypatch):
    sub = new_sub(D(2026, 1, 1))
    customer_id = sub.customer_id
    billing.generate_invoice_for_customer(customer_id, D(2026, 1, 1))  # due 15 Jan, unpaid
    db.session.commit()
    # The next run to happen is on 10 Feb: it suspends for non-payment (grace ended 22 Jan) but billed nothing
    # for February first because the chain's billing step had failed that night.
    collections.run_mark_overdue(D(2026, 2, 10))
    collections.run_enforce_overdue(D(2026, 2, 10))
    db.session.commit()
    assert db.session.get(Subscription, sub.id).status == "suspended"

    owed = customer_balance(customer_id, D(2026, 3, 15)).owed_cents
    payments.record_payment(customer_id, owed, "cash", D(2026, 3, 15), D(2026, 3, 15))
    db.session.commit()

    # February began while active (1 Feb < 10 Feb): billed at the reactivation. March began suspended: not billed.
    assert periods(sub.id)[:2] == [(D(2026, 1, 1), D(2026, 2, 1), 3000), (D(2026, 2, 1), D(2026, 3, 1), 3000)]
    assert db.session.get(Subscription, sub.id).next_bill_date == D(2026, 3, 15)
    assert reconcile() == []


def test_billing_while_suspended_leaves_the_bill_date_alone(make_app, monkeypatch):
    from tests.conftest import clean_context

    with clean_context(make_app(BILL_WHILE_SUSPENDED=True)):
        sub = new_sub(D(2026, 1, 1))
        billing.generate_invoice_for_customer(sub.customer_id, D(2026, 1, 1))
        on(monkeypatch, D(2026, 1, 5))
        subscriptions.suspend(sub.id, "vacation")
        billing.generate_invoice_for_customer(sub.customer_id, D(2026, 2, 1))  # billed while suspended
        on(monkeypatch, D(2026, 2, 20))
        subscriptions.resume(sub.id)
        db.session.commit()

        assert db.session.get(Subscription, sub.id).next_bill_date == D(2026, 3, 1)
        assert reconcile() == []


def test_coverage_names_a_gap_an_overlap_and_a_bill_past_the_next_bill_date(app, monkeypatch):
    subs = [new_sub(D(2026, 1, 1)) for _ in range(3)]
    for sub in subs:
        billing.generate_invoice_for_customer(sub.customer_id, D(2026, 2, 1))
    db.session.commit()
    gap, past, _ = subs
    db.session.execute(text("UPDATE subscriptions SET next_bill_date = '2026-03-10' WHERE id = :id"), {"id": gap.id})
    db.session.execute(text("UPDATE subscriptions SET next_bill_date = '2026-02-20' WHERE id = :id"),
                       {"id": past.id})

    found = {(p.subscription_id, p.customer_id, p.problem, p.start, p.end) for p in coverage_problems()}
    assert found == {(gap.id, gap.customer_id, "neither billed nor suspended", D(2026, 3, 1), D(2026, 3, 10)),
                     (past.id, past.customer_id, "billed beyond the next bill date", D(2026, 2, 20), D(2026, 3, 1))}


# --- random histories ---------------------------------------------------------------------------------------------

START = D(2026, 1, 10)
step = st.one_of(
    st.tuples(st.just("advance"), st.integers(1, 50)),
    st.tuples(st.just("run"), st.just(0)),
    st.tuples(st.just("suspend"), st.integers(0, 9), st.sampled_from(("manual", "vacation"))),
    st.tuples(st.just("resume"), st.integers(0, 9)),
    st.tuples(st.just("change_plan"), st.integers(0, 9)),
    st.tuples(st.just("cancel"), st.integers(0, 9), st.integers(0, 20)),
    st.tuples(st.just("pay_all"), st.integers(0, 2)),
    st.tuples(st.just("collect"), st.just(0)),
)


class Story:
    """Suspensions, resumes, plan changes, cancellations, runs and payments, each committed as the edge would."""

    def __init__(self, clock: dict):
        self.clock = clock
        self.plans = [PlanFactory(monthly_price_cents=3000, tax_rate_bp=1600),
                      PlanFactory(monthly_price_cents=4999, tax_rate_bp=0)]
        self.customers = [CustomerFactory() for _ in range(3)]
        for index, day in enumerate((1, 15, 31)):
            SubscriptionFactory(customer=self.customers[index], plan=self.plans[index % 2], start_date=START,
                                billing_day=day, next_bill_date=START, billed_from=None)
        db.session.commit()

    @property
    def today(self) -> date:
        return self.clock["today"]

    def live(self, status: str | None = None) -> list[Subscription]:
        stmt = select(Subscription).where(Subscription.status != "cancelled").order_by(Subscription.id)
        return [s for s in db.session.scalars(stmt) if status is None or s.status == status]

    def advance(self, days: int) -> None:
        self.clock["today"] = self.today + timedelta(days=days)

    def run(self, _: int) -> None:
        for chunk in billing.chunk_ranges(billing.customers_due(self.today), 2):
            billing.bill_customer_range(self.today, chunk)

    def suspend(self, index: int, reason: str) -> None:
        subs = self.live("active")
        if subs:
            subscriptions.suspend(subs[index % len(subs)].id, reason)

    def resume(self, index: int) -> None:
        subs = [s for s in self.live("suspended") if s.suspension_reason != "non_payment"]
        if subs:
            subscriptions.resume(subs[index % len(subs)].id)

    def change_plan(self, index: int) -> None:
        subs = self.live()
        sub = subs[index % len(subs)] if subs else None
        if sub and not plan_changed_on(sub.id, self.today):
            subscriptions.change_plan(sub.id, next(p.id for p in self.plans if p.id != sub.plan_id))

    def cancel(self, index: int, days_back: int) -> None:
        subs = self.live()
        if subs:
            sub = subs[index % len(subs)]
            subscriptions.cancel(sub.id, max(sub.start_date, self.today - timedelta(days=days_back)))

    def pay_all(self, who: int) -> None:
        owed = customer_balance(self.customers[who].id, self.today).net_cents
        if owed > 0:
            payments.record_payment(self.customers[who].id, owed, "cash", self.today, self.today)

    def collect(self, _: int) -> None:
        collections.run_mark_overdue(self.today)
        collections.run_enforce_overdue(self.today)
        collections.run_reactivate_paid(self.today)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(step, min_size=2, max_size=16))
def test_random_suspend_resume_histories_keep_coverage(app, monkeypatch, ops):
    delete_all_rows()
    clock = {"today": START}
    monkeypatch.setattr(subscriptions, "today", lambda: clock["today"])
    story = Story(clock)
    for op in ops:
        getattr(story, op[0])(*op[1:])
        db.session.commit()
        assert coverage_problems() == [], op
        assert reconcile() == [], op
