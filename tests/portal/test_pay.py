"""Paying from the portal: the walled garden's landing, the "how else to pay" state, the status page, and a whole
payment through the real Stripe provider against the local fake (localstripe + Checkout), served on loopback."""
from __future__ import annotations

import re
import secrets
import time

import requests

from isp_admin.extensions import db
from isp_admin.models import Customer, PaymentAttempt
from isp_admin.models.portal import PortalAccount
from tests.factories import _PASSWORD_HASH, PASSWORD
from tests.payments.conftest import STRIPE_SECRET, invoice, make_debtor, payments_of, subscription
from tests.portal.conftest import portal_customer, portal_sign_in


def test_without_a_provider_the_pay_page_says_how_else_to_pay(make_app, app):
    banked = make_app(COMPANY_NAME="Riverside Net", COMPANY_ADDRESS="Bank: River Bank, account 12-345")
    with banked.app_context():
        debtor = make_debtor()
        db.session.add(PortalAccount(customer_id=debtor.customer_id, password_hash=_PASSWORD_HASH))
        db.session.commit()
        client = banked.test_client()
        number = db.session.get(Customer, debtor.customer_id).account_number
        portal_sign_in(client, number)
        page = client.get("/portal/pay").get_data(as_text=True)
        assert 'data-testid="how-else-to-pay"' in page
        assert "River Bank, account 12-345" in page and debtor.invoice_number in page and "<select" not in page
        refused = client.post(f"/portal/pay/{debtor.invoice_id}", data={"provider": "stripe"})
        assert refused.status_code == 302 and refused.headers["Location"] == "/portal/pay"
        assert db.session.scalar(db.select(db.func.count()).select_from(PaymentAttempt)) == 0


def test_nothing_to_pay_is_said(app, client):
    customer, _ = portal_customer()
    portal_sign_in(client, customer.account_number)
    assert "Nothing to pay" in client.get("/portal/pay").get_data(as_text=True)


def test_the_status_page_refreshes_while_pending_and_shows_the_outcome(app, client):
    customer, _ = portal_customer()
    attempt = PaymentAttempt(public_id=secrets.token_urlsafe(18), customer_id=customer.id, provider="mpesa",
                             amount_cents=2500, currency="USD", status="pending", phone="+254700000001",
                             created_by="portal")
    db.session.add(attempt)
    db.session.commit()
    portal_sign_in(client, customer.account_number)
    pending = client.get(f"/portal/payments/attempt/{attempt.public_id}").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="5">' in pending and "check your phone" in pending
    attempt.status, attempt.failure_reason = "failed", "Request cancelled by user"
    db.session.commit()
    failed = client.get(f"/portal/payments/attempt/{attempt.public_id}").get_data(as_text=True)
    assert "http-equiv" not in failed and "Request cancelled by user" in failed


def _wait_for(check, seconds: float = 15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    return check()


def test_paying_an_invoice_online_end_to_end(stripe_live):
    fake, base = stripe_live.fake, stripe_live.base
    fake.configure_webhook(base + "/webhooks/stripe/", STRIPE_SECRET)
    debtor = make_debtor()
    db.session.add(PortalAccount(customer_id=debtor.customer_id, password_hash=_PASSWORD_HASH))
    db.session.commit()
    number = db.session.get(Customer, debtor.customer_id).account_number
    with requests.Session() as browser:
        # The walled garden sends the suspended customer to the pay page: sign in first, then back there.
        landing = browser.get(f"{base}/portal/pay", allow_redirects=False, timeout=10)
        assert landing.status_code == 302 and landing.headers["Location"] == "/portal/login?next=/portal/pay"
        signed = browser.post(f"{base}/portal/login?next=/portal/pay", allow_redirects=False, timeout=10,
                              data={"identifier": number, "password": PASSWORD})
        assert signed.headers["Location"] == "/portal/pay"
        pay_page = browser.get(f"{base}/portal/pay", timeout=10).text
        assert debtor.invoice_number in pay_page and 'value="stripe"' in pay_page
        started = browser.post(f"{base}/portal/pay/{debtor.invoice_id}", data={"provider": "stripe"},
                               allow_redirects=False, timeout=30)
        assert started.status_code == 302 and started.headers["Location"].startswith(f"{fake.base}/checkout/")
        checkout = started.headers["Location"]
        assert browser.get(checkout, timeout=10).status_code == 200
        paid = browser.post(f"{checkout}/pay", data={"card_number": "4242 4242 4242 4242"},
                            allow_redirects=False, timeout=30)
        assert paid.status_code == 303
        status_url = paid.headers["Location"]
        assert re.fullmatch(re.escape(base) + r"/portal/payments/attempt/[\w\-]+", status_url)
        landed = _wait_for(lambda: "Payment received" in browser.get(status_url, timeout=10).text)
        assert landed
        assert "http-equiv" not in browser.get(status_url, timeout=10).text
        history = browser.get(f"{base}/portal/payments", timeout=10).text
    [payment] = payments_of(debtor.customer_id)
    assert payment.provider == "stripe" and payment.amount_cents == debtor.total_cents
    assert "58.00" in history
    assert invoice(debtor.invoice_id).status == "paid"
    assert subscription(debtor.subscription_id).status == "active"
