"""Stripe's signed webhooks through the real edge: exactly one payment from at-least-once, any-order delivery;
nothing at all from anything not signed by Stripe with our secret, recently."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from sqlalchemy import select

from isp_admin.devserver import serve_in_background
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, NetworkChange, Payment, PaymentAttempt, ProviderEvent
from isp_admin.services.billing import payments
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.platform.clock import today
from tests.payments.conftest import count, events, invoice, make_debtor, payments_of, start_attempt, subscription
from tests.payments.stripe.helpers import WEBHOOK, completed, intent_succeeded, post, signed
from tests.support.stripe_fake import event, sign


@pytest.fixture
def client(stripe_app):
    return stripe_app.test_client()


def test_a_signed_checkout_completed_pays_the_invoice_and_lifts_the_suspension(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    changes_before = count(NetworkChange, NetworkChange.subscription_id == debtor.subscription_id)

    response = post(client, completed(attempt))

    assert response.status_code == 200, response.data
    assert response.json == {"received": True, "outcomes": ["recorded"]}
    [payment] = payments_of(debtor.customer_id)
    assert (payment.amount_cents, payment.method, payment.provider, payment.provider_ref, payment.reference) == \
        (5800, "card", "stripe", "cs_test_session_one", "pi_test_one")
    assert invoice(debtor.invoice_id).status == "paid"
    sub = subscription(debtor.subscription_id)
    assert (sub.status, sub.suspension_reason) == ("active", None)
    assert count(NetworkChange, NetworkChange.subscription_id == debtor.subscription_id) > changes_before
    attempt = db.session.get(PaymentAttempt, attempt.id)
    assert (attempt.status, attempt.payment_id) == ("succeeded", payment.id)
    [stored] = events()
    assert (stored.outcome, stored.payment_id, stored.attempt_id, stored.event_type) == \
        ("recorded", payment.id, attempt.id, "checkout.session.completed")


def test_a_replayed_event_is_answered_200_and_changes_nothing(client):
    debtor = make_debtor()
    evt = completed(start_attempt(debtor))

    answers = [post(client, evt) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len(payments_of(debtor.customer_id)) == 1
    assert count(ProviderEvent) == 1


@pytest.mark.parametrize("order", [("completed", "intent"), ("intent", "completed")])
def test_the_two_events_of_one_payment_make_one_payment_in_either_order(client, order):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    made = {"completed": completed(attempt), "intent": intent_succeeded(attempt)}

    outcomes = [post(client, made[name]).json["outcomes"][0] for name in order]

    assert outcomes == ["recorded", "already_recorded"]
    [payment] = payments_of(debtor.customer_id)
    assert payment.amount_cents == 5800
    assert all(e.payment_id == payment.id for e in events())


def _tampered(body: bytes, headers: dict) -> tuple[bytes, dict]:
    return body.replace(b"5800", b"9900"), headers


@pytest.mark.parametrize("forge", [
    pytest.param(lambda evt: signed(evt, secret="whsec_someone_else"), id="wrong-secret"),
    pytest.param(lambda evt: signed(evt, timestamp=int(time.time()) - 301), id="301s-old"),
    pytest.param(lambda evt: _tampered(*signed(evt)), id="body-changed-after-signing"),
    pytest.param(lambda evt: (json.dumps(evt).encode(), {"Content-Type": "application/json"}), id="unsigned"),
    pytest.param(lambda evt: (json.dumps(evt).encode(), {"Stripe-Signature": "t=abc,v1=zz"}), id="garbage-header"),
    pytest.param(lambda evt: (b"\xff\xfe not json", {"Stripe-Signature": "t=1,v1=00"}), id="garbage-body"),
])
def test_anything_not_signed_by_stripe_recently_is_refused_and_nothing_is_stored(client, forge):
    debtor = make_debtor()
    body, headers = forge(completed(start_attempt(debtor)))

    response = client.post(WEBHOOK, data=body, headers=headers)

    assert response.status_code == 400
    assert response.json["received"] is False
    assert count(ProviderEvent) == 0 and count(Payment) == 0
    assert subscription(debtor.subscription_id).status == "suspended"


@pytest.mark.parametrize("payload", [b"not json at all", b"[1, 2, 3]", b'{"id": "evt_1", "type": "x"}'])
def test_a_correctly_signed_body_that_is_not_an_event_is_refused(client, payload):
    headers = {"Stripe-Signature": sign(payload.decode(), "whsec_isp_admin_tests")}

    response = client.post(WEBHOOK, data=payload, headers=headers)

    assert response.status_code == 400
    assert count(ProviderEvent) == 0


def test_an_event_for_an_attempt_we_never_made_is_kept_as_unmatched_and_pays_nobody(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    stranger = completed(attempt)
    stranger["data"]["object"].update(id="cs_test_not_ours", client_reference_id="nobody",
                                      metadata={"attempt": "nobody"})

    response = post(client, stranger)

    assert response.status_code == 200 and response.json["outcomes"] == ["unmatched"]
    assert count(Payment) == 0
    [stored] = events()
    assert (stored.outcome, stored.attempt_id, stored.amount_cents) == ("unmatched", None, 5800)


def test_a_payment_for_an_invoice_paid_meanwhile_becomes_credit(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    payments.record_payment(debtor.customer_id, 5800, "cash", today(), today(), invoice_id=debtor.invoice_id)
    db.session.commit()

    response = post(client, completed(attempt))

    assert response.json["outcomes"] == ["credited"]
    card = [p for p in payments_of(debtor.customer_id) if p.method == "card"]
    assert len(card) == 1 and card[0].status == "completed"
    assert customer_balance(debtor.customer_id, today()).credit_cents == 5800
    assert events()[0].payment_id == card[0].id


def test_money_in_another_currency_is_held_for_a_person_not_booked(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)

    response = post(client, completed(attempt, currency="eur"))

    assert response.json["outcomes"] == ["held"]
    assert count(Payment) == 0
    assert "EUR" in events()[0].detail
    assert db.session.get(PaymentAttempt, attempt.id).status == "pending"


def test_a_completed_but_unpaid_checkout_records_nothing_until_the_money_arrives(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)

    first = post(client, completed(attempt, paid=False))
    then = post(client, completed(attempt, event_type="checkout.session.async_payment_succeeded"))

    assert (first.json["outcomes"], then.json["outcomes"]) == (["ignored"], ["recorded"])
    assert len(payments_of(debtor.customer_id)) == 1


def test_a_declined_card_does_not_end_the_attempt_the_payer_may_try_another(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    declined = event("payment_intent.payment_failed", {
        "id": "pi_test_one", "object": "payment_intent", "amount": 5800, "currency": "usd",
        "metadata": {"attempt": attempt.public_id}, "last_payment_error": {"message": "Your card was declined."}})

    response = post(client, declined)

    assert response.json["outcomes"] == ["ignored"]
    assert db.session.get(PaymentAttempt, attempt.id).status == "pending"
    assert "declined" in events()[0].detail


def test_money_after_the_checkout_expired_is_still_recorded(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)

    expired = post(client, completed(attempt, event_type="checkout.session.expired", paid=False))
    late = post(client, completed(attempt))

    assert (expired.json["outcomes"], late.json["outcomes"]) == (["failed"], ["recorded"])
    assert db.session.get(PaymentAttempt, attempt.id).status == "succeeded"
    assert count(AuditEvent, AuditEvent.action == "payment_attempt.late_success") == 1


def _deliver_at_once(base: str, bodies: list[tuple[bytes, dict]]) -> list[int]:
    """POST every (body, headers) to the served webhook from its own thread, released together."""
    barrier = threading.Barrier(len(bodies))
    statuses: list[int | None] = [None] * len(bodies)

    def deliver(index: int, body: bytes, headers: dict) -> None:
        with requests.Session() as http:
            barrier.wait(timeout=10)
            statuses[index] = http.post(base + WEBHOOK, data=body, headers=headers, timeout=30).status_code

    threads = [threading.Thread(target=deliver, args=(i, *b)) for i, b in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_identical_deliveries_at_once_make_exactly_one_payment(stripe_app):
    debtor = make_debtor()
    body, headers = signed(completed(start_attempt(debtor)))

    with serve_in_background(stripe_app) as base:
        statuses = _deliver_at_once(base, [(body, headers)] * 8)

    assert statuses == [200] * 8
    assert len(payments_of(debtor.customer_id)) == 1
    assert count(ProviderEvent) == 1


def test_both_events_of_one_payment_delivered_at_once_make_one_payment(stripe_app):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    both = [signed(completed(attempt)), signed(intent_succeeded(attempt))] * 3

    with serve_in_background(stripe_app) as base:
        statuses = _deliver_at_once(base, both)

    assert statuses == [200] * 6
    assert len(payments_of(debtor.customer_id)) == 1
    outcomes = sorted(e.outcome for e in events())
    assert outcomes == ["already_recorded", "recorded"]


def test_a_different_amount_than_asked_is_recorded_as_paid(client):
    debtor = make_debtor()
    attempt = start_attempt(debtor)

    post(client, completed(attempt, amount=6000))

    [payment] = payments_of(debtor.customer_id)
    assert payment.amount_cents == 6000
    assert customer_balance(debtor.customer_id, today()).credit_cents == 200
    assert db.session.scalar(select(Payment.id)) == payment.id
