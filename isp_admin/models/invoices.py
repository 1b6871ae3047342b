"""Invoices, their lines, credit notes, and the gapless document number sequences."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

INVOICE_STATUSES = ("draft", "open", "overdue", "paid", "void")
# Issued and not settled: what a customer still owes on, what payments and credit are applied to.
OPEN_STATUSES = ("open", "overdue")
LINE_KINDS = ("subscription", "setup_fee", "plan_change", "adjustment")
CREDIT_NOTE_KINDS = ("void", "cancellation", "plan_change", "manual")


def invoice_balance(columns):
    """Return what is still owed from anything carrying the invoice's money columns (a row, `Invoice.__table__.c`)."""
    return columns.total_cents - columns.amount_paid_cents - columns.credit_applied_cents


class DocumentSequence(db.Model):
    """The last number issued per document prefix and year; its row lock keeps numbers gapless."""

    __tablename__ = "document_sequences"
    __table_args__ = (CheckConstraint("last_number >= 0", name="last_number_non_negative"),)

    prefix: Mapped[str] = mapped_column(String(8), primary_key=True)
    year: Mapped[int] = mapped_column(primary_key=True)
    last_number: Mapped[int] = mapped_column(default=0)


class Invoice(db.Model):
    """A bill to one customer: issued once, never edited, corrected only by void and credit note."""

    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint(in_list("status", INVOICE_STATUSES), name="status"),
        CheckConstraint("(status = 'draft') = (number IS NULL)", name="number_iff_issued"),
        CheckConstraint("subtotal_cents >= 0 AND tax_cents >= 0", name="amounts_non_negative"),
        CheckConstraint("total_cents = subtotal_cents + tax_cents", name="total_is_sum"),
        CheckConstraint("amount_paid_cents >= 0 AND credit_applied_cents >= 0", name="applied_non_negative"),
        CheckConstraint("amount_paid_cents + credit_applied_cents <= total_cents", name="not_overpaid"),
        CheckConstraint("due_date >= issue_date", name="due_after_issue"),
        CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name="paid_at_iff_paid"),
        CheckConstraint("(status = 'void') = (voided_at IS NOT NULL)", name="voided_at_iff_void"),
        Index("ix_invoices_customer_status", "customer_id", "status"),
        Index("ix_invoices_status_due", "status", "due_date"),
        Index("ix_invoices_issue_date", "issue_date", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(20), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(8))
    issue_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    tax_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_paid_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    credit_applied_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    void_reason: Mapped[str | None] = mapped_column(Text)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    lines = relationship("InvoiceLine", lazy="raise", order_by="InvoiceLine.id")
    customer = relationship("Customer", lazy="raise")

    @hybrid_property
    def balance_cents(self) -> int:
        """What is still owed on this invoice (on the class: the same arithmetic as a SQL expression)."""
        return invoice_balance(self)

    @hybrid_property
    def is_open(self) -> bool:
        """Whether the invoice is issued and not settled (on the class: a status IN (...) condition)."""
        return self.status in OPEN_STATUSES

    @is_open.inplace.expression
    @classmethod
    def _is_open_expression(cls):
        return cls.status.in_(OPEN_STATUSES)


class InvoiceLine(db.Model):
    """One charge on an invoice; a subscription's period is billed at most once, by the database's word."""

    __tablename__ = "invoice_lines"
    __table_args__ = (
        # A subscription's period is billed once (kind 'subscription'); a plan change charges the rest of a period
        # once per day (kind 'plan_change'). Its leading column also serves every lookup by subscription.
        UniqueConstraint("subscription_id", "period_start", "kind", name="uq_invoice_lines_subscription_period"),
        CheckConstraint(in_list("kind", LINE_KINDS), name="kind"),
        CheckConstraint("amount_cents >= 0 AND tax_cents >= 0 AND unit_price_cents >= 0", name="money_non_negative"),
        CheckConstraint("tax_rate_bp BETWEEN 0 AND 10000", name="tax_rate_range"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("period_end IS NULL OR period_end > period_start", name="period_order"),
        CheckConstraint("days IS NULL OR (days > 0 AND days <= period_days)", name="days_within_period"),
        CheckConstraint("(kind = 'subscription') <= (subscription_id IS NOT NULL)", name="subscription_line_has_sub"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(255))
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    days: Mapped[int | None]
    period_days: Mapped[int | None]
    quantity: Mapped[int] = mapped_column(default=1)
    unit_price_cents: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    tax_rate_bp: Mapped[int]
    tax_cents: Mapped[int] = mapped_column(BigInteger)


class CreditNote(db.Model):
    """Money owed back to a customer: a void, unused days of a cancellation or plan change, or by hand."""

    __tablename__ = "credit_notes"
    __table_args__ = (
        CheckConstraint(in_list("kind", CREDIT_NOTE_KINDS), name="kind"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        CheckConstraint("subtotal_cents >= 0 AND tax_cents >= 0 AND amount_cents = subtotal_cents + tax_cents",
                        name="amount_is_sum"),
        # One void credit note per invoice: voiding twice is impossible, not just unlikely.
        Index("uq_credit_notes_void_invoice", "invoice_id", unique=True,
              postgresql_where=db.text("kind = 'void'"), sqlite_where=db.text("kind = 'void'")),
        # One cancellation credit per subscription, one plan-change credit per subscription and day: a repeated
        # cancel or plan change cannot credit the same unused days twice.
        Index("uq_credit_notes_cancellation", "subscription_id", unique=True,
              postgresql_where=db.text("kind = 'cancellation'"), sqlite_where=db.text("kind = 'cancellation'")),
        Index("uq_credit_notes_plan_change", "subscription_id", "issue_date", unique=True,
              postgresql_where=db.text("kind = 'plan_change'"), sqlite_where=db.text("kind = 'plan_change'")),
        Index("ix_credit_notes_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    issue_date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_cents: Mapped[int] = mapped_column(BigInteger)
    tax_cents: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
