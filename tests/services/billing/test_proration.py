"""Proration by day, bill dates at month ends, rounding half up, tax, and the credits of cancellation and plan
change (DESIGN §3), each checked against amounts worked out by hand."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, InvoiceLine, Subscription
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.calendar import bill_date, due_periods, prorate, round_half_up, tax_on
from isp_admin.services.customers import subscriptions
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

D = date


@pytest.mark.parametrize(("next_bill", "billing_day", "as_of", "expected"), [
    pytest.param(D(2026, 1, 10), 1, D(2026, 1, 10), [(D(2026, 1, 10), D(2026, 2, 1), 22, 31)], id="start-mid-month"),
    pytest.param(D(2026, 1, 1), 1, D(2026, 1, 1), [(D(2026, 1, 1), D(2026, 2, 1), 31, 31)], id="start-on-bill-date"),
    pytest.param(D(2026, 1, 10), 1, D(2026, 1, 9), [], id="not-yet-due"),
    pytest.param(D(2026, 1, 1), 1, D(2026, 3, 15), [
        (D(2026, 1, 1), D(2026, 2, 1), 31, 31), (D(2026, 2, 1), D(2026, 3, 1), 28, 28),
        (D(2026, 3, 1), D(2026, 4, 1), 31, 31)], id="missed-periods-catch-up-one-each"),
    pytest.param(D(2026, 1, 31), 31, D(2026, 3, 31), [
        (D(2026, 1, 31), D(2026, 2, 28), 28, 28), (D(2026, 2, 28), D(2026, 3, 31), 31, 31),
        (D(2026, 3, 31), D(2026, 4, 30), 30, 30)], id="day-31-through-february-2026"),
    pytest.param(D(2028, 1, 31), 31, D(2028, 2, 29), [
        (D(2028, 1, 31), D(2028, 2, 29), 29, 29), (D(2028, 2, 29), D(2028, 3, 31), 31, 31)],
        id="day-31-through-february-2028-leap"),
    pytest.param(D(2026, 1, 30), 30, D(2026, 3, 30), [
        (D(2026, 1, 30), D(2026, 2, 28), 29, 29), (D(2026, 2, 28), D(2026, 3, 30), 30, 30),
        (D(2026, 3, 30), D(2026, 4, 30), 31, 31)], id="day-30-february-march"),
    pytest.param(D(2026, 1, 29), 29, D(2026, 2, 28), [
        (D(2026, 1, 29), D(2026, 2, 28), 30, 30), (D(2026, 2, 28), D(2026, 3, 29), 29, 29)],
        id="day-29-non-leap"),
    pytest.param(D(2028, 1, 29), 29, D(2028, 2, 29), [
        (D(2028, 1, 29), D(2028, 2, 29), 31, 31), (D(2028, 2, 29), D(2028, 3, 29), 29, 29)],
        id="day-29-leap"),
    pytest.param(D(2026, 2, 10), 31, D(2026, 2, 10), [(D(2026, 2, 10), D(2026, 2, 28), 18, 28)],
        id="day-31-start-mid-february"),
    pytest.param(D(2026, 12, 20), 5, D(2027, 1, 5), [
        (D(2026, 12, 20), D(2027, 1, 5), 16, 31), (D(2027, 1, 5), D(2027, 2, 5), 31, 31)],
        id="across-the-year-end"),
])
def test_due_periods(next_bill, billing_day, as_of, expected):
    assert due_periods(next_bill, billing_day, as_of) == expected


@pytest.mark.parametrize(("year", "month", "billing_day", "expected"), [
    pytest.param(2026, 2, 31, D(2026, 2, 28), id="31-in-feb-2026"),
    pytest.param(2028, 2, 31, D(2028, 2, 29), id="31-in-feb-2028-leap"),
    pytest.param(2026, 2, 30, D(2026, 2, 28), id="30-in-feb"),
    pytest.param(2026, 3, 30, D(2026, 3, 30), id="30-in-march"),
    pytest.param(2026, 2, 29, D(2026, 2, 28), id="29-in-feb-non-leap"),
    pytest.param(2028, 2, 29, D(2028, 2, 29), id="29-in-feb-leap"),
    pytest.param(2026, 4, 31, D(2026, 4, 30), id="31-in-april"),
    pytest.param(2026, 1, 1, D(2026, 1, 1), id="first"),
])
def test_bill_date(year, month, billing_day, expected):
    assert bill_date(year, month, billing_day) == expected


@pytest.mark.parametrize(("numerator", "denominator", "expected"), [
    pytest.param(1, 2, 1, id="half-rounds-up"),
    pytest.param(5, 10, 1, id="0.5-rounds-up"),
    pytest.param(3000 * 15, 30, 1500, id="exact"),
    pytest.param(3, 2, 2, id="1.5-up"),
    pytest.param(5, 2, 3, id="2.5-up-not-to-even"),
    pytest.param(25, 10, 3, id="2.5-up-again"),
    pytest.param(14, 10, 1, id="1.4-down"),
    pytest.param(1, 3, 0, id="a-third-down"),
    pytest.param(2, 3, 1, id="two-thirds-up"),
    pytest.param(0, 7, 0, id="zero"),
    pytest.param(10**15 + 1, 2, 5 * 10**14 + 1, id="huge-exact-integer-not-float"),
])
def test_round_half_up(numerator, denominator, expected):
    assert round_half_up(numerator, denominator) == expected


def test_round_half_up_refuses_negatives_and_a_zero_denominator():
    for args in ((-1, 2), (1, 0), (1, -2)):
        with pytest.raises(ValueError):
            round_half_up(*args)


@pytest.mark.parametrize(("price", "days", "period_days", "expected"), [
    pytest.param(3000, 22, 31, 2129, id="10-jan-start-22-of-31"),       # 2129.03
    pytest.param(3000, 12, 31, 1161, id="cancel-20-mar-12-of-31"),      # 1161.29
    pytest.param(3000, 18, 28, 1929, id="18-of-28"),                    # 1928.57
    pytest.param(3000, 15, 30, 1500, id="exact-half-month"),
    pytest.param(3100, 15, 31, 1500, id="exact"),
    pytest.param(1, 1, 2, 1, id="half-cent-up"),
    pytest.param(3000, 31, 31, 3000, id="whole-period"),
    pytest.param(4900, 1, 31, 158, id="one-day"),                       # 158.06
    pytest.param(6200, 12, 31, 2400, id="new-plan-rest"),
])
def test_prorate(price, days, period_days, expected):
    assert prorate(price, days, period_days) == expected


# 1600 bp never lands on an exact half cent (amount × 16 / 100 has an odd denominator 25), so exact halves are
# checked with rates that do, and 1600 bp with the amounts the other tests bill.
@pytest.mark.parametrize(("amount", "rate_bp", "expected"), [
    pytest.param(3000, 1600, 480, id="16pct-exact"),
    pytest.param(2129, 1600, 341, id="16pct-340.64"),
    pytest.param(1161, 1600, 186, id="16pct-185.76"),
    pytest.param(1929, 1600, 309, id="16pct-308.64"),
    pytest.param(3, 1600, 0, id="16pct-0.48-down"),
    pytest.param(4, 1600, 1, id="16pct-0.64-up"),
    pytest.param(100, 1650, 17, id="16.5pct-16.5-up"),
    pytest.param(5, 1000, 1, id="10pct-0.5-up"),
    pytest.param(25, 1000, 3, id="10pct-2.5-up"),
    pytest.param(2, 2500, 1, id="25pct-0.5-up"),
    pytest.param(20, 750, 2, id="7.5pct-1.5-up"),
    pytest.param(3000, 0, 0, id="untaxed"),
])
def test_tax_on(amount, rate_bp, expected):
    assert tax_on(amount, rate_bp) == expected


# --- through the services ------------------------------------------------------------------------------------

@pytest.fixture
def business_date(monkeypatch):
    """Pin the business date the subscription service reads (cancel, change_plan, resume)."""
    holder = {}
    monkeypatch.setattr(subscriptions, "today", lambda: holder["today"])

    def set_to(day: date) -> None:
        holder["today"] = day

    return set_to


def _billed_march(app, price=3000, override=None):
    plan = PlanFactory(name="Home 30", monthly_price_cents=price, tax_rate_bp=1600)
    sub = SubscriptionFactory(customer=CustomerFactory(), plan=plan, start_date=D(2026, 3, 1), billing_day=1,
                              next_bill_date=D(2026, 3, 1), price_override_cents=override)
    invoice = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 3, 1))
    db.session.commit()
    assert (invoice.total_cents, invoice.number) == ((override or price) * 116 // 100, "INV-2026-000001")
    return sub, invoice


def _credit_notes(sub_id: int) -> list[CreditNote]:
    return list(db.session.scalars(select(CreditNote).where(CreditNote.subscription_id == sub_id)
                                   .order_by(CreditNote.id)))


def test_start_mid_month_bills_22_of_31_days_through_the_run(app):
    plan = PlanFactory(monthly_price_cents=3000, tax_rate_bp=1600)
    sub = SubscriptionFactory(plan=plan, start_date=D(2026, 1, 10), billing_day=1, next_bill_date=D(2026, 1, 10))

    invoice = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 1, 10))
    db.session.commit()

    [line] = db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    assert (line.period_start, line.period_end, line.days, line.period_days) == (D(2026, 1, 10), D(2026, 2, 1), 22, 31)
    assert (line.amount_cents, line.tax_cents) == (2129, 341)
    assert (invoice.subtotal_cents, invoice.tax_cents, invoice.total_cents) == (2129, 341, 2470)
    assert db.session.get(Subscription, sub.id).next_bill_date == D(2026, 2, 1)


def test_cancelling_on_20_march_credits_12_of_31_days_plus_tax(app, business_date):
    sub, invoice = _billed_march(app)
    business_date(D(2026, 3, 20))

    subscriptions.cancel(sub.id, D(2026, 3, 20))
    db.session.commit()

    [note] = _credit_notes(sub.id)
    assert (note.kind, note.number, note.issue_date) == ("cancellation", "CN-2026-000001", D(2026, 3, 20))
    assert (note.subtotal_cents, note.tax_cents, note.amount_cents) == (1161, 186, 1347)
    db.session.refresh(invoice)
    # The credit is applied at once to the unpaid March invoice (due 15 March, so overdue by now).
    assert (invoice.credit_applied_cents, invoice.balance_cents, invoice.status) == (1347, 3480 - 1347, "overdue")
    assert db.session.get(Subscription, sub.id).status == "cancelled"


def test_cancelling_on_the_bill_date_credits_the_whole_period(app, business_date):
    sub, _invoice = _billed_march(app)
    business_date(D(2026, 3, 1))

    subscriptions.cancel(sub.id, D(2026, 3, 1))

    [note] = _credit_notes(sub.id)
    assert (note.subtotal_cents, note.tax_cents, note.amount_cents) == (3000, 480, 3480)


def test_cancelling_an_unbilled_period_credits_nothing(app, business_date):
    sub = SubscriptionFactory(start_date=D(2026, 3, 1), billing_day=1, next_bill_date=D(2026, 3, 1))
    business_date(D(2026, 3, 20))

    subscriptions.cancel(sub.id, D(2026, 3, 20))

    assert _credit_notes(sub.id) == []


def test_a_backdated_cancellation_also_credits_the_later_periods_already_billed(app, business_date):
    sub, _march = _billed_march(app)
    april = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 4, 1))
    db.session.commit()
    assert april.total_cents == 3480
    business_date(D(2026, 4, 5))

    subscriptions.cancel(sub.id, D(2026, 3, 20))  # the customer left on 20 March; staff record it in April
    db.session.commit()

    # 12/31 of March and all of April come back: the customer is never charged for service after leaving.
    credited = sum(note.subtotal_cents for note in _credit_notes(sub.id))
    assert credited == 1161 + 3000


def test_a_plan_change_on_20_march_credits_the_old_plan_and_charges_the_new_one(app, business_date):
    sub, march = _billed_march(app)
    dearer = PlanFactory(name="Home 62", monthly_price_cents=6200, tax_rate_bp=1600)
    business_date(D(2026, 3, 20))

    subscriptions.change_plan(sub.id, dearer.id)
    db.session.commit()

    [note] = _credit_notes(sub.id)
    assert (note.kind, note.subtotal_cents, note.tax_cents, note.amount_cents) == ("plan_change", 1161, 186, 1347)
    change = db.session.scalar(select(Invoice).where(Invoice.id != march.id))
    [line] = db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == change.id))
    assert (line.kind, line.period_start, line.period_end, line.days, line.period_days) == (
        "plan_change", D(2026, 3, 20), D(2026, 4, 1), 12, 31)
    assert (line.amount_cents, line.tax_cents) == (2400, 384)  # 6200 × 12/31 = 2400 exactly
    assert (change.number, change.total_cents, change.issue_date) == ("INV-2026-000002", 2784, D(2026, 3, 20))
    assert db.session.get(Subscription, sub.id).plan_id == dearer.id
    # From April the run bills the new plan in full.
    april = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 4, 1))
    assert (april.subtotal_cents, april.total_cents) == (6200, 7192)


def test_a_plan_change_keeps_charging_a_price_override(app, business_date):
    sub, _march = _billed_march(app, override=2500)
    other = PlanFactory(name="Home 62", monthly_price_cents=6200, tax_rate_bp=1600)
    business_date(D(2026, 3, 20))

    subscriptions.change_plan(sub.id, other.id)
    db.session.commit()

    # The override is the price on either plan: the unused days are credited and charged again at 2500,
    # so the change costs nothing, rather than handing out the rest of the month free.
    [note] = _credit_notes(sub.id)
    assert note.subtotal_cents == 968  # 2500 × 12/31 = 967.74
    charged = db.session.scalar(select(InvoiceLine.amount_cents).where(InvoiceLine.kind == "plan_change"))
    assert charged == 968


def test_a_plan_change_before_the_period_is_billed_moves_nothing(app, business_date):
    sub = SubscriptionFactory(start_date=D(2026, 3, 1), billing_day=1, next_bill_date=D(2026, 3, 1),
                              plan=PlanFactory(monthly_price_cents=3000))
    dearer = PlanFactory(monthly_price_cents=6200, tax_rate_bp=1600)
    business_date(D(2026, 3, 1))

    subscriptions.change_plan(sub.id, dearer.id)
    invoice = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 3, 1))

    assert _credit_notes(sub.id) == []
    assert invoice.subtotal_cents == 6200  # the run bills the new plan


def test_a_second_plan_change_in_one_period_credits_the_plan_it_leaves(app, business_date):
    sub, _march = _billed_march(app)
    b = PlanFactory(monthly_price_cents=6200, tax_rate_bp=0)
    c = PlanFactory(monthly_price_cents=9300, tax_rate_bp=0)
    business_date(D(2026, 3, 20))
    subscriptions.change_plan(sub.id, b.id)
    business_date(D(2026, 3, 25))

    subscriptions.change_plan(sub.id, c.id)

    # The 7 days from 25 March were charged on plan B (6200 × 7/31 = 1400), so 1400 comes back, not A's 677.
    assert [n.subtotal_cents for n in _credit_notes(sub.id)] == [1161, 1400]


def test_cancelling_after_an_upgrade_credits_the_upgrade_too(app, business_date):
    sub, _march = _billed_march(app)
    business_date(D(2026, 3, 20))
    subscriptions.change_plan(sub.id, PlanFactory(monthly_price_cents=6200, tax_rate_bp=1600).id)
    business_date(D(2026, 3, 25))

    subscriptions.cancel(sub.id, D(2026, 3, 25))

    # Charged for [25 Mar, 1 Apr) on the new plan: 6200 × 7/31 = 1400 must come back, not 3000 × 7/31 = 677.
    assert _credit_notes(sub.id)[-1].subtotal_cents == 1400


def test_a_second_plan_change_on_the_same_day_is_refused_and_writes_nothing(app, business_date):
    sub, _march = _billed_march(app)
    business_date(D(2026, 3, 20))
    subscriptions.change_plan(sub.id, PlanFactory(monthly_price_cents=6200, tax_rate_bp=0).id)
    notes_before = len(_credit_notes(sub.id))

    with pytest.raises(BusinessRuleViolation, match="already changed plan today"):
        subscriptions.change_plan(sub.id, PlanFactory(monthly_price_cents=9300, tax_rate_bp=0).id)

    assert len(_credit_notes(sub.id)) == notes_before
