"""Starting an M-Pesa payment: the STK push Daraja gets (shape, password, whole shillings, phone), the phone rule,
and a Daraja we cannot reach."""
from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from isp_admin.devserver import free_port
from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import Customer, PaymentAttempt
from isp_admin.services.payments.attempts import create_attempt
from isp_admin.services.payments.providers.mpesa import UNREACHABLE, normalise_phone
from isp_admin.unit_of_work import commit_once
from tests.conftest import clean_context
from tests.factories import CustomerFactory
from tests.support.daraja import (
    PASSKEY,
    PUSH,
    SHORTCODE,
    enable_mpesa,
    mpesa_settings,
    start_payment,
    suspended_for_non_payment,
)


def test_paying_an_invoice_pushes_whole_shillings_to_the_customers_phone(mpesa_app, daraja):
    owed = suspended_for_non_payment(total_cents=200050)  # KES 2,000.50

    attempt, token = start_payment(owed["customer_id"], owed["invoice_id"], phone="0712 345 678",
                                   callback_base="https://isp.example")

    [push] = daraja.sent(PUSH)
    assert push["Amount"] == 2001 and isinstance(push["Amount"], int)  # rounded up: the 50 cents become credit
    assert attempt.amount_cents == 200100
    assert push["PartyA"] == push["PhoneNumber"] == "254712345678"
    assert push["BusinessShortCode"] == push["PartyB"] == SHORTCODE
    assert push["TransactionType"] == "CustomerPayBillOnline"
    assert push["CallBackURL"] == f"https://isp.example/webhooks/mpesa/{attempt.public_id}/{token}/"
    stamp = datetime.strptime(push["Timestamp"], "%Y%m%d%H%M%S").replace(tzinfo=ZoneInfo("Africa/Nairobi"))
    assert abs(datetime.now(ZoneInfo("Africa/Nairobi")) - stamp) < timedelta(minutes=2)
    assert base64.b64decode(push["Password"]).decode() == SHORTCODE + PASSKEY + push["Timestamp"]
    assert push["AccountReference"] == owed["invoice_number"].removeprefix("INV-")
    assert len(push["AccountReference"]) <= 12 and 0 < len(push["TransactionDesc"]) <= 13
    assert (attempt.status, attempt.redirect_url) == ("pending", None)
    assert re.fullmatch(r"ws_CO_\w+", attempt.provider_ref)
    assert [entry["path"] for entry in daraja.mock.request_log()] == ["/oauth/v1/generate", PUSH]


def test_a_top_up_names_the_account_and_the_token_is_reused(mpesa_app, daraja):
    customer = CustomerFactory(account_number="C00004242")

    first, _ = start_payment(customer.id, amount_cents=50000, phone="+254 112 345 678")
    second, _ = start_payment(customer.id, amount_cents=1999, phone="254712345678")

    pushes = daraja.sent(PUSH)
    assert [p["AccountReference"] for p in pushes] == ["C00004242", "C00004242"]
    assert [p["Amount"] for p in pushes] == [500, 20]
    assert pushes[0]["PhoneNumber"] == "254112345678"
    assert first.provider_ref != second.provider_ref
    assert [e["path"] for e in daraja.mock.request_log()].count("/oauth/v1/generate") == 1  # cached in-process


def test_a_number_that_is_not_m_pesa_fails_the_attempt_with_a_reason(mpesa_app, daraja):
    customer = CustomerFactory()

    attempt, _ = start_payment(customer.id, amount_cents=10000, phone="+44 20 7946 0958")

    assert (attempt.status, attempt.failure_reason) == ("failed", "That phone number is not an M-Pesa number.")
    assert daraja.sent(PUSH) == []


def test_daraja_unreachable_fails_the_attempt_with_a_readable_reason(make_app, daraja):
    with clean_context(make_app(**mpesa_settings(f"http://127.0.0.1:{free_port()}"))):
        enable_mpesa()
        customer = CustomerFactory()

        attempt, _ = start_payment(customer.id, amount_cents=10000)

        assert (attempt.status, attempt.failure_reason, attempt.provider_ref) == ("failed", UNREACHABLE, None)
        assert db.session.get(Customer, customer.id).status == "active"
        assert db.session.query(PaymentAttempt).count() == 1


@pytest.mark.parametrize(("raw", "expected"), [
    ("0712345678", "254712345678"),
    ("0712 345 678", "254712345678"),
    ("0112-345-678", "254112345678"),
    ("+254712345678", "254712345678"),
    ("+254 (712) 345.678", "254712345678"),
    ("254712345678", "254712345678"),
    ("254112345678", "254112345678"),
])
def test_kenyan_mobile_numbers_are_normalised_for_daraja(raw, expected):
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", [
    None, "", "   ", "0712", "07123456789", "0812345678", "0212345678", "2540712345678", "+255712345678",
    "712345678", "+2547123456789", "0712\x00345678", "0712345678\x00", "07１2345678", "٠٧١٢٣٤٥٦٧٨",
    "0712345678\n", "1" * 10_000, "0712345678" * 1000, "tel:0712345678", "+254 712 345 678 ext 2",
])
def test_anything_else_is_refused_with_a_phone_field_error(raw):
    with pytest.raises(Invalid) as refused:
        normalise_phone(raw)
    assert set(refused.value.details) == {"phone"}


def test_a_second_pay_while_the_phone_prompt_is_open_does_not_ring_the_phone_again(mpesa_app, daraja):
    owed = suspended_for_non_payment(total_cents=150000)
    first, _ = start_payment(owed["customer_id"], owed["invoice_id"], phone="0712 345 678")

    again, token = commit_once(create_attempt, owed["customer_id"], "mpesa", invoice_id=owed["invoice_id"],
                               phone=first.phone)

    assert (again.id, token) == (first.id, None)  # the same attempt: the view shows its status, no new push
    assert len(daraja.sent(PUSH)) == 1
    # Once that prompt has failed, paying again rings the phone again.
    db.session.execute(update(PaymentAttempt).where(PaymentAttempt.id == first.id).values(status="failed"))
    db.session.commit()
    third, _ = start_payment(owed["customer_id"], owed["invoice_id"], phone="0712 345 678")
    assert third.id != first.id and len(daraja.sent(PUSH)) == 2
