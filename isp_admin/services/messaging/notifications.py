"""The notification outbox: queued in the transaction that causes it, delivered later by a job."""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import Customer, Notification
from isp_admin.services.platform.bulk import is_postgres


def _insert():
    if is_postgres():
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def queue_notification(customer_id: int, kind: str, invoice_id: int | None, subject: str) -> bool:
    """Queue one email; with an invoice, each kind is queued at most once (the outbox's unique key)."""
    email = db.session.scalar(select(Customer.email).where(Customer.id == customer_id))
    stmt = _insert()(Notification.__table__).values(
        customer_id=customer_id, invoice_id=invoice_id, kind=kind, channel="email", recipient=email,
        subject=subject, status="queued", attempts=0)
    if invoice_id is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["invoice_id", "kind"])
    # The returned id says whether a row went in: rowcount is -1 on PostgreSQL for an INSERT that returns rows.
    return db.session.execute(stmt.returning(Notification.__table__.c.id)).first() is not None


def queue_many(rows: list[dict]) -> int:
    """Queue many notifications at once, skipping any (invoice, kind) already queued; return how many."""
    if not rows:
        return 0
    from isp_admin.models.base import utcnow

    now = utcnow()
    emails = dict(db.session.execute(select(Customer.id, Customer.email).where(
        Customer.id.in_({row["customer_id"] for row in rows}))).all())
    rows = [{**row, "recipient": row.get("recipient") or emails.get(row["customer_id"])} for row in rows]
    values = [{"channel": "email", "status": "queued", "attempts": 0, "created_at": now, **row} for row in rows]
    # An executemany (batched by SQLAlchemy) rather than one giant VALUES list, which is slow to compile.
    stmt = (_insert()(Notification.__table__).on_conflict_do_nothing(index_elements=["invoice_id", "kind"])
            .returning(Notification.__table__.c.id))
    return len(db.session.execute(stmt, values).all())
