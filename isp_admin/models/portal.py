"""The subscriber portal: a customer's own sign-in, and the plan changes they ask staff for."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

PLAN_CHANGE_STATUSES = ("pending", "approved", "rejected", "withdrawn")


class PortalAccount(db.Model):
    """A customer's portal sign-in: no password until they set one through an emailed link.

    Apart from staff users on purpose: a customer can never hold a staff role, and the portal's session names
    this row, never a user.
    """

    __tablename__ = "portal_accounts"
    __table_args__ = (UniqueConstraint("customer_id", name="uq_portal_accounts_customer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    session_version: Mapped[int] = mapped_column(default=1)  # bumped by a password change: other sessions end
    password_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    email_reminders: Mapped[bool] = mapped_column(default=True)  # payment reminders by email
    email_receipts: Mapped[bool] = mapped_column(default=True)  # a receipt when an online payment lands
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PlanChangeRequest(db.Model):
    """A customer's request to move a subscription to another plan, which staff approve or reject."""

    __tablename__ = "plan_change_requests"
    __table_args__ = (
        CheckConstraint(in_list("status", PLAN_CHANGE_STATUSES), name="status"),
        CheckConstraint("(status = 'pending') = (decided_at IS NULL)", name="decided_iff_not_pending"),
        # One open request per subscription: a double-clicked "request" cannot queue two.
        Index("uq_plan_change_requests_pending", "subscription_id", unique=True,
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        Index("ix_plan_change_requests_status", "status", "requested_at"),
        Index("ix_plan_change_requests_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="RESTRICT"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    note: Mapped[str | None] = mapped_column(String(500))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(254))
    decision_note: Mapped[str | None] = mapped_column(String(500))
