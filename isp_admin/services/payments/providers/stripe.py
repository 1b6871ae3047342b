"""Stripe: a Checkout Session per payment (hosted card page); signed webhooks; status from the session."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
import stripe

from isp_admin.services.payments.providers.base import (
    Charge,
    InvalidNotification,
    Notice,
    Provider,
    ProviderError,
    Started,
)

if TYPE_CHECKING:
    from isp_admin.models import Payment, PaymentAttempt

log = logging.getLogger(__name__)
# The library logs every request and response line at INFO (paths that carry session and payment ids, Stripe's
# request ids): our request log says what matters. Its warnings still come through.
logging.getLogger("stripe").setLevel(logging.WARNING)

# Stripe counts these in whole units where the ledger counts hundredths: an amount would be off a hundredfold.
ZERO_DECIMAL = {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF",
                "XOF", "XPF"}
SIGNATURE_HEADER = "stripe-signature"
CHECKOUT_ORIGIN = "https://checkout.stripe.com"  # where Checkout Session URLs point


def _header(headers: dict, name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name), None)


def _id_of(value) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _safe_error(exc: stripe.StripeError) -> ProviderError:
    """A message for staff and payers that leaks neither keys nor Stripe's internals; the details go to the log."""
    log.warning("stripe request failed", extra={"error": type(exc).__name__, "stripe_message": str(exc)[:300]})
    if isinstance(exc, stripe.APIConnectionError):
        return ProviderError("Stripe could not be reached; please try again in a few minutes.")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ProviderError("Stripe refused this site's credentials; card payments are unavailable for now.")
    if isinstance(exc, stripe.RateLimitError):
        return ProviderError("Stripe is busy; please try again in a minute.")
    user_message = getattr(exc, "user_message", None)
    return ProviderError(f"Stripe refused the request: {user_message}" if user_message
                         else "Stripe refused the request.")


