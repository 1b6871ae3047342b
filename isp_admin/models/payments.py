"""Payments, and how payments and credit notes are applied to invoices."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

PAYMENT_METHODS = ("cash", "bank_transfer", "card", "mobile_money", "provider")
PAYMENT_STATUSES = ("completed", "reversed")


class Payment(db.Model):
    """Money received from a customer; reversed, never deleted."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(in_list("method", PAYMENT_METHODS), name="method"),
        CheckConstraint(in_list("status", PAYMENT_STATUSES), name="status"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint("(status = 'reversed') = (reversed_at IS NOT NULL)", name="reversed_at_iff_reversed"),
        # The same provider event, or the same client retry, can never make a second payment.
        UniqueConstraint("provider", "provider_ref", name="uq_payments_provider_ref"),
        UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_payments_idempotency"),
        Index("ix_payments_customer", "customer_id", "id"),
        Index("ix_payments_received", "received_on", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(120))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_ref: Mapped[str | None] = mapped_column(String(120))
    idempotency_scope: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    received_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="completed")
    recorded_by: Mapped[str] = mapped_column(String(254))
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reversal_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PaymentAllocation(db.Model):
    """Part of a payment applied to an invoice; a reversal marks it, never deletes it."""

    __tablename__ = "payment_allocations"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        Index("ix_payment_allocations_invoice", "invoice_id"),
        Index("ix_payment_allocations_payment", "payment_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"))
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CreditAllocation(db.Model):
    """Part of a credit note applied to an invoice."""

    __tablename__ = "credit_allocations"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        Index("ix_credit_allocations_invoice", "invoice_id"),
        Index("ix_credit_allocations_credit_note", "credit_note_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    credit_note_id: Mapped[int] = mapped_column(ForeignKey("credit_notes.id", ondelete="RESTRICT"))
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
