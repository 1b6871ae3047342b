"""CSV imports: the uploaded file, kept between its preview and its apply, and what the last check found."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

IMPORT_KINDS = ("customers", "payments")
IMPORT_STATUSES = ("previewed", "applied")
DATE_FORMATS = ("iso", "dmy", "mdy")
# One file applied once: a second apply of the same bytes must name the first (repeat_of), which staff confirm.
_FIRST_APPLY = text("status = 'applied' AND repeat_of IS NULL")


class CsvImport(db.Model):
    """An uploaded CSV file: apply runs exactly these bytes, the ones the preview checked."""

    __tablename__ = "imports"
    __table_args__ = (
        CheckConstraint(in_list("kind", IMPORT_KINDS), name="kind"),
        CheckConstraint(in_list("status", IMPORT_STATUSES), name="status"),
        CheckConstraint(in_list("date_format", DATE_FORMATS), name="date_format"),
        CheckConstraint("(status = 'applied') = (applied_at IS NOT NULL)", name="applied_at_iff_applied"),
        Index("uq_imports_applied_sha256", "kind", "sha256", unique=True,
              postgresql_where=_FIRST_APPLY, sqlite_where=_FIRST_APPLY),
        Index("ix_imports_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    # Deferred: lists and the preview page never need the bytes, only apply does.
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    row_count: Mapped[int] = mapped_column(default=0)
    error_count: Mapped[int] = mapped_column(default=0)
    date_format: Mapped[str] = mapped_column(String(8), default="iso")
    decimal_comma: Mapped[bool] = mapped_column(default=False)
    skip_debits: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(12), default="previewed")
    # The last check (preview, or an apply refused for errors): counts, per-row errors and notices, as JSON.
    report: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    applied_by: Mapped[str | None] = mapped_column(String(254))
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    repeat_of: Mapped[int | None] = mapped_column(ForeignKey("imports.id", ondelete="RESTRICT"))
