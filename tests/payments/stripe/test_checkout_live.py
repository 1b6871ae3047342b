"""The whole card path against a local Stripe (localstripe + Checkout): start an attempt, pay the hosted page,
and the signed webhooks reach our served app; the status query; the query racing the webhook; a Stripe that
cannot be reached."""
from __future__ import annotations

import time

import requests
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import PaymentAttempt, ProviderEvent
from isp_admin.services.payments import attempts
from isp_admin.services.payments.events import apply_notice
from isp_admin.services.payments.providers.registry import get_provider
from isp_admin.services.platform.clock import today
from isp_admin.unit_of_work import commit_once
from tests.payments.conftest import STRIPE_SECRET, events, invoice, make_debtor, payments_of, subscription
from tests.payments.stripe.helpers import WEBHOOK, completed, signed
from tests.support.threads import in_threads


def launch(debtor, base: str = "http://127.0.0.1:9") -> PaymentAttempt:
    """Create and launch an attempt for the debtor's invoice as the portal does: commit, then ask Stripe."""
    attempt, token = attempts.create_attempt(debtor.customer_id, "stripe", invoice_id=debtor.invoice_id)
    db.session.commit()
    attempt = commit_once(attempts.launch_attempt, attempt.id, return_url=f"{base}/portal/paid",
                          cancel_url=f"{base}/portal/cancelled", callback_url=f"{base}/unused",
                          description=f"Invoice {debtor.invoice_number}")
    return db.session.get(PaymentAttempt, attempt.id)


