"""Provider notifications into money, exactly once.

Providers deliver at least once, in any order, and a status poll may race a webhook. Every notice is stored
under UNIQUE(provider, event_id) in the transaction that acts on it, after the customer's lock (lock first, then
read), and an attempt makes at most one payment (its (provider, provider_ref) is unique on payments). So a
replay, a second event about the same payment, or the poll finding what the webhook already recorded changes
nothing; a payment for an invoice that is no longer open lands as credit; a notice we cannot match to an attempt
is kept, visible to staff, and never lost.
"""
from __future__ import annotations

from datetime import date

from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import AppError
from isp_admin.extensions import db
from isp_admin.models import Invoice, Payment, PaymentAttempt, ProviderEvent
from isp_admin.services.billing.ledger import lock_customer
from isp_admin.services.billing.payments import record_payment, reverse_payment
from isp_admin.services.payments.providers.base import Notice
from isp_admin.services.payments.providers.registry import get_provider
from isp_admin.services.platform import audit

_DETAIL = 500


def find_attempt(provider: str, notice: Notice) -> PaymentAttempt | None:
    """The attempt a notice is about: by the provider's reference we stored, or our public id in its metadata;
    a refund without either, by the provider's payment reference (Stripe's pi_…) on the payment it made."""
    keys = []
    if notice.attempt_ref:
        keys.append((PaymentAttempt.provider == provider) & (PaymentAttempt.provider_ref == notice.attempt_ref))
    if notice.public_id:
        keys.append((PaymentAttempt.provider == provider) & (PaymentAttempt.public_id == notice.public_id))
    attempt = None
    if keys:
        attempt = db.session.scalar(select(PaymentAttempt).where(or_(*keys)).order_by(PaymentAttempt.id).limit(1))
    if attempt is None and notice.kind == "refunded" and notice.receipt:
        # A refund made in the provider's dashboard names the payment, not our checkout.
        attempt = db.session.scalar(
            select(PaymentAttempt).join(Payment, Payment.id == PaymentAttempt.payment_id)
            .where(Payment.provider == provider, Payment.reference == notice.receipt[:120])
            .order_by(PaymentAttempt.id).limit(1))
    return attempt


def _stored(provider: str, event_id: str) -> ProviderEvent | None:
    return db.session.scalar(select(ProviderEvent).where(ProviderEvent.provider == provider,
                                                         ProviderEvent.event_id == event_id))


def _event(provider: str, notice: Notice, outcome: str, *, attempt: PaymentAttempt | None = None,
           payment: Payment | None = None, detail: str | None = None) -> ProviderEvent:
    text = detail or notice.detail
    event = ProviderEvent(provider=provider, event_id=notice.event_id[:255], event_type=notice.event_type[:80],
                          attempt_id=attempt.id if attempt else None, payment_id=payment.id if payment else None,
                          amount_cents=notice.amount_cents, currency=(notice.currency or "").upper()[:3] or None,
                          outcome=outcome, detail=text[:_DETAIL] if text else None)
    try:
        with db.session.begin_nested():
            db.session.add(event)  # the unique key is checked here (for a matched notice, inside the customer lock)
    except IntegrityError:  # an unmatched notice delivered twice at once: the other delivery stored it
        return _stored(provider, notice.event_id)
    return event


def apply_notice(provider: str, notice: Notice, today: date) -> ProviderEvent:
    """Act on one notice once; return its stored event (the earlier one if this is a replay)."""
    earlier = _stored(provider, notice.event_id)
    if earlier is not None:
        return earlier
    attempt = find_attempt(provider, notice)
    if attempt is None:
        # Nothing of ours to pay: kept for staff (payments in flight), never silently dropped.
        return _event(provider, notice, "unmatched" if notice.kind in ("succeeded", "refunded") else "ignored")
    lock_customer(attempt.customer_id)  # every notice about this customer's money runs one at a time from here
    earlier = _stored(provider, notice.event_id)  # a concurrent delivery of the same event committed first
    if earlier is not None:
        return earlier
    attempt = db.session.get(PaymentAttempt, attempt.id)  # fresh: the lock forgot every earlier read
    if notice.kind == "succeeded":
        return _succeeded(provider, notice, attempt, today)
    if notice.kind == "failed":
        if attempt.status == "pending":
            attempt.status, attempt.failure_reason = "failed", (notice.detail or "Declined")[:_DETAIL]
            audit.record("payment_attempt.fail", attempt, before={"status": "pending"},
                         after={"status": "failed", "reason": attempt.failure_reason},
                         customer_id=attempt.customer_id)
            return _event(provider, notice, "failed", attempt=attempt)
        return _event(provider, notice, "ignored", attempt=attempt, detail=f"attempt already {attempt.status}")
    if notice.kind == "refunded":
        return _refunded(provider, notice, attempt, today)
    return _event(provider, notice, "ignored", attempt=attempt)


