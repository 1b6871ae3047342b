"""queue_notification says whether it queued: True for a new email, False for an (invoice, kind) already queued
(callers rely on it to count what they sent; PostgreSQL reported -1 rows and every call said False)."""
from __future__ import annotations

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import Notification
from isp_admin.services.billing import invoices
from isp_admin.services.messaging.notifications import queue_notification
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory


def test_it_answers_true_once_per_invoice_and_kind_and_always_without_an_invoice(app):
    customer = CustomerFactory(email="wambui@mail.example")
    draft = invoices.create_draft(customer.id, [{"description": "Router", "unit_price_cents": 4900}], today())
    invoice = invoices.issue(draft.id, today())  # queues its "invoice" email
    db.session.commit()

    assert queue_notification(customer.id, "invoice", invoice.id, "Invoice again") is False
    assert queue_notification(customer.id, "reminder_due", invoice.id, "Due today") is True
    assert queue_notification(customer.id, "reminder_due", invoice.id, "Due today") is False
    assert queue_notification(customer.id, "reactivation", None, "Back online") is True
    assert queue_notification(customer.id, "reactivation", None, "Back online") is True
    db.session.commit()
    kinds = dict(db.session.execute(select(Notification.kind, func.count()).group_by(Notification.kind)).all())
    assert kinds == {"invoice": 1, "reminder_due": 1, "reactivation": 2}
