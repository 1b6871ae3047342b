"""Committed starting positions for races: open invoices, drafts, payments, billed or due subscriptions.

Each is made through the service layer (as the app would make it) and committed, so the server sees it.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, InvoiceLine, Payment, PaymentAllocation, Subscription
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments
from isp_admin.services.billing import run as billing
from isp_admin.services.platform.clock import today
from tests.factories import SubscriptionFactory


def draft(customer_id: int, cents: int = 10000) -> Invoice:
    """A draft of one line of `cents`, no tax."""
    invoice = invoice_service.create_draft(customer_id, [{"description": "Router", "unit_price_cents": cents}],
                                           today())
    db.session.commit()
    return invoice


def open_invoice(customer_id: int, cents: int = 10000) -> Invoice:
    """An issued, unpaid invoice of `cents`."""
    invoice = draft(customer_id, cents)
    invoice_service.issue(invoice.id, today())
    db.session.commit()
    return invoice


def payment(customer_id: int, cents: int, invoice_id: int | None = None) -> Payment:
    """A cash payment of `cents` received today, allocated to `invoice_id` first."""
    made, _ = payments.record_payment(customer_id, cents, "cash", today(), today(), invoice_id=invoice_id)
    db.session.commit()
    return made


def due_subscription(customer, plan, days_ago: int = 0) -> Subscription:
    """A subscription that started `days_ago` (default today) on its billing day and was never billed: its first
    period [start, +1 month) is due."""
    day = today() - timedelta(days=days_ago)
    return SubscriptionFactory(customer=customer, plan=plan, start_date=day, billing_day=day.day,
                               next_bill_date=day)


def billed_subscription(customer, plan, days_ago: int = 0) -> Subscription:
    """A subscription that started `days_ago` (default today) whose first period [start, +1 month) is billed
    (one invoice, open)."""
    sub = due_subscription(customer, plan, days_ago)
    assert billing.generate_invoice_for_customer(customer.id, today()) is not None
    db.session.commit()
    return sub


def fresh(model, id_: int):
    """The committed row (None when it is gone)."""
    db.session.rollback()
    db.session.expire_all()
    return db.session.get(model, id_)


def allocations_to(invoice_id: int, active_only: bool = True) -> list[int]:
    """The amounts of the payment allocations to an invoice (by default only those not reversed), in order."""
    query = select(PaymentAllocation.amount_cents).where(PaymentAllocation.invoice_id == invoice_id)
    if active_only:
        query = query.where(PaymentAllocation.reversed_at.is_(None))
    return list(db.session.scalars(query.order_by(PaymentAllocation.id)))


def payment_ids(customer_id: int) -> list[int]:
    """The customer's payments' ids, oldest first."""
    return list(db.session.scalars(select(Payment.id).where(Payment.customer_id == customer_id).order_by(Payment.id)))


def credit_notes(kind: str, **where) -> list[CreditNote]:
    """Credit notes of `kind` matching column values (invoice_id=…, subscription_id=…)."""
    query = select(CreditNote).where(CreditNote.kind == kind, *[getattr(CreditNote, k) == v for k, v in where.items()])
    return list(db.session.scalars(query.order_by(CreditNote.id)))


def billed_cents(subscription_id: int) -> int:
    """What the subscription's period and plan-change lines on issued, non-void invoices charge, tax included."""
    return int(db.session.scalar(
        select(func.coalesce(func.sum(InvoiceLine.amount_cents + InvoiceLine.tax_cents), 0))
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(InvoiceLine.subscription_id == subscription_id, Invoice.status.not_in(("draft", "void")))))


def credited_cents(subscription_id: int) -> int:
    """What cancellation and plan-change credit notes gave back for the subscription."""
    return int(db.session.scalar(select(func.coalesce(func.sum(CreditNote.amount_cents), 0)).where(
        CreditNote.subscription_id == subscription_id, CreditNote.kind.in_(("cancellation", "plan_change")))))


def audit_ids(action: str, entity_type: str, entity_id: int) -> list[int]:
    """The ids of the audit events `action` on one record, in order."""
    from isp_admin.models import AuditEvent

    return list(db.session.scalars(select(AuditEvent.id).where(
        AuditEvent.action == action, AuditEvent.entity_type == entity_type, AuditEvent.entity_id == entity_id)
        .order_by(AuditEvent.id)))
