"""Service plans (speed tiers and their prices)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String, true
from sqlalchemy.orm import Mapped, mapped_column

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, utcnow


class Plan(db.Model):
    """A service plan; one in use is retired (active=False), never deleted."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("download_mbps > 0", name="download_positive"),
        CheckConstraint("upload_mbps > 0", name="upload_positive"),
        CheckConstraint("data_cap_gb IS NULL OR data_cap_gb > 0", name="data_cap_positive"),
        CheckConstraint("monthly_price_cents >= 0", name="price_non_negative"),
        CheckConstraint("setup_fee_cents >= 0", name="setup_fee_non_negative"),
        CheckConstraint("tax_rate_bp >= 0 AND tax_rate_bp <= 10000", name="tax_rate_range"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    download_mbps: Mapped[int]
    upload_mbps: Mapped[int]
    data_cap_gb: Mapped[int | None]
    monthly_price_cents: Mapped[int]
    setup_fee_cents: Mapped[int] = mapped_column(default=0, server_default="0")
    tax_rate_bp: Mapped[int] = mapped_column(default=0, server_default="0")
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
