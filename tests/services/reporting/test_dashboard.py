"""The dashboard's figures for a built world, to the cent: aging at the exact bucket boundaries, collections today
and this month with a reversal left out, the MRR trend by period month, customers suspended for non-payment, and
the operational counts (last nightly run, failed emails, CoA failures, the last mismatch check)."""
from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from isp_admin.extensions import db
from isp_admin.models import CoaRequest, Invoice, InvoiceLine, JobRun, Notification, Payment
from isp_admin.services.reporting.dashboard import TREND_MONTHS, dashboard_figures, mrr_trend, operations
from isp_admin.services.reporting.reports import ar_aging
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

AS_OF = date(2026, 3, 15)
NOON = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
_numbers = itertools.count(1)

# (days past due, total, paid, credit applied) of each open invoice, and the bucket it must land in.
OPEN = {
    "ann": [(-5, 10_000, 0, 0), (0, 20_000, 5_000, 0), (1, 100, 0, 0)],
    "ben": [(30, 200, 0, 0), (31, 400, 0, 0), (60, 800, 0, 0), (61, 1_600, 0, 0), (90, 3_200, 0, 0)],
    "cat": [(91, 6_400, 0, 0), (400, 12_800, 0, 800)],
}
BUCKETS = {"current": (10_000 + 15_000, 2), "days_1_30": (100 + 200, 2), "days_31_60": (400 + 800, 2),
           "days_61_90": (1_600 + 3_200, 2), "days_over_90": (6_400 + 12_000, 2)}


def invoice(customer, *, due: date, total: int, status: str = "open", paid: int = 0, credit: int = 0,
            issued: date | None = None) -> Invoice:
    """An invoice row as the ledger would hold it (numbered unless a draft), added to the session."""
    issued = issued or min(due, AS_OF) - timedelta(days=14)
    row = Invoice(number=None if status == "draft" else f"INV-2026-{next(_numbers):06d}", customer_id=customer.id,
                  status=status, issue_date=issued, due_date=due, currency="USD", subtotal_cents=total,
                  tax_cents=0, total_cents=total, amount_paid_cents=paid, credit_applied_cents=credit,
                  paid_at=NOON if status == "paid" else None, voided_at=NOON if status == "void" else None)
    db.session.add(row)
    db.session.flush()
    return row


def payment(customer, cents: int, on: date, status: str = "completed") -> None:
    db.session.add(Payment(customer_id=customer.id, amount_cents=cents, currency="USD", method="cash",
                           received_on=on, status=status, recorded_by="test@isp.example",
                           reversed_at=NOON if status == "reversed" else None))


def billed_line(sub, inv: Invoice, period_start: date, cents: int, kind: str = "subscription") -> None:
    """The one line of `inv`: a charge for the period of `sub` starting on `period_start`."""
    db.session.add(InvoiceLine(invoice_id=inv.id, subscription_id=sub.id, kind=kind, description="Service",
                               period_start=period_start, period_end=period_start + timedelta(days=28),
                               quantity=1, unit_price_cents=cents, amount_cents=cents, tax_rate_bp=0, tax_cents=0))


