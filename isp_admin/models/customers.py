"""Customers of the ISP."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Computed, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

CUSTOMER_STATUSES = ("active", "suspended", "closed")
# One lower-cased haystack for substring search: a single trigram index serves it on PostgreSQL, where an OR
# over four columns makes the planner fall back to a sequential scan.
SEARCH_TEXT = ("lower(name || ' ' || account_number || ' ' || coalesce(email, '') || ' ' || "
               "coalesce(phone, ''))")


class Customer(db.Model):
    """A person or business that buys service; its status follows its subscriptions."""

    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint(in_list("status", CUSTOMER_STATUSES), name="status"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        # Keyset pagination walks these (sort column, id) pairs.
        Index("ix_customers_name_id", "name", "id"),
        Index("ix_customers_status_id", "status", "id"),
        # Portal sign-in and password links find customers by email (stored lower-cased, compared as typed).
        Index("ix_customers_email", "email"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_number: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    service_address: Mapped[str | None] = mapped_column(Text)
    billing_address: Mapped[str | None] = mapped_column(Text)
    tax_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    notes: Mapped[str | None] = mapped_column(Text)
    search_text: Mapped[str] = mapped_column(Text, Computed(SEARCH_TEXT, persisted=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    subscriptions = relationship("Subscription", back_populates="customer", lazy="raise",
                                 order_by="Subscription.id")
