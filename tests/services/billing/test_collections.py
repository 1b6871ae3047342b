"""Collections (DESIGN §3): overdue after the due date, reminders once per kind, suspension only after grace,
reactivation when paid; every step previewable and idempotent."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Invoice, Notification, Subscription
from isp_admin.services.billing import collections, invoices, payments
from tests.factories import CustomerFactory, SubscriptionFactory

D = date
DUE = D(2026, 3, 15)  # invoices issued on 1 March with 14 days' terms


def issued(customer_id: int, cents: int = 3000, day: date = D(2026, 3, 1)) -> Invoice:
    draft = invoices.create_draft(customer_id, [{"description": "Service", "quantity": 1, "unit_price_cents": cents,
                                                 "tax_rate_bp": 0}], day)
    return invoices.issue(draft.id, day)


def sub(customer, status="active", reason=None, **fields) -> Subscription:
    return SubscriptionFactory(customer=customer, status=status, suspension_reason=reason,
                               start_date=fields.pop("start_date", D(2026, 1, 1)), billing_day=1,
                               next_bill_date=fields.pop("next_bill_date", D(2026, 4, 1)), **fields)


def status_of(model, row_id: int) -> str:
    return db.session.scalar(select(model.status).where(model.id == row_id))


def reminders() -> set[tuple[int, str]]:
    return set(db.session.execute(select(Notification.invoice_id, Notification.kind).where(
        Notification.kind.like("reminder_%"))).all())


# --- overdue ----------------------------------------------------------------------------------------------------

def test_an_invoice_is_overdue_only_after_its_due_date_and_only_with_a_balance(app):
    customer = CustomerFactory()
    unpaid, partly, paid = issued(customer.id), issued(customer.id), issued(customer.id)
    voided = issued(customer.id)
    payments.record_payment(customer.id, 3000, "cash", DUE, DUE, invoice_id=paid.id)
    payments.record_payment(customer.id, 1000, "cash", DUE, DUE, invoice_id=partly.id)
    invoices.void(voided.id, "Duplicate", DUE)
    db.session.commit()

    assert collections.plan_mark_overdue(DUE) == [] and collections.run_mark_overdue(DUE) == 0
    planned = collections.plan_mark_overdue(D(2026, 3, 16))
    assert [(a.invoice_id, a.amount_cents, a.action) for a in planned] == [
        (unpaid.id, 3000, "mark_overdue"), (partly.id, 2000, "mark_overdue")]

    assert collections.run_mark_overdue(D(2026, 3, 16)) == 2
    assert [status_of(Invoice, i.id) for i in (unpaid, partly, paid, voided)] == ["overdue", "overdue", "paid", "void"]
    assert db.session.scalar(select(func.count()).where(AuditEvent.action == "invoice.overdue")) == 2
    assert collections.run_mark_overdue(D(2026, 3, 16)) == 0
    assert collections.plan_mark_overdue(D(2026, 3, 17)) == []


# --- reminders ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("today", "kind"), [
    pytest.param(D(2026, 3, 12), "reminder_before", id="3-days-before"),
    pytest.param(DUE, "reminder_due", id="on-the-due-date"),
    pytest.param(D(2026, 3, 22), "reminder_after", id="7-days-after"),
    pytest.param(D(2026, 4, 30), "reminder_after", id="found-late-only-the-latest-step"),
])
def test_the_right_reminder_is_queued_once_however_often_the_step_runs(app, today, kind):
    invoice = issued(CustomerFactory(email="wanjiru@mail.example").id)

    counts = [collections.run_send_reminders(today) for _ in range(3)]

    assert counts == [1, 0, 0]
    assert reminders() == {(invoice.id, kind)}
    row = db.session.scalar(select(Notification).where(Notification.kind == kind))
    assert (row.status, row.recipient, row.customer_id) == ("queued", "wanjiru@mail.example", invoice.customer_id)
    assert invoice.number in row.subject


def test_a_reminder_schedule_walked_day_by_day_sends_each_kind_once(app):
    invoice = issued(CustomerFactory().id)

    sent_on = {}
    for day in range(1, 32):
        for _ in range(2):
            if collections.run_send_reminders(D(2026, 3, day)):
                sent_on[day] = sorted(k for i, k in reminders())

    assert sent_on == {12: ["reminder_before"], 15: ["reminder_before", "reminder_due"],
                       22: ["reminder_after", "reminder_before", "reminder_due"]}
    assert db.session.scalar(select(func.count()).where(Notification.invoice_id == invoice.id,
                                                        Notification.kind.like("reminder_%"))) == 3


def test_no_reminder_for_a_paid_or_void_invoice(app):
    customer = CustomerFactory()
    paid, voided, tiny = issued(customer.id), issued(customer.id), issued(customer.id)
    payments.record_payment(customer.id, 3000, "cash", D(2026, 3, 2), D(2026, 3, 2), invoice_id=paid.id)
    invoices.void(voided.id, "Wrong", D(2026, 3, 2))
    payments.record_payment(customer.id, 2999, "cash", D(2026, 3, 2), D(2026, 3, 2), invoice_id=tiny.id)

    for day in (D(2026, 3, 12), DUE, D(2026, 3, 22)):
        collections.run_send_reminders(day)

    # Only the invoice with a cent left is reminded, at each step.
    assert reminders() == {(tiny.id, "reminder_before"), (tiny.id, "reminder_due"), (tiny.id, "reminder_after")}


# --- suspension after grace -----------------------------------------------------------------------------------

def test_suspension_comes_only_the_day_after_the_grace_period(app):
    customer = CustomerFactory()
    service = sub(customer)
    issued(customer.id)

    assert collections.plan_enforce_overdue(D(2026, 3, 22)) == []      # due + 7 days: still in grace
    assert collections.run_enforce_overdue(D(2026, 3, 22)) == 0
    assert status_of(Subscription, service.id) == "active"

    assert [a.subscription_id for a in collections.plan_enforce_overdue(D(2026, 3, 23))] == [service.id]
    assert collections.run_enforce_overdue(D(2026, 3, 23)) == 1

    db.session.refresh(service)
    assert (service.status, service.suspension_reason) == ("suspended", "non_payment")
    assert status_of(Customer, customer.id) == "suspended"
    assert db.session.scalar(select(func.count()).where(Notification.kind == "suspension")) == 1
    assert collections.run_enforce_overdue(D(2026, 3, 24)) == 0


def test_enforcement_leaves_manual_vacation_pending_and_cancelled_subscriptions_alone(app):
    customer = CustomerFactory()
    active = sub(customer)
    manual = sub(customer, "suspended", "manual")
    vacation = sub(customer, "suspended", "vacation")
    pending = sub(customer, "pending", start_date=D(2026, 5, 1), next_bill_date=D(2026, 5, 1))
    cancelled = sub(customer, "cancelled", end_date=D(2026, 2, 1))
    issued(customer.id)

    collections.run_enforce_overdue(D(2026, 4, 1))

    got = {s.id: (s.status, s.suspension_reason) for s in db.session.scalars(select(Subscription))}
    assert got == {active.id: ("suspended", "non_payment"), manual.id: ("suspended", "manual"),
                   vacation.id: ("suspended", "vacation"), pending.id: ("pending", None),
                   cancelled.id: ("cancelled", None)}


def test_a_customer_who_paid_is_not_suspended(app):
    customer = CustomerFactory()
    service = sub(customer)
    invoice = issued(customer.id)
    payments.record_payment(customer.id, 3000, "cash", D(2026, 3, 20), D(2026, 3, 20), invoice_id=invoice.id)

    assert collections.run_enforce_overdue(D(2026, 4, 1)) == 0
    assert status_of(Subscription, service.id) == "active"


# --- the nightly reactivation sweep ---------------------------------------------------------------------------

def test_the_sweep_reactivates_paid_up_customers_only(app):
    paid_up, still_owing, on_holiday = CustomerFactory(), CustomerFactory(), CustomerFactory()
    back = sub(paid_up, "suspended", "non_payment", next_bill_date=D(2026, 3, 1))
    kept = sub(still_owing, "suspended", "non_payment")
    holiday = sub(on_holiday, "suspended", "vacation")
    issued(still_owing.id)
    issued(paid_up.id, day=D(2026, 3, 25))  # owed but not yet due: not overdue

    planned = collections.plan_reactivate_paid(D(2026, 4, 2))
    assert [(a.customer_id, a.subscription_id, a.action) for a in planned] == [(paid_up.id, back.id, "reactivate")]
    assert collections.run_reactivate_paid(D(2026, 4, 2)) == 1

    assert [status_of(Subscription, s.id) for s in (back, kept, holiday)] == ["active", "suspended", "suspended"]
    assert db.session.get(Subscription, back.id).next_bill_date == D(2026, 4, 2)
    assert collections.plan_reactivate_paid(D(2026, 4, 2)) == []
    assert collections.run_reactivate_paid(D(2026, 4, 2)) == 0


# --- every dry run is exactly what the step does ---------------------------------------------------------------

@pytest.fixture
def book(app):
    """A small customer book on 23 March: overdue past grace, partly paid, paid, void, not yet due, on holiday."""
    made = {}
    for name in ("overdue", "partly", "paid", "void", "later", "holiday", "pending", "cut_off_paid"):
        made[name] = CustomerFactory(name=name)
    for name in ("overdue", "partly", "paid", "void", "later"):
        sub(made[name])
    sub(made["holiday"], "suspended", "vacation")
    sub(made["holiday"])
    sub(made["pending"], "pending", start_date=D(2026, 4, 1), next_bill_date=D(2026, 4, 1))
    sub(made["cut_off_paid"], "suspended", "non_payment")
    bills = {name: issued(made[name].id) for name in ("overdue", "partly", "paid", "void", "holiday", "pending")}
    bills["later"] = issued(made["later"].id, day=D(2026, 3, 11))  # due 25 March
    payments.record_payment(made["partly"].id, 1000, "cash", D(2026, 3, 5), D(2026, 3, 5))
    payments.record_payment(made["paid"].id, 3000, "cash", D(2026, 3, 5), D(2026, 3, 5))
    invoices.void(bills["void"].id, "Wrong", D(2026, 3, 5))
    db.session.commit()
    return made, bills


def _subscription_states() -> dict[int, tuple[str, str | None]]:
    return {s.id: (s.status, s.suspension_reason) for s in db.session.scalars(select(Subscription))}


def test_each_dry_run_lists_exactly_what_its_step_does_and_a_rerun_does_nothing(book):
    made, bills = book
    today = D(2026, 3, 23)

    # mark overdue
    planned = {a.invoice_id for a in collections.plan_mark_overdue(today)}
    assert planned == {bills[n].id for n in ("overdue", "partly", "holiday", "pending")}
    assert collections.run_mark_overdue(today) == len(planned)
    assert set(db.session.scalars(select(Invoice.id).where(Invoice.status == "overdue"))) == planned

    # reminders
    planned = {(a.invoice_id, a.action) for a in collections.plan_reminders(today)}
    assert planned == {(bills[n].id, "reminder_after") for n in ("overdue", "partly", "holiday", "pending")} | {
        (bills["later"].id, "reminder_before")}
    assert collections.run_send_reminders(today) == len(planned)
    assert reminders() == planned

    # enforce
    before = _subscription_states()
    planned = {a.subscription_id for a in collections.plan_enforce_overdue(today)}
    assert {db.session.get(Subscription, s).customer_id for s in planned} == {
        made[n].id for n in ("overdue", "partly", "holiday")}
    assert collections.run_enforce_overdue(today) == len(planned)
    after = _subscription_states()
    assert {s for s in after if after[s] != before[s]} == planned
    assert all(after[s] == ("suspended", "non_payment") for s in planned)

    # reactivate
    planned = {a.subscription_id for a in collections.plan_reactivate_paid(today)}
    assert {db.session.get(Subscription, s).customer_id for s in planned} == {made["cut_off_paid"].id}
    before = _subscription_states()
    assert collections.run_reactivate_paid(today) == len(planned)
    after = _subscription_states()
    assert {s for s in after if after[s] != before[s]} == planned
    db.session.commit()

    # Twice: nothing more to do, and the dry runs say so.
    notifications = db.session.scalar(select(func.count()).select_from(Notification))
    for step in ("mark_overdue", "enforce_overdue", "reactivate_paid", "reminders"):
        assert getattr(collections, f"plan_{step}")(today) == []
    for step in ("mark_overdue", "enforce_overdue", "reactivate_paid", "send_reminders"):
        assert getattr(collections, f"run_{step}")(today) == 0
    assert _subscription_states() == after
    assert db.session.scalar(select(func.count()).select_from(Notification)) == notifications