def wait_for(condition, timeout: float = 15.0):
    """Poll `condition` (reading committed rows) until it holds; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        db.session.rollback()
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_paying_the_hosted_checkout_page_records_one_payment_from_the_signed_webhooks(stripe_live):
    fake = stripe_live.fake
    fake.configure_webhook(stripe_live.base + WEBHOOK, STRIPE_SECRET)
    debtor = make_debtor()

    attempt = launch(debtor, stripe_live.base)

    assert attempt.status == "pending" and attempt.provider_ref.startswith("cs_test_")
    assert attempt.redirect_url == f"{fake.base}/checkout/{attempt.provider_ref}"
    session = fake.sessions[attempt.provider_ref]
    assert (session["amount_total"], session["currency"], session["client_reference_id"]) == \
        (5800, "usd", attempt.public_id)
    assert session["metadata"]["invoice"] == debtor.invoice_number
    assert session["_intent_metadata"]["attempt"] == attempt.public_id
    with requests.Session() as browser:
        page = browser.get(attempt.redirect_url, timeout=10)
        paid = browser.post(f"{attempt.redirect_url}/pay", data={"card_number": "4242 4242 4242 4242"},
                            allow_redirects=False, timeout=30)

    assert page.status_code == 200 and "58.00 USD" in page.text and 'id="pay"' in page.text.replace("'", '"')
    assert paid.status_code == 303 and paid.headers["Location"] == f"{stripe_live.base}/portal/paid"
    assert fake.deliveries == [("checkout.session.completed", 200)]
    [payment] = payments_of(debtor.customer_id)
    assert payment.reference == fake.sessions[attempt.provider_ref]["payment_intent"]
    assert invoice(debtor.invoice_id).status == "paid"
    assert subscription(debtor.subscription_id).status == "active"
    # localstripe's own signed payment_intent.succeeded follows about a second later: it finds the money in.
    intent_event = wait_for(lambda: db.session.scalar(
        select(ProviderEvent).where(ProviderEvent.event_type == "payment_intent.succeeded")))
    assert intent_event is not None and intent_event.outcome == "already_recorded"
    assert len(payments_of(debtor.customer_id)) == 1


def test_a_declined_card_leaves_the_checkout_open_and_records_nothing(stripe_live):
    stripe_live.fake.configure_webhook(stripe_live.base + WEBHOOK, STRIPE_SECRET)
    debtor = make_debtor()
    attempt = launch(debtor, stripe_live.base)

    with requests.Session() as browser:
        declined = browser.post(f"{attempt.redirect_url}/pay", data={"card_number": "4000 0000 0000 0341"},
                                allow_redirects=False, timeout=30)

    assert declined.status_code == 402
    assert stripe_live.fake.sessions[attempt.provider_ref]["status"] == "open"
    assert payments_of(debtor.customer_id) == []
    assert db.session.get(PaymentAttempt, attempt.id).status == "pending"


def test_the_status_query_reads_the_session_open_then_paid(stripe_live):
    debtor = make_debtor()
    attempt = launch(debtor, stripe_live.base)
    provider = get_provider("stripe")

    assert provider.query(attempt) is None  # open: nothing to say yet
    with requests.Session() as browser:
        browser.post(f"{attempt.redirect_url}/pay", data={}, allow_redirects=False, timeout=30)
    notice = provider.query(attempt)
    event = commit_once(apply_notice, "stripe", notice, today())

    assert (notice.kind, notice.event_id, notice.amount_cents) == \
        ("succeeded", f"status:{attempt.provider_ref}:paid", 5800)
    assert event.outcome == "recorded"
    assert provider.query(attempt).event_id == notice.event_id  # the same fact, the same id: a second poll is a replay
    assert commit_once(apply_notice, "stripe", provider.query(attempt), today()).id == event.id
    assert len(payments_of(debtor.customer_id)) == 1


def test_the_status_query_of_an_expired_session_fails_the_attempt(stripe_live):
    debtor = make_debtor()
    attempt = launch(debtor, stripe_live.base)
    with requests.Session() as http:
        http.post(f"{attempt.redirect_url}/expire", timeout=10).raise_for_status()

    notice = get_provider("stripe").query(attempt)
    commit_once(apply_notice, "stripe", notice, today())

    assert notice.kind == "failed"
    assert db.session.get(PaymentAttempt, attempt.id).status == "failed"
    assert payments_of(debtor.customer_id) == []


def test_the_webhook_racing_the_status_query_makes_one_payment(stripe_live):
    app, debtor = stripe_live.app, make_debtor()
    attempt = launch(debtor, stripe_live.base)
    with requests.Session() as browser:  # paid, but the webhook is only sent below, at the same time as the poll
        browser.post(f"{attempt.redirect_url}/pay", data={}, allow_redirects=False, timeout=30)
    intent = stripe_live.fake.sessions[attempt.provider_ref]["payment_intent"]
    notice = get_provider("stripe").query(attempt)
    body, headers = signed(completed(attempt, intent=intent))

    def poll():
        return commit_once(apply_notice, "stripe", notice, today()).outcome

    def webhook():
        with requests.Session() as http:
            return http.post(stripe_live.base + WEBHOOK, data=body, headers=headers, timeout=30).json()["outcomes"][0]

    outcomes = in_threads(app, poll, webhook)

    assert sorted(outcomes) == ["already_recorded", "recorded"], outcomes
    assert len(payments_of(debtor.customer_id)) == 1
    assert len(events()) == 2


def test_a_stripe_that_cannot_be_reached_fails_the_attempt_with_a_safe_message(stripe_app):
    debtor = make_debtor()

    attempt = launch(debtor)

    assert attempt.status == "failed"
    assert attempt.failure_reason == "Stripe could not be reached; please try again in a few minutes."
    assert attempt.provider_ref is None


def test_a_refused_key_is_a_safe_message_not_a_crash(stripe_live):
    stripe_live.app.config["STRIPE_SECRET_KEY"] = "pk_test_not_a_secret_key"  # localstripe answers 401
    debtor = make_debtor()

    attempt = launch(debtor, stripe_live.base)

    assert attempt.status == "failed"
    assert "credentials" in attempt.failure_reason and "pk_test" not in attempt.failure_reason


def test_a_session_stripe_does_not_know_is_not_called_failed(stripe_live):
    debtor = make_debtor()
    attempt = launch(debtor, stripe_live.base)
    attempt.provider_ref = "cs_test_from_another_account"
    db.session.commit()

    assert get_provider("stripe").query(attempt) is None  # maybe paid in the other account: the sweep expires it
