"""Read-only network lists for the pages and the API."""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import CoaRequest


def coa_requests(*, status: str | None = None, subscription_id: int | None = None, limit: int = 100) -> list:
    """The newest CoA requests (optionally of one status or subscription), at most `limit`."""
    stmt = select(CoaRequest).order_by(CoaRequest.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(CoaRequest.status == status)
    if subscription_id:
        stmt = stmt.where(CoaRequest.subscription_id == subscription_id)
    return list(db.session.scalars(stmt))