def build_world() -> dict:
    """Invoices, payments, billed lines and subscriptions whose dashboard figures are known by hand."""
    home = PlanFactory(name="Home 25", monthly_price_cents=2900)
    fibre = PlanFactory(name="Fibre 100", monthly_price_cents=5500)
    people = {name: CustomerFactory(name=name.title()) for name in ("ann", "ben", "cat", "dan")}
    for name, rows in OPEN.items():
        for days, total, paid, credit in rows:
            invoice(people[name], due=AS_OF - timedelta(days=days), total=total, paid=paid, credit=credit,
                    status="overdue" if days > 0 else "open")
    dan = people["dan"]
    # Owe nothing as of AS_OF: paid, void, a draft, and one issued the day after.
    invoice(dan, due=date(2025, 12, 1), total=9_000, status="paid", paid=9_000)
    invoice(dan, due=date(2025, 12, 1), total=9_500, status="void", credit=9_500)
    invoice(dan, due=date(2026, 3, 1), total=9_700, status="draft")
    invoice(dan, due=date(2026, 3, 30), total=50_000, issued=AS_OF + timedelta(days=1))

    payment(people["ann"], 1_000, AS_OF)
    payment(people["ann"], 5_000, AS_OF, status="reversed")      # bounced: never collected
    payment(people["ben"], 2_000, AS_OF - timedelta(days=1))      # this month, not today
    payment(people["cat"], 300, date(2026, 3, 1))                  # the month's first day
    payment(people["cat"], 7_000, date(2026, 2, 28))               # last month
    payment(dan, 900, AS_OF + timedelta(days=1))                   # tomorrow

    # MRR now: active subscriptions only, price overrides count, suspended ones do not.
    s1 = SubscriptionFactory(customer=people["ann"], plan=home)                              # 29.00
    s2 = SubscriptionFactory(customer=people["ben"], plan=fibre, price_override_cents=5000)  # 50.00
    SubscriptionFactory(customer=people["cat"], plan=fibre, status="pending")
    # Suspended for non-payment: dan (whole account) counts; cat's account is still active (another live
    # subscription), and a vacation does not count.
    dan.status = "suspended"
    SubscriptionFactory(customer=dan, plan=home, status="suspended", suspension_reason="non_payment")
    SubscriptionFactory(customer=people["cat"], plan=home, status="suspended", suspension_reason="non_payment")
    s3 = SubscriptionFactory(customer=people["cat"], plan=home)                              # 29.00
    on_vacation = CustomerFactory(name="Eve", status="suspended")
    SubscriptionFactory(customer=on_vacation, plan=home, status="suspended", suspension_reason="vacation")

    # Billed subscription charges by period month: the window is April 2025 to March 2026.
    billed_line(s1, invoice(people["ann"], due=date(2026, 3, 20), total=4_900, issued=date(2026, 3, 1),
                            status="paid", paid=4_900), date(2026, 3, 1), 4_900)
    billed_line(s2, invoice(people["ben"], due=date(2026, 3, 24), total=1_234, issued=date(2026, 3, 10),
                            status="paid", paid=1_234), date(2026, 3, 10), 1_234)
    billed_line(s1, invoice(people["ann"], due=date(2026, 2, 15), total=4_900, issued=date(2026, 2, 1),
                            status="paid", paid=4_900), date(2026, 2, 1), 4_900)
    billed_line(s3, invoice(people["cat"], due=date(2025, 4, 15), total=2_500, issued=date(2025, 4, 1),
                            status="paid", paid=2_500), date(2025, 4, 1), 2_500)
    billed_line(s3, invoice(people["cat"], due=date(2025, 3, 15), total=9_999, issued=date(2025, 3, 1),
                            status="paid", paid=9_999), date(2025, 3, 1), 9_999)  # before the window
    billed_line(s2, invoice(dan, due=date(2026, 2, 20), total=50_000, issued=date(2026, 2, 6), status="void",
                            credit=50_000), date(2026, 2, 6), 50_000)
    billed_line(s3, invoice(dan, due=date(2026, 2, 20), total=70_000, issued=date(2026, 2, 6), status="draft"),
                date(2026, 2, 6), 70_000)
    billed_line(s2, invoice(dan, due=date(2026, 2, 20), total=3_000, issued=date(2026, 2, 7), status="paid",
                            paid=3_000), date(2026, 2, 7), 3_000, kind="setup_fee")
    db.session.commit()
    return people


def test_receivables_by_age_at_the_exact_boundaries(app):
    build_world()

    figures = dashboard_figures(AS_OF)

    assert {b.key: (b.cents, b.invoices) for b in figures.buckets} == BUCKETS
    assert [b.days for b in figures.buckets] == [None, "1-30", "31-60", "61-90", "91-"]
    assert (figures.receivable_cents, figures.receivable_invoices, figures.debtors) == (49_700, 10, 3)
    assert (figures.overdue_cents, figures.overdue_invoices) == (300 + 1_200 + 4_800 + 18_400, 8)
    # The AR aging report adds up to the same money.
    assert ar_aging(AS_OF).total_cents == figures.receivable_cents


