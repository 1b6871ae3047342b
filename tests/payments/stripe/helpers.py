"""Stripe events about a test's attempt, signed as Stripe signs them, and posted to the webhook edge."""
from __future__ import annotations

import json

from isp_admin.models import PaymentAttempt
from tests.payments.conftest import STRIPE_SECRET
from tests.support.stripe_fake import event, sign

WEBHOOK = "/webhooks/stripe/"


def completed(attempt: PaymentAttempt, *, amount: int | None = None, currency: str = "usd",
              intent: str = "pi_test_one", paid: bool = True, event_id: str | None = None,
              event_type: str = "checkout.session.completed") -> dict:
    """checkout.session.completed (or another checkout.session.* event) for the attempt's session."""
    return event(event_type, {
        "id": attempt.provider_ref, "object": "checkout.session", "status": "complete",
        "payment_status": "paid" if paid else "unpaid", "amount_total": amount or attempt.amount_cents,
        "currency": currency, "client_reference_id": attempt.public_id, "payment_intent": intent,
        "metadata": {"attempt": attempt.public_id, "invoice": "", "customer": ""}}, event_id)


def intent_succeeded(attempt: PaymentAttempt, *, intent: str = "pi_test_one", event_id: str | None = None) -> dict:
    """payment_intent.succeeded for the attempt's payment (our public id in its metadata)."""
    return event("payment_intent.succeeded", {
        "id": intent, "object": "payment_intent", "status": "succeeded", "amount": attempt.amount_cents,
        "amount_received": attempt.amount_cents, "currency": "usd", "metadata": {"attempt": attempt.public_id}},
        event_id)


def charge_refunded(intent: str, amount: int, refunded: int, metadata: dict | None = None) -> dict:
    """charge.refunded for the charge of `intent` (a refund made in Stripe's dashboard carries no metadata of ours)."""
    return event("charge.refunded", {
        "id": "ch_test_one", "object": "charge", "amount": amount, "amount_refunded": refunded, "currency": "usd",
        "payment_intent": intent, "refunded": refunded == amount, "metadata": metadata or {}})


def signed(evt: dict, *, secret: str = STRIPE_SECRET, timestamp: int | None = None) -> tuple[bytes, dict]:
    """The raw body and headers Stripe would send for `evt`."""
    payload = json.dumps(evt, indent=2)
    return payload.encode(), {"Content-Type": "application/json",
                              "Stripe-Signature": sign(payload, secret, timestamp)}


def post(client, evt: dict, **kw):
    """POST `evt`, signed, to the Stripe webhook through the test client."""
    body, headers = signed(evt, **kw)
    return client.post(WEBHOOK, data=body, headers=headers)
