"""Deliver the notification outbox: compose each email (an invoice gets its PDF), send it, record the outcome.

deliver() handles ONE notification and flushes; the caller commits right after each one, because an email
that has left cannot be rolled back, so its "sent" mark must not wait for a whole batch. The row is taken
FOR UPDATE SKIP LOCKED, so two workers never send the same email.
"""
from __future__ import annotations

import logging

from flask import current_app, render_template
from sqlalchemy import select

from isp_admin.errors import BusinessRuleViolation, NotFound
from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Notification
from isp_admin.models.base import utcnow
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.billing.pdf import company, pdf_filename, render_invoice_pdf
from isp_admin.services.messaging.mail import send_email
from isp_admin.services.platform import audit
from isp_admin.services.platform.bulk import is_postgres
from isp_admin.services.platform.clock import today

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3


class DeliveryError(Exception):
    """This notification cannot be sent as it stands (no address, no invoice); retrying will not help."""


def queued_ids(first: int | None = None, last: int | None = None, limit: int | None = None) -> list[int]:
    """Return the ids of queued notifications (optionally within first..last), ascending."""
    stmt = select(Notification.id).where(Notification.status == "queued").order_by(Notification.id)
    if first is not None and last is not None:
        stmt = stmt.where(Notification.id.between(first, last))
    if limit:
        stmt = stmt.limit(limit)
    return list(db.session.scalars(stmt))


def compose(notification: Notification) -> tuple[str, str, str, list]:
    """Return (to, subject, text, attachments) for one notification."""
    customer = db.session.get(Customer, notification.customer_id)
    if not customer.email:
        raise DeliveryError(f"Customer {customer.account_number} has no email address; add one, then retry.")
    invoice = db.session.get(Invoice, notification.invoice_id) if notification.invoice_id else None
    if invoice is None and (notification.kind.startswith("reminder") or notification.kind == "invoice"):
        raise DeliveryError(f"A {notification.kind} notification needs an invoice.")
    if invoice is not None and notification.kind == "invoice" and invoice.status == "void":
        raise DeliveryError(f"Not sent: invoice {invoice.number} was voided before it went out.")
    if invoice is not None and notification.kind.startswith("reminder") and invoice.status in ("paid", "void"):
        # Queued at night, paid in the morning: a reminder now would ask for money that is not owed.
        raise DeliveryError(f"Not sent: invoice {invoice.number} is {invoice.status}; no reminder is due.")
    context = {"customer": customer, "invoice": invoice, "company": company(),
               "currency": invoice.currency if invoice else current_app.config["CURRENCY"],
               "grace_days": current_app.config["GRACE_DAYS"]}
    if notification.kind in ("suspension", "reactivation"):
        context["balance"] = customer_balance(customer.id, today())
    text = render_template(f"emails/{notification.kind}.txt", **context)
    attachments = []
    if notification.kind == "invoice":
        attachments.append((pdf_filename(invoice), "application/pdf", render_invoice_pdf(invoice.id)))
    return customer.email, notification.subject, text, attachments


def _take(notification_id: int) -> Notification | None:
    stmt = (select(Notification).where(Notification.id == notification_id, Notification.status == "queued")
            .execution_options(populate_existing=True))
    if is_postgres():
        stmt = stmt.with_for_update(skip_locked=True)
    return db.session.scalar(stmt)


def deliver(notification_id: int) -> str:
    """Send one queued notification; return "sent", "retry" (queued again), "failed" or "skipped"."""
    notification = _take(notification_id)
    if notification is None:
        return "skipped"  # sent or failed already, or another worker holds it
    notification.attempts += 1
    try:
        to, subject, text, attachments = compose(notification)
        notification.recipient = to
        send_email(to, subject, text, attachments)
    except DeliveryError as exc:
        return _failed(notification, str(exc), final=True)
    except Exception as exc:  # noqa: BLE001  (SMTP, network, rendering: recorded on the row and retried)
        log.warning("notification %s: delivery failed: %s", notification.id, exc)
        return _failed(notification, f"{type(exc).__name__}: {exc}", final=notification.attempts >= MAX_ATTEMPTS)
    now = utcnow()
    notification.status = "sent"
    notification.sent_at = now
    notification.last_error = None
    if notification.kind == "invoice" and notification.invoice_id:
        invoice = db.session.get(Invoice, notification.invoice_id)
        invoice.sent_at = now
    db.session.flush()
    return "sent"


def _failed(notification: Notification, error: str, final: bool) -> str:
    notification.last_error = error[:2000]
    notification.status = "failed" if final else "queued"
    db.session.flush()
    return "failed" if final else "retry"


def deliver_many(notification_ids: list[int], commit) -> dict:
    """Deliver each notification, calling `commit` after each one; return counts by outcome."""
    counts = {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}
    for notification_id in notification_ids:
        counts[deliver(notification_id)] += 1
        commit()
    return counts


def send_invoice(invoice_id: int) -> Notification:
    """Queue an issued invoice's email (again, if it was sent before) and deliver it now; return the outbox row."""
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound("No such invoice.")
    if invoice.status in ("draft", "void"):
        raise BusinessRuleViolation(f"A {invoice.status} invoice cannot be sent.")
    notification = db.session.scalar(select(Notification).where(
        Notification.invoice_id == invoice_id, Notification.kind == "invoice"))
    if notification is None:
        from isp_admin.services.messaging.notifications import queue_notification

        queue_notification(invoice.customer_id, "invoice", invoice.id, f"Invoice {invoice.number}")
        notification = db.session.scalar(select(Notification).where(
            Notification.invoice_id == invoice_id, Notification.kind == "invoice"))
    else:
        notification.status, notification.attempts, notification.last_error = "queued", 0, None
    audit.record("invoice.send", invoice, after={"notification_id": notification.id},
                 customer_id=invoice.customer_id)
    db.session.flush()
    deliver(notification.id)
    return notification


def retry_notification(notification_id: int) -> Notification:
    """Put a failed notification back in the queue with fresh attempts."""
    notification = db.session.get(Notification, notification_id)
    if notification is None:
        raise NotFound("No such notification.")
    if notification.status != "failed":
        raise BusinessRuleViolation("Only a failed notification can be retried.")
    notification.status, notification.attempts, notification.last_error = "queued", 0, None
    audit.record("notification.retry", notification, customer_id=notification.customer_id)
    db.session.flush()
    return notification
