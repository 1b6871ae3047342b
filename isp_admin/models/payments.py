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
        UniqueConstraint("provider", "refund_ref", name="uq_payments_refund_ref"),
        Index("ix_payments_customer", "customer_id", "id"),
        Index("ix_payments_received", "received_on", "id"),
        # A refund made in a provider's dashboard names the provider's payment reference (events.find_attempt).
        Index("ix_payments_provider_reference", "provider", "reference"),
        # The global search: a bank reference whole or by its beginning, a provider's reference (migration 0013).
        Index("ix_payments_reference", "reference"),
        Index("ix_payments_provider_ref", "provider_ref"),
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
    refund_ref: Mapped[str | None] = mapped_column(String(120))  # the provider's refund id, when refunded there
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


ATTEMPT_STATUSES = ("pending", "succeeded", "failed", "expired")
EVENT_OUTCOMES = ("recorded", "credited", "already_recorded", "failed", "refunded", "ignored", "unmatched",
                  "held")


class PaymentAttempt(db.Model):
    """A payment started with a provider (a hosted checkout or a push to a phone) and not yet known to be final.

    At most one payment per attempt: the payment it makes carries (provider, provider_ref) = the attempt's, which
    uq_payments_provider_ref holds unique, whichever of webhook, callback or status poll records it first.
    """

    __tablename__ = "payment_attempts"
    __table_args__ = (
        CheckConstraint(in_list("status", ATTEMPT_STATUSES), name="status"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint("(status = 'succeeded') = (payment_id IS NOT NULL)", name="payment_iff_succeeded"),
        UniqueConstraint("public_id", name="uq_payment_attempts_public_id"),
        UniqueConstraint("provider", "provider_ref", name="uq_payment_attempts_provider_ref"),
        UniqueConstraint("payment_id", name="uq_payment_attempts_payment"),
        Index("ix_payment_attempts_customer", "customer_id", "id"),
        Index("ix_payment_attempts_pending", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40))  # random: what URLs, metadata and callbacks name
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    provider: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str | None] = mapped_column(String(120))  # Checkout Session id, CheckoutRequestID
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    phone: Mapped[str | None] = mapped_column(String(20))
    redirect_url: Mapped[str | None] = mapped_column(Text)
    callback_token_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of the callback URL's secret
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # last status query
    checks: Mapped[int] = mapped_column(default=0)


class ProviderEvent(db.Model):
    """A notification from a provider (webhook, callback, or the answer to a status query), stored once.

    UNIQUE(provider, event_id), written in the same transaction as the payment it records: a replayed or
    concurrent delivery finds the row and changes nothing.
    """

    __tablename__ = "provider_events"
    __table_args__ = (
        CheckConstraint(in_list("outcome", EVENT_OUTCOMES), name="outcome"),
        UniqueConstraint("provider", "event_id", name="uq_provider_events_event"),
        Index("ix_provider_events_attempt", "attempt_id"),
        Index("ix_provider_events_received", "received_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(80))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("payment_attempts.id", ondelete="RESTRICT"))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"))
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # An unmatched or held notification stays on the staff's list (and the alert) until someone says what they did.
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(254))
    resolution: Mapped[str | None] = mapped_column(String(500))


class PaymentProviderSetting(db.Model):
    """Whether a configured provider is offered to customers (its secrets live in the config, never here)."""

    __tablename__ = "payment_provider_settings"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=False)
    updated_by: Mapped[str | None] = mapped_column(String(254))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