class StripeProvider(Provider):
    """Cards through Stripe Checkout."""

    name = "stripe"
    label = "Card (Stripe)"
    method = "card"
    flow = "redirect"

    def missing_settings(self) -> list[str]:
        """STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET are required."""
        return [key for key in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET") if not self.config.get(key)]

    def mode(self) -> str:
        """Live keys start sk_live_ (or rk_live_); everything else is a test key."""
        key = self.config.get("STRIPE_SECRET_KEY") or ""
        return "live" if key.startswith(("sk_live_", "rk_live_")) else "sandbox"

    def unsupported_reason(self, currency: str) -> str | None:
        """Zero-decimal currencies are refused: Stripe would read our hundredths as whole units."""
        if currency.upper() in ZERO_DECIMAL:
            return f"Stripe counts {currency} in whole units; the ledger counts hundredths."
        return None

    def hosted_origins(self) -> tuple[str, ...]:
        """Checkout's pages; a local Stripe (STRIPE_API_BASE, tests and demos) serves them itself."""
        base = self.config.get("STRIPE_API_BASE")
        if base:
            parts = urlsplit(base)
            return (f"{parts.scheme}://{parts.netloc}",)
        return (CHECKOUT_ORIGIN,)

    @contextmanager
    def _client(self) -> Iterator[stripe.StripeClient]:
        # A session of our own per call, closed after it: no pooled socket outlives the request that used it.
        session = requests.Session()
        http = stripe.RequestsClient(timeout=float(self.config.get("PAYMENTS_HTTP_TIMEOUT") or 10), session=session)
        base = self.config.get("STRIPE_API_BASE")
        try:
            yield stripe.StripeClient(self.config.get("STRIPE_SECRET_KEY") or "", http_client=http,
                                      base_addresses={"api": base} if base else None, max_network_retries=1)
        finally:
            session.close()

    def start(self, charge: Charge, *, return_url: str, cancel_url: str, callback_url: str,
              description: str) -> Started:
        """Create a Checkout Session for the charge's amount; the payer is sent to its hosted page."""
        metadata = {"attempt": charge.public_id, "invoice": charge.invoice_number or "",
                    "customer": charge.account_number or ""}
        params = {
            "mode": "payment",
            "line_items": [{"quantity": 1, "price_data": {
                "currency": charge.currency.lower(), "unit_amount": charge.amount_cents,
                "product_data": {"name": (description or "Payment")[:250]}}}],
            "client_reference_id": charge.public_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "success_url": return_url,
            "cancel_url": cancel_url,
        }
        if charge.email:
            params["customer_email"] = charge.email
        try:
            with self._client() as client:
                # The attempt's id as the idempotency key: a retried start gets the same session, never a second.
                session = client.v1.checkout.sessions.create(
                    params=params, options={"idempotency_key": f"checkout-{charge.public_id}"}).to_dict()
        except stripe.StripeError as exc:
            raise _safe_error(exc) from None
        if not session.get("id") or not session.get("url"):
            raise ProviderError("Stripe did not return a checkout page.")
        return Started(provider_ref=session["id"], redirect_url=session["url"])

    def parse(self, body: bytes, headers: dict, *, token: str | None = None,
              attempt: PaymentAttempt | None = None) -> list[Notice]:
        """Verify Stripe-Signature on the raw body (with the configured tolerance) and read the event."""
        try:
            event = stripe.Webhook.construct_event(
                body, _header(headers, SIGNATURE_HEADER), self.config.get("STRIPE_WEBHOOK_SECRET"),
                tolerance=int(self.config.get("STRIPE_WEBHOOK_TOLERANCE") or 300)).to_dict()
        except stripe.SignatureVerificationError:
            raise InvalidNotification("bad or expired Stripe signature") from None
        except (ValueError, TypeError, AttributeError, KeyError):  # signed, yet not an event we can read
            raise InvalidNotification("unreadable Stripe event") from None
        event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not (isinstance(event_id, str) and event_id and isinstance(event_type, str) and isinstance(obj, dict)):
            raise InvalidNotification("unreadable Stripe event")
        return [_notice(event_id, event_type, obj)]

    def query(self, attempt: PaymentAttempt) -> Notice | None:
        """Retrieve the attempt's Checkout Session: paid -> succeeded, expired -> failed, otherwise not yet."""
        if not attempt.provider_ref:
            return None
        try:
            with self._client() as client:
                session = client.v1.checkout.sessions.retrieve(attempt.provider_ref).to_dict()
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                # Not in this Stripe account (the keys changed?): it may have been paid elsewhere, so never a
                # failure from here; the sweep expires it in time and a late webhook still records the money.
                log.warning("stripe has no such checkout session", extra={"attempt_id": attempt.id})
                return None
            raise _safe_error(exc) from None
        except stripe.StripeError as exc:
            raise _safe_error(exc) from None
        return _status_notice(session, attempt)

    def refund(self, payment: Payment, attempt: PaymentAttempt | None) -> str:
        """Refund the payment's PaymentIntent in full; return Stripe's refund id."""
        intent = payment.reference if (payment.reference or "").startswith("pi_") else None
        try:
            with self._client() as client:
                if intent is None and attempt is not None and attempt.provider_ref:
                    session = client.v1.checkout.sessions.retrieve(attempt.provider_ref).to_dict()
                    intent = _id_of(session.get("payment_intent"))
                if intent is None:
                    raise ProviderError("This payment has no Stripe payment to refund; refund it in Stripe's "
                                        "dashboard and record the refund here.")
                # One refund per payment: a retried or double-clicked refund gets the same refund back.
                refund = client.v1.refunds.create(
                    params={"payment_intent": intent,
                            "metadata": {"attempt": attempt.public_id if attempt else "", "payment": str(payment.id)}},
                    options={"idempotency_key": f"refund-payment-{payment.id}"}).to_dict()
        except stripe.StripeError as exc:
            raise _safe_error(exc) from None
        if not refund.get("id"):
            raise ProviderError("Stripe did not return a refund.")
        return refund["id"]


def _notice(event_id: str, event_type: str, obj: dict) -> Notice:
    """One verified Stripe event in our terms."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    public_id = metadata.get("attempt") or None
    common = {"event_id": event_id, "event_type": event_type[:80], "currency": obj.get("currency")}
    if event_type.startswith("checkout.session."):
        common.update(attempt_ref=_id_of(obj.get("id")), public_id=public_id or obj.get("client_reference_id"),
                      amount_cents=_cents(obj.get("amount_total")), receipt=_id_of(obj.get("payment_intent")))
        if event_type == "checkout.session.completed":
            if obj.get("payment_status") == "paid":
                return Notice(kind="succeeded", **common)
            # A bank debit and the like: the money follows in async_payment_succeeded (or _failed).
            return Notice(kind="pending", detail="checkout completed; the payment is still processing", **common)
        if event_type == "checkout.session.async_payment_succeeded":
            return Notice(kind="succeeded", **common)
        if event_type == "checkout.session.expired":
            return Notice(kind="failed", detail="The checkout page expired unpaid.", **common)
        if event_type == "checkout.session.async_payment_failed":
            return Notice(kind="failed", detail="The payment failed after checkout.", **common)
        return Notice(kind="ignored", **common)
    if event_type.startswith("payment_intent."):
        common.update(public_id=public_id, receipt=_id_of(obj.get("id")))
        if not public_id:
            return Notice(kind="ignored", detail="no attempt in its metadata: not started here", **common)
        if event_type == "payment_intent.succeeded":
            return Notice(kind="succeeded", amount_cents=_cents(obj.get("amount_received") or obj.get("amount")),
                          **common)
        if event_type == "payment_intent.payment_failed":
            # Not the attempt's end: the payer may try another card on the same hosted page.
            error = obj.get("last_payment_error") if isinstance(obj.get("last_payment_error"), dict) else {}
            return Notice(kind="ignored", detail=f"a card was declined: {error.get('message') or 'no reason'}"[:500],
                          **common)
        return Notice(kind="ignored", **common)
    if event_type == "charge.refunded":
        return Notice(kind="refunded", public_id=public_id, receipt=_id_of(obj.get("payment_intent")),
                      amount_cents=_cents(obj.get("amount_refunded")), refund_ref=_latest_refund(obj), **common)
    if event_type == "refund.created":
        common.update(public_id=public_id, receipt=_id_of(obj.get("payment_intent")),
                      amount_cents=_cents(obj.get("amount")), refund_ref=_id_of(obj.get("id")))
        if obj.get("status") == "succeeded":
            return Notice(kind="refunded", **common)
        return Notice(kind="ignored", detail=f"refund {obj.get('status')}", **common)
    return Notice(kind="ignored", **common)


def _status_notice(session: dict, attempt: PaymentAttempt) -> Notice | None:
    """What a retrieved Checkout Session says, as a notice with a stable id (the same fact, the same id)."""
    session_id = _id_of(session.get("id")) or attempt.provider_ref
    common = {"attempt_ref": session_id, "public_id": attempt.public_id, "currency": session.get("currency"),
              "amount_cents": _cents(session.get("amount_total"))}
    if session.get("status") == "complete" and session.get("payment_status") == "paid":
        return Notice(event_id=f"status:{session_id}:paid", event_type="status.paid", kind="succeeded",
                      receipt=_id_of(session.get("payment_intent")), **common)
    if session.get("status") == "expired":
        return Notice(event_id=f"status:{session_id}:expired", event_type="status.expired", kind="failed",
                      detail="The checkout page expired unpaid.", **common)
    return None  # open, or complete with the money still on its way


def _cents(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _latest_refund(charge: dict) -> str | None:
    refunds = charge.get("refunds")
    data = refunds.get("data") if isinstance(refunds, dict) else None
    return _id_of(data[0]) if isinstance(data, list) and data else None