def _succeeded(provider: str, notice: Notice, attempt: PaymentAttempt, today: date) -> ProviderEvent:
    if attempt.payment_id is not None:
        # The other event about the same payment (checkout.session.completed and payment_intent.succeeded), or
        # the webhook after the poll: the money is in already.
        return _event(provider, notice, "already_recorded", attempt=attempt,
                      payment=db.session.get(Payment, attempt.payment_id))
    currency = (notice.currency or attempt.currency).upper()
    if currency != current_app.config["CURRENCY"]:
        return _event(provider, notice, "held", attempt=attempt,
                      detail=f"paid in {currency}, the ledger is in {current_app.config['CURRENCY']}: refund or "
                             "record it by hand")
    amount = notice.amount_cents if notice.amount_cents is not None else attempt.amount_cents
    if amount <= 0:
        return _event(provider, notice, "held", attempt=attempt, detail=f"amount {amount} is not a payment")
    invoice = db.session.get(Invoice, attempt.invoice_id) if attempt.invoice_id else None
    target = invoice.id if invoice is not None and invoice.is_open else None
    try:
        with db.session.begin_nested():
            payment, _ = record_payment(
                attempt.customer_id, amount, get_provider(provider).method, today, today,
                reference=(notice.receipt or attempt.provider_ref or attempt.public_id)[:120], invoice_id=target,
                provider=provider, provider_ref=attempt.provider_ref or attempt.public_id)
    except AppError as exc:
        # Money the ledger refuses (an amount out of bounds…) is kept on the staff's list; a 4xx would only make
        # the provider retry the same refusal for days.
        return _event(provider, notice, "held", attempt=attempt, detail=f"not recorded: {exc.message}")
    before = attempt.status
    attempt.status, attempt.payment_id, attempt.failure_reason = "succeeded", payment.id, None
    if before != "pending":  # money after we gave up on it (expired, or a poll said it failed) is still money
        audit.record("payment_attempt.late_success", attempt, before={"status": before},
                     after={"status": "succeeded", "payment_id": payment.id}, customer_id=attempt.customer_id)
    outcome = "credited" if invoice is not None and target is None else "recorded"
    return _event(provider, notice, outcome, attempt=attempt, payment=payment)


def _refunded(provider: str, notice: Notice, attempt: PaymentAttempt, today: date) -> ProviderEvent:
    payment = db.session.get(Payment, attempt.payment_id) if attempt.payment_id else None
    if payment is None or payment.status == "reversed":
        # Our own refund (services/payments/refunds.py) reversed it before its webhook came: nothing more to do.
        return _event(provider, notice, "ignored", attempt=attempt, payment=payment,
                      detail="nothing recorded to refund" if payment is None
                      else f"already reversed{' (refund ' + payment.refund_ref + ')' if payment.refund_ref else ''}")
    if notice.amount_cents is not None and notice.amount_cents < payment.amount_cents:
        # The ledger reverses whole payments; part of one refunded needs a person (a credit note, or a charge).
        return _event(provider, notice, "held", attempt=attempt, payment=payment,
                      detail=f"partial refund of {notice.amount_cents} of {payment.amount_cents}: "
                             "adjust the customer's account by hand")
    reverse_payment(payment.id, f"Refunded at {get_provider(provider).label}"
                                f"{': ' + notice.refund_ref if notice.refund_ref else ''}", today)
    payment.refund_ref = (notice.refund_ref or notice.event_id)[:120]
    return _event(provider, notice, "refunded", attempt=attempt, payment=payment)
