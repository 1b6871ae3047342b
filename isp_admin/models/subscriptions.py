"""Subscriptions: a customer's service on a plan."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

SUBSCRIPTION_STATUSES = ("pending", "active", "suspended", "cancelled")
SUSPENSION_REASONS = ("non_payment", "manual", "vacation")
_LIVE = text("status <> 'cancelled'")


class Subscription(db.Model):
    """A customer's service on a plan, billed monthly on its billing day."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(in_list("status", SUBSCRIPTION_STATUSES), name="status"),
        CheckConstraint(
            f"suspension_reason IS NULL OR {in_list('suspension_reason', SUSPENSION_REASONS)}",
            name="suspension_reason",
        ),
        # A suspension always has a reason, and only a suspension has one.
        CheckConstraint(
            "(status = 'suspended' AND suspension_reason IS NOT NULL)"
            " OR (status <> 'suspended' AND suspension_reason IS NULL)",
            name="reason_iff_suspended",
        ),
        CheckConstraint("billing_day BETWEEN 1 AND 31", name="billing_day_range"),
        CheckConstraint("end_date IS NULL OR end_date >= start_date", name="end_after_start"),
        CheckConstraint("price_override_cents IS NULL OR price_override_cents >= 0",
                        name="price_override_non_negative"),
        # A PPPoE login or a static IP belongs to one live subscription at a time; cancelled ones free it. A login
        # is stored as typed and is the same login whatever its case (migration 0011; docs/network.md).
        Index("uq_subscriptions_pppoe_live", text("lower(pppoe_username)"), unique=True,
              postgresql_where=_LIVE, sqlite_where=_LIVE),
        Index("uq_subscriptions_static_ip_live", "static_ip", unique=True,
              postgresql_where=_LIVE, sqlite_where=_LIVE),
        Index("ix_subscriptions_plan_status", "plan_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"), index=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16))
    suspension_reason: Mapped[str | None] = mapped_column(String(16))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    billing_day: Mapped[int]
    next_bill_date: Mapped[date] = mapped_column(Date, index=True)
    # The first day this system bills (coverage starts here): NULL means the start date. A subscription brought
    # over from another system with its earlier periods billed there starts its coverage at its first bill here.
    billed_from: Mapped[date | None] = mapped_column(Date)
    # Held for review: billing skips it, and says why, until someone approves what the run would issue (a catch-up
    # longer than MAX_CATCH_UP_PERIODS is never issued silently). catch_up_approved lets the next run bill it all.
    billing_hold_reason: Mapped[str | None] = mapped_column(String(255))
    billing_held_on: Mapped[date | None] = mapped_column(Date)
    catch_up_approved: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    price_override_cents: Mapped[int | None]
    pppoe_username: Mapped[str | None] = mapped_column(String(64))
    static_ip: Mapped[str | None] = mapped_column(String(45))
    cpe_mac: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    customer = relationship("Customer", back_populates="subscriptions", lazy="raise")
    plan = relationship("Plan", lazy="raise")


class SuspensionPeriod(db.Model):
    """The days a subscription actually spent suspended: [started_on, ended_on), open while it lasts.

    Billing coverage (DESIGN §3) counts these days as the only ones a live subscription may leave unbilled.
    """

    __tablename__ = "suspension_periods"
    __table_args__ = (
        CheckConstraint(in_list("reason", SUSPENSION_REASONS), name="reason"),
        CheckConstraint("ended_on IS NULL OR ended_on >= started_on", name="ends_after_start"),
        # A subscription is suspended at most once at a time.
        Index("uq_suspension_periods_open", "subscription_id", unique=True,
              postgresql_where=text("ended_on IS NULL"), sqlite_where=text("ended_on IS NULL")),
        Index("ix_suspension_periods_subscription", "subscription_id", "started_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="RESTRICT"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"), index=True)
    reason: Mapped[str] = mapped_column(String(16))
    started_on: Mapped[date] = mapped_column(Date)
    ended_on: Mapped[date | None] = mapped_column(Date)
