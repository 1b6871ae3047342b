"""Bulk actions on the invoice list: send the invoices not sent yet, and remind customers of what they owe.

Each row is an invoice; the rule a preview shows is the rule the action checks again under the customer's lock,
so an invoice sent (or a reminder queued) by anyone in between is skipped, never sent twice. Reminders use the
outbox's unique (invoice, kind) key, as the nightly reminders do: one of each kind per invoice, ever.
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Notification
from isp_admin.models.invoices import OPEN_STATUSES
from isp_admin.services.billing.collections import REMINDER_KINDS
from isp_admin.services.billing.ledger import lock_and_load
from isp_admin.services.messaging import delivery
from isp_admin.services.messaging.notifications import queue_notification
from isp_admin.services.platform import audit
from isp_admin.services.platform.bulk_actions import BulkAction, Outcome, Row

# As the nightly reminders word them (services/billing/collections.py).
REMINDER_SUBJECTS = {"reminder_before": "Your invoice {n} is due soon", "reminder_due": "Your invoice {n} is due today",
                     "reminder_after": "Your invoice {n} is overdue"}


def _rows(ids: list[int]) -> list[Row]:
    """The invoices with what the rules read: status, balance, due date, sent, the customer's email, reminders."""
    found = db.session.execute(
        select(Invoice.id, Invoice.customer_id, Invoice.number, Invoice.status, Invoice.due_date, Invoice.sent_at,
               Invoice.balance_cents.label("balance"), Customer.name, Customer.email)
        .join(Customer, Customer.id == Invoice.customer_id).where(Invoice.id.in_(ids))).all()
    reminded: dict[int, set] = {}
    for invoice_id, kind in db.session.execute(
            select(Notification.invoice_id, Notification.kind).where(
                Notification.invoice_id.in_(ids), Notification.kind.in_(REMINDER_KINDS.values()))):
        reminded.setdefault(invoice_id, set()).add(kind)
    return [Row(r.id, r.customer_id, f"{r.number or f'Draft #{r.id}'} · {r.name}",
                {"status": r.status, "due_date": r.due_date, "sent": r.sent_at is not None, "balance": r.balance,
                 "email": r.email, "reminded": reminded.get(r.id, set())}) for r in found]


def _fresh_state(invoice_id: int) -> tuple[Invoice, dict]:
    """The invoice under its customer's lock, and its state read afresh (as _rows reads it)."""
    invoice = lock_and_load(Invoice, invoice_id, "No such invoice.")
    email = db.session.scalar(select(Customer.email).where(Customer.id == invoice.customer_id))
    reminded = set(db.session.scalars(select(Notification.kind).where(
        Notification.invoice_id == invoice.id, Notification.kind.in_(REMINDER_KINDS.values()))))
    return invoice, {"status": invoice.status, "due_date": invoice.due_date, "sent": invoice.sent_at is not None,
                     "balance": invoice.balance_cents, "email": email, "reminded": reminded}


# --- send invoices ------------------------------------------------------------------------------------------------

def _would_send(state: dict) -> Outcome:
    if state["status"] in ("draft", "void"):
        return Outcome(f"skipped_{state['status']}", f"A {state['status']} invoice is not sent.")
    if state["sent"]:
        return Outcome("skipped_already_sent", "Sent before; send it again from its own page if need be.")
    if not state["email"]:
        return Outcome("skipped_no_email", "The customer has no email address.")
    return Outcome("sent", f"Email it to {state['email']}.")


def send_unsent_invoice(invoice_id: int, today: date) -> Outcome:
    """Email an issued invoice that was never sent; skip it when it was (or cannot be)."""
    invoice, state = _fresh_state(invoice_id)
    planned = _would_send(state)
    if planned.skipped:
        return planned
    notification = delivery.send_invoice(invoice.id)  # audited there (invoice.send)
    if notification.status == "sent":
        return Outcome("sent", f"Sent to {notification.recipient}.")
    if notification.status == "queued":  # the mail server refused for now: the delivery run retries it
        return Outcome("queued", f"Not sent yet ({notification.last_error}); the next delivery run retries it.")
    return Outcome("failed", notification.last_error or "The email could not be sent.")


# --- send reminders -----------------------------------------------------------------------------------------------

def reminder_kind(due_date: date, today: date) -> str:
    """The reminder an unpaid invoice gets today: before, on or after its due date."""
    return REMINDER_KINDS["before" if due_date > today else "due" if due_date == today else "after"]


def _would_remind(state: dict, today: date) -> Outcome:
    if state["status"] not in OPEN_STATUSES or state["balance"] <= 0:
        return Outcome("skipped_nothing_owed", f"Nothing is owed on a {state['status']} invoice.")
    if not state["email"]:
        return Outcome("skipped_no_email", "The customer has no email address.")
    kind = reminder_kind(state["due_date"], today)
    words = kind.removeprefix("reminder_")
    if kind in state["reminded"]:
        return Outcome("skipped_already_reminded", f"The '{words} due date' reminder was sent already.")
    return Outcome("reminded", f"Email the '{words} due date' reminder to {state['email']}.")


def remind_invoice(invoice_id: int, today: date) -> Outcome:
    """Email an unpaid invoice's reminder for today (once per kind, ever); skip it when nothing is owed."""
    invoice, state = _fresh_state(invoice_id)
    planned = _would_remind(state, today)
    if planned.skipped:
        return planned
    kind = reminder_kind(invoice.due_date, today)
    # At most once per (invoice, kind), by the outbox's unique key. Its return value cannot tell whether this call
    # inserted the row (on PostgreSQL the INSERT … ON CONFLICT reports no row count), so the row itself is read:
    # one still queued is sent now, whoever queued it; one already sent or failed is someone else's reminder.
    queue_notification(invoice.customer_id, kind, invoice.id, REMINDER_SUBJECTS[kind].format(n=invoice.number))
    notification = db.session.scalar(select(Notification).where(Notification.invoice_id == invoice.id,
                                                                 Notification.kind == kind)
                                     .execution_options(populate_existing=True))
    if notification.status != "queued":
        return Outcome("skipped_already_reminded", "Reminded already.")
    audit.record("invoice.remind", invoice, after={"kind": kind, "notification_id": notification.id},
                 customer_id=invoice.customer_id)
    outcome = delivery.deliver(notification.id)
    if outcome == "sent":
        return Outcome("reminded", f"Sent to {notification.recipient}.")
    if outcome == "retry":
        return Outcome("queued", f"Not sent yet ({notification.last_error}); the next delivery run retries it.")
    return Outcome("failed", notification.last_error or "The reminder could not be sent.")


ACTIONS = {
    "send_invoices": BulkAction("send_invoices", "Send invoices", "invoice", _rows,
                                lambda row, today: _would_send(row.state), send_unsent_invoice),
    "send_reminders": BulkAction("send_reminders", "Send reminders", "invoice", _rows,
                                 lambda row, today: _would_remind(row.state, today), remind_invoice),
}