def test_collections_today_and_this_month_leave_reversals_out(app):
    build_world()

    figures = dashboard_figures(AS_OF)

    today, month = figures.collected_today, figures.collected_month
    assert (today.start, today.end, today.cents, today.payments) == (AS_OF, AS_OF, 1_000, 1)
    assert (month.start, month.end, month.cents, month.payments) == (date(2026, 3, 1), AS_OF, 3_300, 3)
    first = dashboard_figures(date(2026, 3, 1))  # on the month's first day, today and the month are one day
    assert (first.collected_today.cents, first.collected_month.cents) == (300, 300)


def test_mrr_and_its_trend_by_the_month_periods_start(app):
    build_world()

    figures = dashboard_figures(AS_OF)

    trend = mrr_trend(AS_OF)

    assert (figures.mrr_cents, figures.active_subscriptions) == (2_900 + 5_000 + 2_900, 3)
    assert len(trend) == TREND_MONTHS
    assert [m.month for m in trend][:2] == [date(2025, 4, 1), date(2025, 5, 1)]
    billed = {m.month: m.cents for m in trend if m.cents}
    assert billed == {date(2025, 4, 1): 2_500, date(2026, 2, 1): 4_900, date(2026, 3, 1): 4_900 + 1_234}
    assert [m.month for m in trend if m.partial] == [date(2026, 3, 1)]


def test_customers_suspended_for_non_payment(app):
    build_world()

    figures = dashboard_figures(AS_OF)

    assert figures.customers_by_status == {"active": 3, "suspended": 2, "closed": 0}
    assert figures.non_payment_customers == 1


def test_a_fresh_install_has_zeros_and_twelve_empty_months(app):
    figures = dashboard_figures(AS_OF)

    assert (figures.receivable_cents, figures.overdue_cents, figures.debtors) == (0, 0, 0)
    assert figures.collected_today.cents == figures.collected_month.cents == 0
    assert [m.cents for m in mrr_trend(AS_OF)] == [0] * TREND_MONTHS
    assert (figures.mrr_cents, figures.plans, figures.non_payment_customers) == (0, [], 0)
    ops = operations()
    assert (ops.last_nightly, ops.failed_notifications, ops.coa_failed, ops.mismatches) == (None, 0, 0, None)


def test_operations_name_the_last_nightly_run_and_count_what_failed(app):
    people = build_world()
    ann = people["ann"]
    older = JobRun(kind="nightly", as_of=AS_OF - timedelta(days=1), status="succeeded", triggered_by="system",
                   started_at=NOON - timedelta(days=1), finished_at=NOON - timedelta(days=1), counts={})
    last = JobRun(kind="nightly", as_of=AS_OF, status="partial", triggered_by="system", started_at=NOON,
                  finished_at=NOON + timedelta(minutes=3), counts={"failed_customers": 2}, error="boom")
    later_step = JobRun(kind="send_reminders", as_of=AS_OF, status="succeeded", triggered_by="admin",
                        started_at=NOON + timedelta(hours=1), counts={})  # not the nightly chain
    later_dry = JobRun(kind="nightly", as_of=AS_OF, dry_run=True, status="succeeded", triggered_by="admin",
                       started_at=NOON + timedelta(hours=2), counts={})
    check = JobRun(kind="network_reconcile", as_of=AS_OF, status="succeeded", triggered_by="system",
                   started_at=NOON, finished_at=NOON, counts={"stale_session": 2, "unknown_login": 1,
                                                              "mismatches": 3})
    db.session.add_all([older, last, later_step, later_dry, check])
    for status in ("failed", "failed", "sent", "queued"):
        db.session.add(Notification(customer_id=ann.id, kind="reactivation", recipient="a@mail.example",
                                    subject="Hello", status=status))
    for n, status in enumerate(("failed", "pending", "pending", "acked")):
        db.session.add(CoaRequest(kind="disconnect", reason="change", status=status, nas_address="10.0.0.1",
                                  username="ann", acct_unique_id=f"session-{n}", requested_by="system"))
    db.session.commit()

    ops = operations()

    assert ops.last_nightly.run_id == last.id
    assert (ops.last_nightly.status, ops.last_nightly.as_of, ops.last_nightly.failed_customers) == ("partial", AS_OF, 2)
    assert (ops.failed_notifications, ops.coa_failed, ops.coa_pending) == (2, 1, 2)
    assert (ops.mismatches, ops.mismatches_checked_at) == (3, NOON)
