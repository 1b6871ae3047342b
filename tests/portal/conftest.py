"""Portal test fixtures: customers with a portal password, and a world of two customers' records for IDOR tests."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

import pytest

from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, InvoiceLine, Payment, PaymentAttempt
from isp_admin.models.portal import PlanChangeRequest, PortalAccount
from tests.factories import _PASSWORD_HASH, PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory
from tests.payments.conftest import stripe_fake, stripe_live  # noqa: F401  (fixtures of the pay flow test)
from tests.support.auth import unique_address
from tests.test_observatory import production  # noqa: F401  (the production app, for the portal's scores)

ISSUED = date(2026, 1, 10)


def portal_customer(**fields):
    """A customer whose portal password is PASSWORD; returns (customer, account)."""
    customer = CustomerFactory(**fields)
    account = PortalAccount(customer_id=customer.id, password_hash=_PASSWORD_HASH, session_version=1)
    db.session.add(account)
    db.session.commit()
    return customer, account


def portal_sign_in(client, identifier: str, password: str = PASSWORD, data_extra: dict | None = None, **kwargs):
    """Post the portal's sign-in form from an address of this test's own."""
    kwargs.setdefault("environ_base", unique_address())
    return client.post("/portal/login", data={"identifier": identifier, "password": password, **(data_extra or {})},
                       **kwargs)


@dataclass
class Records:
    """One customer's rows that portal URLs name."""

    customer: object
    account: object
    subscription: int
    invoice: int
    invoice_number: str
    credit_note: int
    credit_note_number: str
    payment_reference: str
    attempt: str
    request: int
    other_plan: int


def customer_records(n: int, other_plan) -> Records:
    """A portal customer with a live subscription, an open invoice, a credit note, a payment, an attempt, a request."""
    customer, account = portal_customer(name=f"Customer {'AB'[n]} Person{n}")
    sub = SubscriptionFactory(customer=customer)
    invoice = Invoice(number=f"INV-2026-00010{n}", customer_id=customer.id, status="open", issue_date=ISSUED,
                      due_date=date(2026, 1, 24), currency="USD", subtotal_cents=4900, tax_cents=784,
                      total_cents=5684, amount_paid_cents=1000)
    db.session.add(invoice)
    db.session.flush()
    note = CreditNote(number=f"CN-2026-00020{n}", customer_id=customer.id, invoice_id=invoice.id, kind="manual",
                      reason=f"Goodwill for customer {n}", issue_date=ISSUED, currency="USD", subtotal_cents=100,
                      tax_cents=0, amount_cents=100)
    reference = f"CASH-REF-{n}-{secrets.token_hex(3)}"
    payment = Payment(customer_id=customer.id, amount_cents=1000, currency="USD", method="cash", reference=reference,
                      received_on=date(2026, 1, 12), status="completed", recorded_by="staff@isp.example")
    attempt = PaymentAttempt(public_id=secrets.token_urlsafe(18), customer_id=customer.id, invoice_id=invoice.id,
                             provider="stripe", amount_cents=4684, currency="USD", status="pending",
                             created_by="portal")
    request = PlanChangeRequest(customer_id=customer.id, subscription_id=sub.id, plan_id=other_plan.id,
                                note=f"Faster please {n}")
    db.session.add_all([note, payment, attempt, request,
                        InvoiceLine(invoice_id=invoice.id, kind="adjustment", description=f"Router {n}", quantity=1,
                                    unit_price_cents=4900, amount_cents=4900, tax_rate_bp=1600, tax_cents=784)])
    db.session.commit()
    return Records(customer, account, sub.id, invoice.id, invoice.number, note.id, note.number, reference,
                   attempt.public_id, request.id, other_plan.id)


@pytest.fixture
def world(app):
    """Two portal customers, A and B, each with one of every record a portal URL can name."""
    other_plan = PlanFactory(name="Fibre Turbo")
    return customer_records(0, other_plan), customer_records(1, other_plan)
