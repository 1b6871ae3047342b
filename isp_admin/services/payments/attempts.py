"""Starting a payment with a provider: an attempt recorded first, then the provider asked, then its answer kept.

Two transactions on purpose: the provider is called after the attempt is committed, outside the customer's lock
and outside any transaction, so a slow provider never holds a customer's ledger nor a pooled connection, and a
notification that arrives before the start returns (an M-Pesa callback can) finds the attempt by the public id in
its URL.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, select

from isp_admin.errors import BusinessRuleViolation, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, PaymentAttempt
from isp_admin.services.billing.ledger import lock_customer
from isp_admin.services.payments.providers.base import Charge, ProviderError
from isp_admin.services.payments.providers.registry import get_provider, offered
from isp_admin.services.platform import audit
from isp_admin.services.platform.bounds import MAX_AMOUNT_CENTS
from isp_admin.services.platform.clock import utcnow

REUSE_MINUTES = 30  # a second "pay" within this long reuses the pending attempt (a double click, a back button)
# An attempt this young with no page yet may be launching right now (its provider call in flight, up to the HTTP
# timeout): a second click reuses it and waits for its page rather than opening a second one. For a push, the
# prompt on the phone is still open this long: a second click does not ring the phone again.
LAUNCH_SECONDS = 120


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
        or_(PaymentAttempt.redirect_url.is_not(None),
            PaymentAttempt.created_at > utcnow() - timedelta(seconds=LAUNCH_SECONDS)),
        PaymentAttempt.created_at > utcnow() - timedelta(minutes=REUSE_MINUTES)).order_by(PaymentAttempt.id.desc()))
    if recent is not None and (provider.flow == "redirect" or recent.created_at > utcnow() - timedelta(
            seconds=LAUNCH_SECONDS)):
        return recent, None  # the same hosted page (or open prompt) again: never a second charge at the provider
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


def hosted_page(attempt_id: int, wait_seconds: float) -> str | None:
    """The attempt's hosted page, waiting up to `wait_seconds` for a launch in flight elsewhere to store it; None for
    a push, an attempt no longer pending, or a launch that did not finish in time. Reads only, fresh each time."""
    deadline = time.monotonic() + wait_seconds
    while True:
        db.session.rollback()  # a new snapshot each round: the other request's commit must be seen
        attempt = get_attempt(attempt_id)
        if attempt.status != "pending" or get_provider(attempt.provider).flow != "redirect":
            return None
        if attempt.redirect_url or time.monotonic() >= deadline:
            return attempt.redirect_url
        time.sleep(0.1)


def _charge(attempt: PaymentAttempt) -> Charge:
    """What the provider is asked to charge: the attempt's terms, its invoice's number, its customer's details."""
    invoice = db.session.get(Invoice, attempt.invoice_id) if attempt.invoice_id is not None else None
    customer = db.session.get(Customer, attempt.customer_id)
    return Charge(public_id=attempt.public_id, amount_cents=attempt.amount_cents, currency=attempt.currency,
                  phone=attempt.phone, invoice_number=invoice.number if invoice is not None else None,
                  account_number=customer.account_number, email=customer.email)


def launch_attempt(attempt_id: int, *, return_url: str, cancel_url: str, callback_url: str,
                   description: str) -> PaymentAttempt:
    """Ask the provider to start the committed attempt with no transaction open; keep its reference or refusal."""
    attempt = get_attempt(attempt_id)
    provider, charge, customer_id = get_provider(attempt.provider), _charge(attempt), attempt.customer_id
    # End the read transaction (nothing was written) before the HTTP call, which may take the provider's whole
    # timeout: no transaction stays open, no connection is held, and the lock below reads fresh rows.
    db.session.rollback()
    try:
        started = provider.start(charge, return_url=return_url, cancel_url=cancel_url, callback_url=callback_url,
                                 description=description)
        failure = None
    except ProviderError as exc:
        started, failure = None, str(exc)[:500] or "The provider refused."
    lock_customer(customer_id)
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
