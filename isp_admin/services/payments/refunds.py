"""Refunding a payment made online: at the provider first (outside the customer's lock), then reversed here.

The refund is stored as a provider event (refund:<provider's refund id>) in the transaction that reverses the
payment, so the staff see it beside the payment's other events, and the refund webhook that follows finds the
payment reversed and changes nothing. A provider without a refund API is refunded in its own dashboard, then
recorded here by hand with the reference it gave.
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid
from isp_admin.extensions import db
from isp_admin.models import Payment, PaymentAttempt, ProviderEvent
from isp_admin.services.billing.ledger import lock_and_load
from isp_admin.services.billing.payments import get_payment, reverse_payment
from isp_admin.services.payments.providers.base import Provider, ProviderError
from isp_admin.services.payments.providers.registry import get_provider
from isp_admin.services.platform.bounds import MAX_REASON, check_text


def can_refund(provider_name: str | None) -> bool:
    """Whether payments of this provider can be refunded from here (its API takes refunds)."""
    if not provider_name:
        return False
    try:
        provider = get_provider(provider_name)
    except Invalid:  # a provider we no longer ship
        return False
    return type(provider).refund is not Provider.refund


def _refusable(payment: Payment) -> None:
    """Refuse a payment that has nothing left to refund."""
    if payment.status == "reversed":
        already = f" (refund {payment.refund_ref})" if payment.refund_ref else ""
        raise BusinessRuleViolation(f"This payment is already refunded or reversed{already}.")


def _reason(prefix: str, reason: str) -> str:
    return f"{prefix}: {reason}"[:MAX_REASON]


def refund_payment(payment_id: int, reason: str, today: date) -> Payment:
    """Refund a provider payment in full at its provider, then reverse it here; return the payment."""
    reason = check_text("reason", reason, required=True)
    payment = get_payment(payment_id)
    _refusable(payment)
    if not can_refund(payment.provider):
        raise BusinessRuleViolation("This payment cannot be refunded from here: refund it where it was paid, "
                                    "then record the refund.")
    provider = get_provider(payment.provider)
    attempt = db.session.scalar(select(PaymentAttempt).where(PaymentAttempt.payment_id == payment.id))
    # Outside the customer's lock and any transaction: a slow provider (up to its timeout) never holds the
    # customer's ledger nor a connection. The two rows go along detached, as read; the lock below reads afresh.
    for row in (payment, attempt):
        if row is not None:
            db.session.expunge(row)
    db.session.rollback()
    try:
        refund_id = provider.refund(payment, attempt)[:120]
    except ProviderError as exc:
        raise BusinessRuleViolation(str(exc) or f"{provider.label} refused the refund.") from None
    payment = lock_and_load(Payment, payment_id, "No such payment.")
    if payment.status == "reversed":
        # Reversed while the provider answered: by the refund's own webhook (fine), or by hand (money returned
        # twice unless someone looks, so the refund is kept on the staff's list).
        by_webhook = payment.refund_ref is not None
        payment.refund_ref = refund_id
        _store_refund(provider.name, refund_id, payment, attempt,
                      "refunded" if by_webhook else "held",
                      reason if by_webhook else "refunded at the provider after it was reversed here: check it")
        return payment
    reverse_payment(payment.id, _reason(f"Refunded at {provider.label} ({refund_id})", reason), today)
    payment.refund_ref = refund_id
    _store_refund(provider.name, refund_id, payment, attempt, "refunded", reason)
    return payment


def _store_refund(provider: str, refund_id: str, payment: Payment, attempt: PaymentAttempt | None, outcome: str,
                  detail: str) -> None:
    """Keep the refund beside the payment's other provider events (once: its id is the event's)."""
    event_id = f"refund:{refund_id}"
    if db.session.scalar(select(ProviderEvent.id).where(ProviderEvent.provider == provider,
                                                        ProviderEvent.event_id == event_id)):
        return
    db.session.add(ProviderEvent(provider=provider, event_id=event_id, event_type="refund.requested",
                                 attempt_id=attempt.id if attempt else None, payment_id=payment.id,
                                 amount_cents=payment.amount_cents, currency=payment.currency, outcome=outcome,
                                 detail=detail[:500]))
    db.session.flush()


def record_refund(payment_id: int, reference: str, reason: str, today: date) -> Payment:
    """Record a refund made outside this app (the provider's dashboard, cash back): reverse the payment."""
    reference = check_text("reference", reference, limit=120, required=True)
    reason = check_text("reason", reason, required=True)
    payment = lock_and_load(Payment, payment_id, "No such payment.")
    _refusable(payment)
    reverse_payment(payment.id, _reason(f"Refunded ({reference})", reason), today)
    payment.refund_ref = reference
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:  # uq_payments_refund_ref: one refund of the provider's is one payment's only
        raise Conflict("That refund reference is already recorded on another payment.",
                       {"reference": "Already used."}) from None
    return payment
