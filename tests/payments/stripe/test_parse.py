"""How StripeProvider reads Stripe's events (after verifying them): which are money, which are not."""
from __future__ import annotations

import pytest

from isp_admin.services.payments.providers.base import InvalidNotification
from isp_admin.services.payments.providers.registry import get_provider
from tests.payments.stripe.helpers import signed
from tests.support.stripe_fake import event

SESSION = {"id": "cs_1", "object": "checkout.session", "amount_total": 5800, "currency": "usd",
           "client_reference_id": "att_1", "metadata": {"attempt": "att_1"}, "payment_intent": "pi_1"}


def read(evt: dict):
    body, headers = signed(evt)
    [notice] = get_provider("stripe").parse(body, headers)
    return notice


@pytest.mark.parametrize(("event_type", "changes", "kind"), [
    ("checkout.session.completed", {"payment_status": "paid"}, "succeeded"),
    ("checkout.session.completed", {"payment_status": "unpaid"}, "pending"),
    ("checkout.session.async_payment_succeeded", {"payment_status": "paid"}, "succeeded"),
    ("checkout.session.async_payment_failed", {}, "failed"),
    ("checkout.session.expired", {}, "failed"),
    ("customer.created", {}, "ignored"),
])
def test_checkout_events(stripe_app, event_type, changes, kind):
    notice = read(event(event_type, {**SESSION, **changes}, event_id="evt_x"))

    assert (notice.kind, notice.event_id, notice.event_type) == (kind, "evt_x", event_type)
    if event_type.startswith("checkout."):
        assert (notice.attempt_ref, notice.public_id, notice.amount_cents, notice.receipt) == \
            ("cs_1", "att_1", 5800, "pi_1")


def test_the_client_reference_finds_the_attempt_when_metadata_is_gone(stripe_app):
    assert read(event("checkout.session.completed", {**SESSION, "metadata": {}, "payment_status": "paid"})) \
        .public_id == "att_1"


def test_payment_intent_events(stripe_app):
    intent = {"id": "pi_1", "object": "payment_intent", "amount": 5800, "amount_received": 5800, "currency": "usd",
              "metadata": {"attempt": "att_1"}}

    ok = read(event("payment_intent.succeeded", intent))
    declined = read(event("payment_intent.payment_failed", {**intent, "last_payment_error": {"message": "No"}}))
    foreign = read(event("payment_intent.succeeded", {**intent, "metadata": {}}))

    assert (ok.kind, ok.public_id, ok.amount_cents, ok.receipt) == ("succeeded", "att_1", 5800, "pi_1")
    assert declined.kind == "ignored" and "declined" in declined.detail
    assert foreign.kind == "ignored"


def test_refund_events(stripe_app):
    charge = read(event("charge.refunded", {"id": "ch_1", "payment_intent": "pi_1", "amount": 5800,
                                            "amount_refunded": 5800, "currency": "usd",
                                            "refunds": {"data": [{"id": "re_1"}]}}))
    refund = read(event("refund.created", {"id": "re_2", "payment_intent": "pi_1", "amount": 100,
                                           "status": "succeeded", "currency": "usd"}))

    assert (charge.kind, charge.receipt, charge.refund_ref, charge.amount_cents) == ("refunded", "pi_1", "re_1", 5800)
    assert (refund.kind, refund.refund_ref, refund.amount_cents) == ("refunded", "re_2", 100)


def test_headers_are_read_whatever_their_case(stripe_app):
    body, headers = signed(event("checkout.session.expired", SESSION))

    [notice] = get_provider("stripe").parse(body, {"STRIPE-SIGNATURE": headers["Stripe-Signature"]})

    assert notice.kind == "failed"


def test_without_a_configured_secret_nothing_verifies(stripe_app):
    stripe_app.config["STRIPE_WEBHOOK_SECRET"] = None
    body, headers = signed(event("checkout.session.expired", SESSION))

    with pytest.raises(InvalidNotification):
        get_provider("stripe").parse(body, headers)
