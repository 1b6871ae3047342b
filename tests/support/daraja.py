"""A Daraja double (daraja-mock) on a free loopback port, an M-Pesa-enabled KES app, and what Safaricom would post.

daraja-mock sends no callbacks: a test posts the callback JSON to our callback URL itself, as Safaricom would.
Its STK query answers whatever set_stk_result() set, for any CheckoutRequestID; request_log() shows what we sent.
Fixtures are defined where they are used (tests/payments/mpesa/conftest.py, tests/jobs/test_payments_poll.py)
over these functions.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import requests
from daraja_mock import DarajaMock

from isp_admin.devserver import free_port
from isp_admin.extensions import db
from isp_admin.models import PaymentAttempt, PaymentProviderSetting
from isp_admin.services.billing import collections, invoices
from isp_admin.services.payments.attempts import create_attempt, launch_attempt
from isp_admin.services.platform.clock import today
from isp_admin.unit_of_work import commit_once
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

SHORTCODE, PASSKEY = "174379", "test-passkey"
PUSH, QUERY = "/mpesa/stkpush/v1/processrequest", "/mpesa/stkpushquery/v1/query"
NOWHERE = "http://127.0.0.1:9"  # a callback base for tests that post no callback


@dataclass
class Daraja:
    """The running double and its base URL."""

    mock: DarajaMock
    url: str

    def sent(self, path: str) -> list[dict]:
        """The JSON bodies we sent to `path`, oldest first."""
        return [entry["body"] for entry in self.mock.request_log() if entry["path"] == path]


_started: list[Daraja] = []
_start_lock = threading.Lock()


def running_daraja() -> Daraja:
    """The test worker's one double, started on first use (run_thread, as its README says; it lives until exit)."""
    with _start_lock:
        if not _started:
            mock = DarajaMock()
            url = mock.run_thread(host="127.0.0.1", port=free_port())
            _wait_for(url)
            _started.append(Daraja(mock, url))
    return _started[0]


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 10
    with requests.Session() as http:
        while True:
            try:
                if http.get(f"{url}/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def mpesa_settings(base_url: str) -> dict:
    """The app config that points the M-Pesa provider at `base_url` (a KES ledger)."""
    return {"CURRENCY": "KES", "MPESA_CONSUMER_KEY": "test-key", "MPESA_CONSUMER_SECRET": "test-secret",
            "MPESA_SHORTCODE": SHORTCODE, "MPESA_PASSKEY": PASSKEY, "MPESA_BASE_URL": base_url,
            "PAYMENTS_HTTP_TIMEOUT": 5.0}


def enable_mpesa() -> None:
    """Switch M-Pesa on, as staff do on the provider settings page."""
    db.session.add(PaymentProviderSetting(provider="mpesa", enabled=True, updated_by="test"))
    db.session.commit()


def suspended_for_non_payment(total_cents: int = 200050) -> dict:
    """A customer suspended for non-payment of one open KES invoice (issued 40 days ago); plain ids."""
    issued = today() - timedelta(days=40)
    plan = PlanFactory(monthly_price_cents=total_cents, tax_rate_bp=0, currency="KES")
    customer = CustomerFactory()
    sub = SubscriptionFactory(customer=customer, plan=plan, start_date=issued, billing_day=issued.day,
                              next_bill_date=today() + timedelta(days=30))
    draft = invoices.create_draft(customer.id, [{"description": "Service", "quantity": 1,
                                                 "unit_price_cents": total_cents, "tax_rate_bp": 0}], issued)
    invoice = invoices.issue(draft.id, issued)
    db.session.commit()
    collections.run_mark_overdue(issued + timedelta(days=15))
    collections.run_enforce_overdue(issued + timedelta(days=22))
    db.session.commit()
    return {"customer_id": customer.id, "subscription_id": sub.id, "invoice_id": invoice.id,
            "invoice_number": invoice.number}


def start_payment(customer_id: int, invoice_id: int | None = None, *, phone: str = "0712 345 678",
                  callback_base: str = NOWHERE, amount_cents: int | None = None) -> tuple[PaymentAttempt, str]:
    """Start an M-Pesa payment as the portal does (attempt committed, then the push); return it and its token."""
    attempt, token = commit_once(create_attempt, customer_id, "mpesa", invoice_id=invoice_id, phone=phone,
                                 amount_cents=amount_cents)
    attempt_id = attempt.id
    commit_once(launch_attempt, attempt_id, return_url=f"{callback_base}/portal/",
                cancel_url=f"{callback_base}/portal/", callback_url=callback_url(callback_base, attempt, token),
                description="Invoice")
    return db.session.get(PaymentAttempt, attempt_id), token


def callback_url(base: str, attempt: PaymentAttempt, token: str) -> str:
    """The attempt's own callback URL (its secret in the path), as the portal gives it to Daraja."""
    return f"{base}/webhooks/mpesa/{attempt.public_id}/{token}/"


def stk_callback(checkout_id: str, result_code: int = 0, *, amount: int | float | str = 0,
                 receipt: str = "RKT1234567", desc: str | None = None) -> dict:
    """The JSON Safaricom posts to the CallBackURL when the customer answers (or fails to)."""
    callback = {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout_id,
                "ResultCode": result_code,
                "ResultDesc": desc or ("The service request is processed successfully." if result_code == 0
                                       else "Request cancelled by user")}
    if result_code == 0:
        callback["CallbackMetadata"] = {"Item": [
            {"Name": "Amount", "Value": amount}, {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "TransactionDate", "Value": 20261205102115}, {"Name": "PhoneNumber", "Value": 254712345678}]}
    return {"Body": {"stkCallback": callback}}


def post_json(url: str, payload: dict | bytes) -> requests.Response:
    """POST a callback as Safaricom does (a fresh connection, closed after), and return the read response."""
    with requests.Session() as http:
        if isinstance(payload, bytes):
            return http.post(url, data=payload, headers={"Content-Type": "application/json"}, timeout=30)
        return http.post(url, json=payload, timeout=30)
