"""Idempotency-Key payments: the header, a payment's body, and the payments and keys as committed."""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import IdempotencyKey, Payment

KEY = "Idempotency-Key"


def payment_body(customer_id: int, amount_cents: int = 2500, **more) -> dict:
    """A cash payment of `amount_cents` from the customer."""
    return {"customer_id": customer_id, "amount_cents": amount_cents, "method": "cash", **more}


def payments_of(customer_id: int) -> list[Payment]:
    """The customer's payments, oldest first, as committed."""
    db.session.expire_all()
    return list(db.session.scalars(select(Payment).where(Payment.customer_id == customer_id).order_by(Payment.id)))


def key_rows() -> list[IdempotencyKey]:
    """Every stored Idempotency-Key, oldest first, as committed."""
    db.session.expire_all()
    return list(db.session.scalars(select(IdempotencyKey).order_by(IdempotencyKey.id)))
