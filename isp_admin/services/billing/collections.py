"""Collections: mark overdue, suspend after grace, reactivate when paid, queue reminders.

Each step has plan_*() (the dry run: exactly who would be affected, for any date) and run_*() that does it,
set-based where it can be, in the caller's transaction; running a step twice has no further effect.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import and_, exists, func, select, update

from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Notification, Subscription
from isp_admin.models.base import utcnow
from isp_admin.services.billing.ledger import lock_customer, reactivate_if_paid
from isp_admin.services.customers.suspensions import open_suspensions
from isp_admin.services.messaging.notifications import queue_many
from isp_admin.services.platform import audit

REMINDER_KINDS = {"before": "reminder_before", "due": "reminder_due", "after": "reminder_after"}


@dataclass
class Affected:
    """One row of a dry run: a customer, what would happen, and the amount involved."""

    customer_id: int
    customer_name: str
    action: str
    detail: str
    amount_cents: int = 0
    invoice_id: int | None = None
    subscription_id: int | None = None


# --- mark overdue -------------------------------------------------------------------------------------------

def plan_mark_overdue(today: date) -> list[Affected]:
    """Open invoices past their due date with money owed."""
    rows = db.session.execute(
        select(Invoice.id, Invoice.number, Invoice.customer_id, Customer.name, Invoice.balance_cents.label("balance"))
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(Invoice.status == "open", Invoice.due_date < today, Invoice.balance_cents > 0)
        .order_by(Invoice.id)).all()
    return [Affected(r.customer_id, r.name, "mark_overdue", r.number, r.balance, invoice_id=r.id) for r in rows]


def run_mark_overdue(today: date) -> int:
    """Mark open invoices overdue once today is past their due date; return how many."""
    rows = db.session.execute(
        update(Invoice).where(Invoice.status == "open", Invoice.due_date < today, Invoice.balance_cents > 0)
        .values(status="overdue", updated_at=utcnow()).returning(Invoice.id, Invoice.customer_id)).all()
    audit.record_many("invoice.overdue", "invoices", [(r.id, r.customer_id) for r in rows],
                      after={"status": "overdue"})
    return len(rows)


# --- enforce (suspend after grace) ---------------------------------------------------------------------------

def _enforceable(today: date):
    grace = current_app.config["GRACE_DAYS"]
    past_grace = exists().where(Invoice.customer_id == Subscription.customer_id,
                                Invoice.is_open, Invoice.balance_cents > 0,
                                Invoice.due_date < today - timedelta(days=grace))
    return and_(Subscription.status == "active", past_grace)


def plan_enforce_overdue(today: date) -> list[Affected]:
    """Active subscriptions of customers with an invoice unpaid past due date + GRACE_DAYS."""
    rows = db.session.execute(
        select(Subscription.id, Subscription.customer_id, Customer.name, Subscription.pppoe_username)
        .join(Customer, Customer.id == Subscription.customer_id)
        .where(_enforceable(today)).order_by(Subscription.customer_id, Subscription.id)).all()
    return [Affected(r.customer_id, r.name, "suspend", r.pppoe_username or f"subscription #{r.id}",
                     subscription_id=r.id) for r in rows]


def run_enforce_overdue(today: date) -> int:
    """Suspend them for non-payment (manual and vacation suspensions are never touched); return how many."""
    # Customers first, in id order as the billing chunks take them: a payment settling one of them right now
    # commits before its customer is judged, and the UPDATE below then sees the debt paid.
    candidates = select(Subscription.customer_id).where(_enforceable(today)).distinct()
    db.session.execute(select(Customer.id).where(Customer.id.in_(candidates)).order_by(Customer.id)
                       .with_for_update())
    rows = db.session.execute(
        update(Subscription).where(_enforceable(today))
        .values(status="suspended", suspension_reason="non_payment", updated_at=utcnow())
        .returning(Subscription.id, Subscription.customer_id), execution_options={"synchronize_session": False}
    ).all()
    audit.record_many("subscription.suspend", "subscriptions", [(r.id, r.customer_id) for r in rows],
                      after={"status": "suspended", "suspension_reason": "non_payment"})
    open_suspensions([(r.id, r.customer_id) for r in rows], "non_payment", today)
    customer_ids = sorted({r.customer_id for r in rows})
    if customer_ids:
        # A customer with no active subscription left is suspended too.
        still_active = select(Subscription.customer_id).where(Subscription.status == "active")
        db.session.execute(update(Customer).where(Customer.id.in_(customer_ids), Customer.status == "active",
                                                  Customer.id.not_in(still_active))
                           .values(status="suspended"), execution_options={"synchronize_session": False})
        oldest = _oldest_overdue_invoices(customer_ids, today)
        queue_many([dict(customer_id=c, invoice_id=oldest.get(c), kind="suspension", recipient=None,
                         subject="Your service is suspended for non-payment") for c in customer_ids])
    from isp_admin.services.reporting.dashboard import invalidate_dashboard

    invalidate_dashboard()
    return len(rows)


def _oldest_overdue_invoices(customer_ids: list[int], today: date) -> dict[int, int]:
    rows = db.session.execute(
        select(Invoice.customer_id, func.min(Invoice.id)).where(
            Invoice.customer_id.in_(customer_ids), Invoice.is_open, Invoice.balance_cents > 0,
            Invoice.due_date < today).group_by(Invoice.customer_id)).all()
    return dict(rows)


# --- reactivate (the nightly safety net; payments reactivate inline) -----------------------------------------

def _paid_up_suspended(today: date):
    overdue = exists().where(Invoice.customer_id == Subscription.customer_id,
                             Invoice.is_open, Invoice.balance_cents > 0, Invoice.due_date < today)
    return and_(Subscription.status == "suspended", Subscription.suspension_reason == "non_payment", ~overdue)


def plan_reactivate_paid(today: date) -> list[Affected]:
    """Non-payment suspensions of customers who owe nothing overdue."""
    rows = db.session.execute(
        select(Subscription.id, Subscription.customer_id, Customer.name, Subscription.pppoe_username)
        .join(Customer, Customer.id == Subscription.customer_id)
        .where(_paid_up_suspended(today)).order_by(Subscription.customer_id, Subscription.id)).all()
    return [Affected(r.customer_id, r.name, "reactivate", r.pppoe_username or f"subscription #{r.id}",
                     subscription_id=r.id) for r in rows]


def run_reactivate_paid(today: date, failures: list[dict] | None = None) -> int:
    """Reactivate them; return how many subscriptions (customers that fail are left out, added to `failures`)."""
    import logging

    from isp_admin.services.platform.job_runs import failure, is_transient

    reactivated = 0
    for customer_id in sorted({a.customer_id for a in plan_reactivate_paid(today)}):
        try:
            # One customer per savepoint: one whose reactivation fails (its resumed billing refused, say) is
            # rolled back alone and the sweep goes on with the rest (DESIGN §3, one bad row never stops a run).
            with db.session.begin_nested():
                lock_customer(customer_id)  # a payment may be settling this customer right now: its outcome first
                reactivated += len(reactivate_if_paid(customer_id, today))
        except Exception as exc:
            if failures is None or is_transient(exc):
                raise  # a caller that keeps no list (or a lost connection) fails the step as before
            logging.getLogger(__name__).error("reactivate %s: customer %s left out: %s: %s", today, customer_id,
                                              type(exc).__name__, exc, exc_info=True)
            failures.append(failure(customer_id, "reactivate_paid", today, exc))
    return reactivated


# --- reminders ------------------------------------------------------------------------------------------------

def _reminder_kind(offset: int) -> str:
    return REMINDER_KINDS["before" if offset < 0 else "due" if offset == 0 else "after"]


def plan_reminders(today: date) -> list[Affected]:
    """The reminder each unpaid invoice is due for today (the latest step of the schedule it has reached)."""
    schedule = sorted(current_app.config["REMINDER_SCHEDULE"])
    if not schedule:
        return []
    rows = db.session.execute(
        select(Invoice.id, Invoice.number, Invoice.customer_id, Invoice.due_date, Customer.name,
               Invoice.balance_cents.label("balance"))
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(Invoice.is_open, Invoice.balance_cents > 0,
               Invoice.due_date <= today - timedelta(days=schedule[0]))).all()
    sent = set(db.session.execute(select(Notification.invoice_id, Notification.kind).where(
        Notification.invoice_id.in_([r.id for r in rows]), Notification.kind.in_(REMINDER_KINDS.values()))).all())
    out = []
    for r in rows:
        reached = [o for o in schedule if r.due_date + timedelta(days=o) <= today]
        kind = _reminder_kind(reached[-1])
        # Only the latest step: an invoice found late gets one reminder, not three at once.
        if (r.id, kind) not in sent:
            out.append(Affected(r.customer_id, r.name, kind, r.number, r.balance, invoice_id=r.id))
    return out


def run_send_reminders(today: date) -> int:
    """Queue the reminders due today; the outbox's unique key makes each one at most once; return how many."""
    subjects = {"reminder_before": "Your invoice {n} is due soon", "reminder_due": "Your invoice {n} is due today",
                "reminder_after": "Your invoice {n} is overdue"}
    return queue_many([dict(customer_id=a.customer_id, invoice_id=a.invoice_id, kind=a.action, recipient=None,
                            subject=subjects[a.action].format(n=a.detail)) for a in plan_reminders(today)])
