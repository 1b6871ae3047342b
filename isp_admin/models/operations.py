"""Operational records: the notification outbox and the ledger of job runs."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

NOTIFICATION_KINDS = ("invoice", "reminder_before", "reminder_due", "reminder_after", "suspension", "reactivation")
NOTIFICATION_STATUSES = ("queued", "sent", "failed")
JOB_STATUSES = ("running", "succeeded", "failed", "partial")


class Notification(db.Model):
    """An email to a customer, queued in the same transaction as what caused it; sent at most once per kind."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("invoice_id", "kind", name="uq_notifications_invoice_kind"),
        CheckConstraint(in_list("kind", NOTIFICATION_KINDS), name="kind"),
        CheckConstraint(in_list("status", NOTIFICATION_STATUSES), name="status"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_notifications_status", "status", "id"),
        Index("ix_notifications_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str] = mapped_column(String(16), default="email")
    recipient: Mapped[str | None] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(8), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobRun(db.Model):
    """One run of a billing step: what it did, for which date, and how it ended."""

    __tablename__ = "job_runs"
    __table_args__ = (
        CheckConstraint(in_list("status", JOB_STATUSES), name="status"),
        Index("ix_job_runs_kind_started", "kind", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(48))
    as_of: Mapped[date] = mapped_column(Date)
    dry_run: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(12), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    total_chunks: Mapped[int] = mapped_column(default=0)
    done_chunks: Mapped[int] = mapped_column(default=0)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    triggered_by: Mapped[str] = mapped_column(String(254))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))


class ChangeVersion(db.Model):
    """A table's data version: PostgreSQL bumps it in every transaction that changes the table (migration 0004).

    Caches of counts, page anchors and list ETags are keyed by these numbers, so a cached figure is used only while
    its table is exactly as it was computed from (isp_admin.services.platform.versions).
    """

    __tablename__ = "change_versions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
