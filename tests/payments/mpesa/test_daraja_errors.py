"""What daraja-mock cannot say, from a small Daraja of our own on a loopback port: "still processing" while the
customer has not answered, a refused push, refused credentials, and an expired token renewed once."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, jsonify, request

from isp_admin.devserver import serve_in_background
from isp_admin.models import PaymentAttempt
from isp_admin.services.payments.providers.base import Charge, ProviderError
from isp_admin.services.payments.providers.mpesa import MpesaProvider, forget_tokens
from tests.support.daraja import mpesa_settings


class Scripted:
    """A Daraja whose answers a test sets: (status, JSON) per path; every request is recorded."""

    def __init__(self):
        self.answers: dict[str, list[tuple[int, dict]]] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.app = Flask(__name__)
        self.app.add_url_rule("/<path:path>", view_func=self.answer, methods=["GET", "POST"])

    def answer(self, path: str):
        self.seen.append((path, request.headers.get("Authorization")))
        queue = self.answers.get(path) or [(200, {"access_token": "t1", "expires_in": "3599"})]
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return jsonify(body), status


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, MpesaProvider]]:
    forget_tokens()
    fake = Scripted()
    with serve_in_background(fake.app) as url:
        yield fake, MpesaProvider(mpesa_settings(url))
    forget_tokens()


def attempt() -> PaymentAttempt:
    return PaymentAttempt(public_id="pub", provider_ref="ws_CO_1", amount_cents=10000, phone="0712345678",
                          customer_id=1, invoice_id=None)


def test_still_processing_is_no_answer_yet(scripted):
    fake, provider = scripted
    fake.answers["mpesa/stkpushquery/v1/query"] = [
        (500, {"requestId": "1", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"})]

    assert provider.query(attempt()) is None


def test_a_refused_query_is_a_provider_error_with_its_reason(scripted):
    fake, provider = scripted
    fake.answers["mpesa/stkpushquery/v1/query"] = [
        (400, {"requestId": "1", "errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid CheckoutRequestID"})]

    with pytest.raises(ProviderError, match=r"Invalid CheckoutRequestID \(400\.002\.02\)"):
        provider.query(attempt())


def test_a_refused_push_is_a_provider_error(scripted, app):
    fake, provider = scripted
    fake.answers["mpesa/stkpush/v1/processrequest"] = [
        (200, {"ResponseCode": "1", "ResponseDescription": "Rejected\x00 <b>now</b>"})]

    with pytest.raises(ProviderError) as refused:
        provider.start(Charge(public_id="pub", amount_cents=10000, currency="KES", phone="0712345678"),
                       return_url="", cancel_url="", callback_url="https://isp.example/cb", description="")

    assert str(refused.value) == "M-Pesa refused the payment: Rejected <b>now</b> (1)"


def test_refused_credentials_say_which_settings_to_check(scripted):
    fake, provider = scripted
    fake.answers["oauth/v1/generate"] = [(400, {"errorCode": "400.008.01", "errorMessage": "Invalid Authentication"})]

    with pytest.raises(ProviderError, match="MPESA_CONSUMER_KEY"):
        provider.query(attempt())


def test_an_expired_token_is_renewed_once(scripted):
    fake, provider = scripted
    fake.answers["oauth/v1/generate"] = [(200, {"access_token": "old", "expires_in": "3599"}),
                                         (200, {"access_token": "new", "expires_in": "3599"})]
    fake.answers["mpesa/stkpushquery/v1/query"] = [(401, {"errorCode": "404.001.03"}),
                                                   (200, {"ResultCode": "0", "ResultDesc": "ok"})]

    notice = provider.query(attempt())

    assert (notice.kind, notice.event_id, notice.amount_cents) == ("succeeded", "stk:ws_CO_1", None)
    assert fake.seen == [("oauth/v1/generate", "Basic dGVzdC1rZXk6dGVzdC1zZWNyZXQ="),
                         ("mpesa/stkpushquery/v1/query", "Bearer old"), ("oauth/v1/generate", fake.seen[2][1]),
                         ("mpesa/stkpushquery/v1/query", "Bearer new")]
