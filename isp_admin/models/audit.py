"""The audit trail: one event per write that touches money, service state or configuration."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

# A staff user, an API token, a customer in the portal (actor_id: the customer's id), or the system (jobs, CLI).
ACTOR_TYPES = ("user", "token", "system", "customer")


class AuditEvent(db.Model):
    """Who did what to which record, with the record before and after."""

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint(in_list("actor_type", ACTOR_TYPES), name="actor_type"),
        Index("ix_audit_events_entity", "entity_type", "entity_id", "id"),
        Index("ix_audit_events_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(8))
    actor_id: Mapped[int | None]
    actor_label: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int | None]
    # The customer the event concerns, so a customer's page shows its whole history with one indexed query.
    # No foreign key: the trail is append-only and must outlive whatever it describes.
    customer_id: Mapped[int | None]
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    ip: Mapped[str | None] = mapped_column(String(45))
