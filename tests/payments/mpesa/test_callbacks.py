"""The STK result callback as Safaricom posts it to our served app: exactly one payment, however often it comes;
a wrong URL or another payment's result is refused and stores nothing; a failure fails the attempt."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from isp_admin.devserver import serve_in_background
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Invoice, Payment, PaymentAttempt, ProviderEvent, Subscription
from isp_admin.services.payments.providers.base import InvalidNotification
from isp_admin.services.payments.providers.mpesa import MpesaProvider
from tests.support.daraja import callback_url, post_json, start_payment, stk_callback, suspended_for_non_payment


@pytest.fixture
def served(mpesa_app):
    """Our app on a loopback port, where Safaricom's callbacks arrive."""
    with serve_in_background(mpesa_app) as url:
        yield url


@pytest.fixture
def pushed(mpesa_app, served, daraja):
    """A customer suspended for non-payment who has been sent an STK push for the invoice; its callback URL."""
    owed = suspended_for_non_payment(total_cents=200050)
    attempt, token = start_payment(owed["customer_id"], owed["invoice_id"], callback_base=served)
    return {**owed, "attempt_id": attempt.id, "ref": attempt.provider_ref, "public_id": attempt.public_id,
            "url": callback_url(served, attempt, token)}


def stored() -> tuple[list[Payment], list[ProviderEvent], PaymentAttempt]:
    db.session.rollback()  # read what the served app committed
    return (list(db.session.scalars(select(Payment))), list(db.session.scalars(select(ProviderEvent))),
            db.session.scalar(select(PaymentAttempt)))


def test_the_success_callback_records_one_payment_and_lifts_the_suspension(pushed):
    body = stk_callback(pushed["ref"], 0, amount=2001, receipt="RKT1234567")

    answer = post_json(pushed["url"], body)
    again = post_json(pushed["url"], body)  # Safaricom (or a proxy) delivering twice

    assert answer.status_code == again.status_code == 200
    assert answer.json()["ResultCode"] == 0 and answer.json()["outcomes"] == ["recorded"]
    payments, events, attempt = stored()
    [payment] = payments
    assert (payment.amount_cents, payment.method, payment.provider, payment.provider_ref, payment.reference) == (
        200100, "mobile_money", "mpesa", pushed["ref"], "RKT1234567")
    assert [(e.event_id, e.outcome, e.payment_id) for e in events] == [(f"stk:{pushed['ref']}", "recorded",
                                                                        payment.id)]
    assert (attempt.status, attempt.payment_id) == ("succeeded", payment.id)
    assert db.session.get(Invoice, pushed["invoice_id"]).status == "paid"
    sub = db.session.get(Subscription, pushed["subscription_id"])
    assert (sub.status, sub.suspension_reason) == ("active", None)


@pytest.mark.parametrize("wrong", ["token", "public_id", "provider"])
def test_a_callback_to_a_wrong_url_is_not_found_and_stores_nothing(pushed, wrong):
    base, _, rest = pushed["url"].partition("/webhooks/mpesa/")
    public_id, token, _ = rest.split("/")
    url = {"token": f"{base}/webhooks/mpesa/{public_id}/{token[:-2]}xy/",
           "public_id": f"{base}/webhooks/mpesa/{public_id[:-2]}xy/{token}/",
           "provider": f"{base}/webhooks/stripe/{public_id}/{token}/"}[wrong]

    answer = post_json(url, stk_callback(pushed["ref"], 0, amount=2001))

    assert answer.status_code == 404
    payments, events, attempt = stored()
    assert (payments, events, attempt.status) == ([], [], "pending")


@pytest.mark.parametrize("body", [
    json.dumps(stk_callback("ws_CO_SOMEONE_ELSES", 0, amount=2001)).encode(),  # another payment's result
    b"{not json", b"[]", b'{"Body": {}}', b"\xff\xfe",
    json.dumps({"Body": {"stkCallback": {"CheckoutRequestID": "x"}}}).encode(),
])
def test_a_result_that_is_not_this_payments_is_refused_and_stores_nothing(pushed, body):
    answer = post_json(pushed["url"], body)

    assert answer.status_code == 400
    payments, events, attempt = stored()
    assert (payments, events, attempt.status) == ([], [], "pending")


def test_a_cancelled_push_fails_the_attempt_and_late_money_is_still_recorded(pushed):
    cancelled = post_json(pushed["url"], stk_callback(pushed["ref"], 1032, desc="Request cancelled by user"))

    assert cancelled.status_code == 200
    payments, events, attempt = stored()
    assert payments == [] and [e.outcome for e in events] == ["failed"]
    assert (attempt.status, attempt.failure_reason) == ("failed", "Request cancelled by user")

    # The customer tried again from the same prompt and paid: money after a failure is still money.
    paid = post_json(pushed["url"], stk_callback(pushed["ref"], 0, amount=2001))

    assert paid.status_code == 200
    payments, events, attempt = stored()
    assert [p.amount_cents for p in payments] == [200100]
    assert (attempt.status, attempt.payment_id) == ("succeeded", payments[0].id)
    assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.action == "payment_attempt.late_success"))


@pytest.mark.parametrize(("metadata", "reason"), [
    ([{"Name": "MpesaReceiptNumber", "Value": "R1"}], "amount"),
    ([{"Name": "Amount", "Value": 10}], "receipt"),
    ([{"Name": "Amount", "Value": -10}, {"Name": "MpesaReceiptNumber", "Value": "R1"}], "impossible"),
    ([{"Name": "Amount", "Value": "10.001"}, {"Name": "MpesaReceiptNumber", "Value": "R1"}], "impossible"),
    ([{"Name": "Amount", "Value": True}, {"Name": "MpesaReceiptNumber", "Value": "R1"}], "amount"),
    ([{"Name": "Amount", "Value": "NaN"}, {"Name": "MpesaReceiptNumber", "Value": "R1"}], "impossible"),
])
def test_a_success_without_readable_details_is_not_genuine(metadata, reason):
    attempt = PaymentAttempt(public_id="pub", provider_ref="ws_CO_1")
    body = {"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0, "ResultDesc": "ok",
                                     "CallbackMetadata": {"Item": metadata}}}}

    with pytest.raises(InvalidNotification, match=reason):
        MpesaProvider({}).parse(json.dumps(body).encode(), {}, attempt=attempt)


def test_a_result_is_read_in_our_terms():
    attempt = PaymentAttempt(public_id="pub", provider_ref=None)  # the callback beat the push's answer
    body = json.dumps(stk_callback("ws_CO_9", 0, amount="1500.00", receipt="RKX9")).encode()

    [notice] = MpesaProvider({}).parse(body, {}, attempt=attempt)
    [failed] = MpesaProvider({}).parse(json.dumps(stk_callback("ws_CO_9", 1037)).encode(), {}, attempt=attempt)

    assert (notice.kind, notice.event_id, notice.amount_cents, notice.currency, notice.receipt, notice.attempt_ref,
            notice.public_id) == ("succeeded", "stk:ws_CO_9", 150000, "KES", "RKX9", "ws_CO_9", "pub")
    assert (failed.kind, failed.event_id, failed.amount_cents) == ("failed", "stk:ws_CO_9:1037", None)
    with pytest.raises(InvalidNotification):
        MpesaProvider({}).parse(body, {}, attempt=None)  # only an attempt's own URL takes results
