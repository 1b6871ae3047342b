"""Refunds: at Stripe (localstripe) from here, then reversed here once; the refund's webhook changes nothing;
a refund made in Stripe's dashboard reverses the payment it names; a refund recorded by hand."""
from __future__ import annotations

import pytest
import requests

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid
from isp_admin.extensions import db
from isp_admin.models import ProviderEvent
from isp_admin.services.billing import payments
from isp_admin.services.payments import refunds
from isp_admin.services.platform.clock import today
from isp_admin.unit_of_work import commit_once
from tests.payments.conftest import STRIPE_SECRET, count, events, invoice, make_debtor, payments_of, start_attempt
from tests.payments.stripe.helpers import WEBHOOK, charge_refunded, completed, post, signed
from tests.payments.stripe.test_checkout_live import launch


def paid_through_checkout(live):
    """A debtor who paid their invoice on the local Stripe's hosted page; returns (debtor, payment)."""
    live.fake.configure_webhook(live.base + WEBHOOK, STRIPE_SECRET)
    debtor = make_debtor()
    attempt = launch(debtor, live.base)
    with requests.Session() as browser:
        browser.post(f"{attempt.redirect_url}/pay", data={}, allow_redirects=False, timeout=30)
    [payment] = payments_of(debtor.customer_id)
    return debtor, payment


def test_a_refund_goes_through_stripe_reverses_the_payment_once_and_its_webhook_is_a_no_op(stripe_live):
    debtor, payment = paid_through_checkout(stripe_live)

    refunded = commit_once(refunds.refund_payment, payment.id, "Customer moved away", today())

    assert refunded.status == "reversed" and refunded.refund_ref.startswith("re_")
    assert invoice(debtor.invoice_id).status in ("open", "overdue")  # owed again
    stored = db.session.query(ProviderEvent).filter_by(event_id=f"refund:{refunded.refund_ref}").one()
    assert (stored.outcome, stored.payment_id, stored.amount_cents) == ("refunded", payment.id, 5800)
    # Stripe then tells us about the refund we made: found by the payment intent, and nothing changes.
    with requests.Session() as http:
        body, headers = signed(charge_refunded(payment.reference, 5800, 5800))
        answer = http.post(stripe_live.base + WEBHOOK, data=body, headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.json()["outcomes"] == ["ignored"]
    [after] = payments_of(debtor.customer_id)
    assert (after.status, after.refund_ref) == ("reversed", refunded.refund_ref)
    with pytest.raises(BusinessRuleViolation):
        commit_once(refunds.refund_payment, payment.id, "Again", today())


def test_a_payment_without_a_refund_api_is_refused_and_pointed_to_record_refund(stripe_app):
    debtor = make_debtor()
    cash, _ = payments.record_payment(debtor.customer_id, 1000, "cash", today(), today())
    db.session.commit()

    with pytest.raises(BusinessRuleViolation, match="record the refund"):
        commit_once(refunds.refund_payment, cash.id, "Asked for it back", today())
    assert payments_of(debtor.customer_id)[0].status == "completed"
    assert refunds.can_refund("stripe") and not refunds.can_refund("mpesa") and not refunds.can_refund(None)


def test_a_refund_recorded_by_hand_reverses_once_and_keeps_the_reference(stripe_app):
    debtor = make_debtor()
    cash, _ = payments.record_payment(debtor.customer_id, 5800, "cash", today(), today(),
                                      invoice_id=debtor.invoice_id)
    db.session.commit()

    commit_once(refunds.record_refund, cash.id, "CASH-BACK-7", "Overpaid at the counter", today())

    [payment] = payments_of(debtor.customer_id)
    assert (payment.status, payment.refund_ref) == ("reversed", "CASH-BACK-7")
    assert "CASH-BACK-7" in payment.reversal_reason
    assert invoice(debtor.invoice_id).status != "paid"
    with pytest.raises(BusinessRuleViolation):
        commit_once(refunds.record_refund, cash.id, "CASH-BACK-8", "Again", today())
    with pytest.raises(Invalid):
        commit_once(refunds.record_refund, cash.id, "", "No reference", today())


def test_one_provider_refund_reference_is_one_payments_only(stripe_app):
    debtor = make_debtor()
    first = start_attempt(debtor, session_id="cs_test_a", top_up=700)
    second = start_attempt(debtor, session_id="cs_test_b", top_up=100)
    for attempt, intent in ((first, "pi_a"), (second, "pi_b")):
        assert post(stripe_app.test_client(), completed(attempt, intent=intent)).json["outcomes"] == ["recorded"]
    one, two = payments_of(debtor.customer_id)
    commit_once(refunds.record_refund, one.id, "re_manual_1", "Refunded in Stripe", today())

    with pytest.raises(Conflict):
        commit_once(refunds.record_refund, two.id, "re_manual_1", "Same refund again", today())
    assert payments_of(debtor.customer_id)[1].status == "completed"


def test_a_refund_made_in_stripes_dashboard_reverses_the_payment_it_names(stripe_app):
    client = stripe_app.test_client()
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    post(client, completed(attempt, intent="pi_dash"))

    answer = post(client, charge_refunded("pi_dash", 5800, 5800))
    replay = post(client, charge_refunded("pi_dash", 5800, 5800))

    assert answer.json["outcomes"] == ["refunded"] and replay.json["outcomes"] == ["ignored"]
    [payment] = payments_of(debtor.customer_id)
    assert payment.status == "reversed"
    assert invoice(debtor.invoice_id).status != "paid"


def test_a_partial_refund_in_stripe_is_held_for_a_person(stripe_app):
    client = stripe_app.test_client()
    debtor = make_debtor()
    post(client, completed(start_attempt(debtor), intent="pi_part"))

    answer = post(client, charge_refunded("pi_part", 5800, 1000))

    assert answer.json["outcomes"] == ["held"]
    assert payments_of(debtor.customer_id)[0].status == "completed"
    assert "partial refund" in events()[-1].detail
    assert count(ProviderEvent, ProviderEvent.outcome == "held") == 1


def test_stripe_is_asked_for_the_refund_with_no_transaction_open(stripe_live, monkeypatch):
    from isp_admin.services.payments.providers.stripe import StripeProvider

    debtor, payment = paid_through_checkout(stripe_live)
    seen = []
    original = StripeProvider.refund

    def watched(self, paid, attempt):
        # What the provider sees: no transaction (so no snapshot, no locks, no pinned connection), rows as read.
        seen.append((db.session().in_transaction(), paid.id, paid.amount_cents, attempt.public_id if attempt else None))
        return original(self, paid, attempt)

    monkeypatch.setattr(StripeProvider, "refund", watched)
    refunded = commit_once(refunds.refund_payment, payment.id, "Customer moved away", today())

    assert seen == [(False, payment.id, debtor.total_cents, seen[0][3])] and seen[0][3]
    assert refunded.status == "reversed" and refunded.refund_ref.startswith("re_")
    assert count(ProviderEvent, ProviderEvent.event_id == f"refund:{refunded.refund_ref}") == 1
