"""Starting a payment with a provider: an attempt recorded first, then the provider asked, then its answer kept.

Two transactions on purpose: the provider is called after the attempt is committed and outside the customer's
lock, so a slow provider never holds a customer's ledger, and a notification that arrives before the start
returns (an M-Pesa callback can) finds the attempt by the public id in its URL.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from isp_admin.errors import BusinessRuleViolation, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import Invoice, PaymentAttempt
from isp_admin.services.billing.ledger import lock_customer
from isp_admin.services.payments.providers.base import ProviderError
from isp_admin.services.payments.providers.registry import get_provider, offered
from isp_admin.services.platform import audit
from isp_admin.services.platform.bounds import MAX_AMOUNT_CENTS
from isp_admin.services.platform.clock import utcnow

REUSE_MINUTES = 30  # a second "pay" within this long reuses the pending attempt (a double click, a back button)


def hash_token(token: str) -> str:
    """The stored form of a callback URL's secret."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(attempt: PaymentAttempt, token: str | None) -> bool:
    """Whether `token` is the secret of the attempt's callback URL (constant time)."""
    return bool(token and attempt.callback_token_hash
                and hmac.compare_digest(attempt.callback_token_hash, hash_token(token)))


def get_attempt(attempt_id: int) -> PaymentAttempt:
    """The attempt, or NotFound."""
    attempt = db.session.get(PaymentAttempt, attempt_id)
    if attempt is None:
        raise NotFound("No such payment attempt.")
    return attempt


def attempt_by_public_id(public_id: str) -> PaymentAttempt | None:
    """The attempt with this public id, or None."""
    if not public_id or len(public_id) > 40:
        return None
    return db.session.scalar(select(PaymentAttempt).where(PaymentAttempt.public_id == public_id))


def create_attempt(customer_id: int, provider_name: str, *, invoice_id: int | None = None,
                   amount_cents: int | None = None, phone: str | None = None) -> tuple[PaymentAttempt, str | None]:
    """Record a pending attempt to pay an invoice (its balance) or top up (an amount); return it and its callback
    secret (None when a recent identical attempt is reused: its secret was handed out then)."""
    provider = get_provider(provider_name)
    if provider.name not in {p.name for p in offered()}:
        raise BusinessRuleViolation(f"{provider.label} payments are not available.")
    if provider.flow == "push" and not (phone or "").strip():
        raise Invalid("Please give the phone number to charge.", {"phone": "Required."})
    customer = lock_customer(customer_id)
    if invoice_id is not None:
        invoice = db.session.get(Invoice, invoice_id)
        if invoice is None or invoice.customer_id != customer.id:
            raise NotFound("No such invoice.")
        if not invoice.is_open:
            raise BusinessRuleViolation(f"Invoice {invoice.number} has nothing to pay (it is {invoice.status}).")
        amount_cents = invoice.balance_cents
    elif amount_cents is None or not 0 < amount_cents <= MAX_AMOUNT_CENTS:
        raise Invalid("Please correct the amount.", {"amount_cents": "An amount above zero."})
    amount_cents = provider.payable_amount(amount_cents)
    recent = db.session.scalar(select(PaymentAttempt).where(
        PaymentAttempt.customer_id == customer.id, PaymentAttempt.provider == provider.name,
        PaymentAttempt.status == "pending", PaymentAttempt.invoice_id.is_(invoice_id) if invoice_id is None
        else PaymentAttempt.invoice_id == invoice_id, PaymentAttempt.amount_cents == amount_cents,
        PaymentAttempt.phone.is_(phone) if phone is None else PaymentAttempt.phone == phone,
        PaymentAttempt.redirect_url.is_not(None),
        PaymentAttempt.created_at > utcnow() - timedelta(minutes=REUSE_MINUTES)).order_by(PaymentAttempt.id.desc()))
    if recent is not None and provider.flow == "redirect":
        return recent, None  # the same hosted page again: paying it twice is then impossible at the provider too
    token = secrets.token_urlsafe(24)
    attempt = PaymentAttempt(public_id=secrets.token_urlsafe(18), customer_id=customer.id, invoice_id=invoice_id,
                             provider=provider.name, amount_cents=amount_cents,
                             currency=current_app.config["CURRENCY"], status="pending", phone=phone,
                             callback_token_hash=hash_token(token), created_by=audit.current_actor().label)
    db.session.add(attempt)
    db.session.flush()
    audit.record("payment_attempt.start", attempt, after={"provider": provider.name, "amount_cents": amount_cents,
                                                          "invoice_id": invoice_id}, customer_id=customer.id)
    return attempt, token


def launch_attempt(attempt_id: int, *, return_url: str, cancel_url: str, callback_url: str,
                   description: str) -> PaymentAttempt:
    """Ask the provider to start the committed attempt (no lock held meanwhile); keep its reference or its refusal."""
    attempt = get_attempt(attempt_id)
    provider = get_provider(attempt.provider)
    try:
        started = provider.start(attempt, return_url=return_url, cancel_url=cancel_url, callback_url=callback_url,
                                 description=description)
        failure = None
    except ProviderError as exc:
        started, failure = None, str(exc)[:500] or "The provider refused."
    db.session.rollback()  # end the read transaction: nothing was written, and the lock below must see fresh rows
    lock_customer(attempt.customer_id)
    attempt = get_attempt(attempt_id)
    if started is None:
        if attempt.status == "pending":
            attempt.status, attempt.failure_reason = "failed", failure
            audit.record("payment_attempt.fail", attempt, before={"status": "pending"},
                         after={"status": "failed", "reason": failure}, customer_id=attempt.customer_id)
        return attempt
    attempt.provider_ref = started.provider_ref[:120]
    attempt.redirect_url = started.redirect_url
    return attempt
