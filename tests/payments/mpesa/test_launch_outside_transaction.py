"""Starting a payment holds no database transaction while the provider answers: the push (an HTTP call that may
take the provider's whole timeout) is made after launch_attempt has ended the transaction that read the attempt.

A Daraja of our own on loopback looks at PostgreSQL's pg_stat_activity for this database at the moment our push
reaches it: no backend may then be idle in a transaction (the request's session would be, holding its snapshot
and its pooled connection, until the provider answered)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, jsonify
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from isp_admin.devserver import serve_in_background
from isp_admin.extensions import db
from isp_admin.models import Customer, PaymentAttempt
from isp_admin.models.portal import PortalAccount
from isp_admin.services.payments.providers.mpesa import forget_tokens
from tests.conftest import clean_context
from tests.factories import _PASSWORD_HASH
from tests.portal.conftest import portal_sign_in
from tests.support.daraja import enable_mpesa, mpesa_settings, suspended_for_non_payment

CHECKOUT_ID = "ws_CO_05122026_watched"
OPEN_TRANSACTIONS = text(
    "SELECT pid, state, left(query, 200) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'")


class WatchingDaraja:
    """Answers Daraja's OAuth and STK push; on each push, notes the backends idle in a transaction right then."""

    def __init__(self, database_url: str):
        self.engine = create_engine(database_url, poolclass=NullPool)
        self.pushes: list[list[tuple]] = []
        self.app = Flask(__name__)
        self.app.add_url_rule("/oauth/v1/generate", view_func=self.token, methods=["GET"])
        self.app.add_url_rule("/mpesa/stkpush/v1/processrequest", view_func=self.push, methods=["POST"])

    def token(self):
        return jsonify({"access_token": "watched-token", "expires_in": "3599"})

    def push(self):
        with self.engine.connect() as conn:
            self.pushes.append([tuple(row) for row in conn.execute(OPEN_TRANSACTIONS)])
        return jsonify({"MerchantRequestID": "29115-1", "CheckoutRequestID": CHECKOUT_ID, "ResponseCode": "0",
                        "ResponseDescription": "Success. Request accepted for processing",
                        "CustomerMessage": "Success. Request accepted for processing"})


@pytest.fixture
def watched(make_app, backends) -> Iterator[tuple[Flask, WatchingDaraja]]:
    if not backends["database_url"].startswith("postgresql"):
        pytest.skip("pg_stat_activity is PostgreSQL's")
    forget_tokens()
    daraja = WatchingDaraja(backends["database_url"])
    try:
        with serve_in_background(daraja.app) as url, clean_context(make_app(**mpesa_settings(url))) as app:
            enable_mpesa()
            yield app, daraja
    finally:
        daraja.engine.dispose()
        forget_tokens()


def test_the_push_to_the_phone_is_made_with_no_transaction_open(watched):
    app, daraja = watched
    debtor = suspended_for_non_payment()
    number = db.session.get(Customer, debtor["customer_id"]).account_number
    db.session.add(PortalAccount(customer_id=debtor["customer_id"], password_hash=_PASSWORD_HASH))
    db.session.commit()
    db.session.rollback()  # the test's own session holds nothing open either
    client = app.test_client()
    assert portal_sign_in(client, number).status_code == 302

    paid = client.post(f"/portal/pay/{debtor['invoice_id']}", data={"provider": "mpesa", "phone": "0712 345 678"})

    assert paid.status_code == 302 and "/portal/payments/attempt/" in paid.headers["Location"]
    assert daraja.pushes == [[]], "a transaction was open while the provider was called"
    db.session.rollback()
    [attempt] = db.session.scalars(db.select(PaymentAttempt)).all()
    assert (attempt.status, attempt.provider_ref, attempt.invoice_id) == ("pending", CHECKOUT_ID,
                                                                          debtor["invoice_id"])
