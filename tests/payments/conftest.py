"""Fixtures for payments online: an app that offers Stripe, the local Stripe (localstripe + Checkout), a served app
that receives its webhooks, and a customer cut off for an unpaid invoice who pays it online."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.devserver import free_port, serve_in_background
from isp_admin.extensions import db
from isp_admin.models import Invoice, Payment, PaymentAttempt, PaymentProviderSetting, ProviderEvent, Subscription
from isp_admin.services.billing import invoices
from isp_admin.services.payments import attempts
from isp_admin.services.platform.clock import today
from tests.conftest import clean_context
from tests.factories import CustomerFactory, SubscriptionFactory
from tests.support.stripe_fake import StripeFake

STRIPE_KEY = "sk_test_isp_admin_tests"
STRIPE_SECRET = "whsec_isp_admin_tests"


def stripe_config(api_base: str) -> dict:
    """The config overrides that make Stripe configured (the API at `api_base`)."""
    return {"STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "STRIPE_API_BASE": api_base}


def offer(provider: str) -> None:
    """Switch a provider on, as staff do on the provider settings page."""
    db.session.add(PaymentProviderSetting(provider=provider, enabled=True, updated_by="test"))
    db.session.commit()


@pytest.fixture
def stripe_app(make_app):
    """An app offering Stripe whose API address answers nobody: these tests sign their own events."""
    with clean_context(make_app(**stripe_config(f"http://127.0.0.1:{free_port()}"))) as app:
        offer("stripe")
        yield app


@pytest.fixture
def stripe_fake():
    """localstripe plus Checkout Sessions on a free loopback port."""
    with StripeFake() as fake:
        yield fake


@dataclass
class LiveStripe:
    app: object
    base: str  # our app, served
    fake: StripeFake


@pytest.fixture
def stripe_live(make_app, stripe_fake):
    """An app offering Stripe at the local fake, served on loopback, with the fake's webhooks pointed at it."""
    with clean_context(make_app(**stripe_config(stripe_fake.base))) as app:
        offer("stripe")
        with serve_in_background(app) as base:
            yield LiveStripe(app, base, stripe_fake)


@dataclass
class Debtor:
    """A customer cut off for non-payment, with the overdue invoice that did it (ids only: rows are read fresh)."""

    customer_id: int
    subscription_id: int
    invoice_id: int
    invoice_number: str
    total_cents: int


def make_debtor(cents: int = 5800) -> Debtor:
    """Insert a customer suspended for non-payment of an invoice issued 40 days ago (overdue, past grace)."""
    customer = CustomerFactory(status="suspended")
    sub = SubscriptionFactory(customer=customer, status="suspended", suspension_reason="non_payment",
                              start_date=today() - timedelta(days=70), billing_day=1,
                              next_bill_date=today() + timedelta(days=1))
    day = today() - timedelta(days=40)
    draft = invoices.create_draft(customer.id, [{"description": "Internet service", "quantity": 1,
                                                 "unit_price_cents": cents, "tax_rate_bp": 0}], day)
    invoice = invoices.issue(draft.id, day)
    db.session.commit()
    return Debtor(customer.id, sub.id, invoice.id, invoice.number, invoice.total_cents)


def start_attempt(debtor: Debtor, session_id: str = "cs_test_session_one", top_up: int | None = None) -> PaymentAttempt:
    """A committed pending Stripe attempt for the debtor's invoice (or a top-up of `top_up`), as if its Checkout
    Session were created."""
    target = {"amount_cents": top_up} if top_up else {"invoice_id": debtor.invoice_id}
    attempt, _token = attempts.create_attempt(debtor.customer_id, "stripe", **target)
    attempt.provider_ref, attempt.redirect_url = session_id, f"https://checkout.example/{session_id}"
    db.session.commit()
    return attempt


def count(model, *where) -> int:
    """Committed rows of `model` (the test's session reads afresh)."""
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def payments_of(customer_id: int) -> list[Payment]:
    db.session.rollback()
    return list(db.session.scalars(select(Payment).where(Payment.customer_id == customer_id).order_by(Payment.id)))


def events() -> list[ProviderEvent]:
    db.session.rollback()
    return list(db.session.scalars(select(ProviderEvent).order_by(ProviderEvent.id)))


def subscription(sub_id: int) -> Subscription:
    db.session.rollback()
    return db.session.get(Subscription, sub_id)


def invoice(invoice_id: int) -> Invoice:
    db.session.rollback()
    return db.session.get(Invoice, invoice_id)

