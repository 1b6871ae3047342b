"""Every portal route, as customer A with B's ids (404, nothing of B's shown or changed), with A's own ids (works),
anonymous (sent to the portal's sign-in) and with a staff session (still anonymous on the portal)."""
from __future__ import annotations

import pytest

from isp_admin.extensions import db
from isp_admin.models import PaymentAttempt
from isp_admin.models.portal import PlanChangeRequest, PortalAccount
from tests.factories import _PASSWORD_HASH, PASSWORD
from tests.portal.conftest import portal_sign_in

NEW_PASSWORD = "a brand new portal passphrase 42"
PUBLIC_ENDPOINTS = {"portal.login", "portal.logout", "portal.password_link", "portal.set_password"}


def _routes(r):
    """(endpoint, method, path, form data) for every signed-in portal route, naming the ids of records `r`."""
    return [
        ("portal.dashboard", "GET", "/portal/", None),
        ("portal.invoices", "GET", "/portal/invoices", None),
        ("portal.invoice", "GET", f"/portal/invoices/{r.invoice}", None),
        ("portal.invoice_pdf", "GET", f"/portal/invoices/{r.invoice}.pdf", None),
        ("portal.credit_notes", "GET", "/portal/credit-notes", None),
        ("portal.credit_note", "GET", f"/portal/credit-notes/{r.credit_note}", None),
        ("portal.payments", "GET", "/portal/payments", None),
        ("portal.statement", "GET", "/portal/statement?start=2026-01-01&end=2026-03-01", None),
        ("portal.usage", "GET", "/portal/usage", None),
        ("portal.usage_detail", "GET", f"/portal/usage/{r.subscription}", None),
        ("portal.profile", "GET", "/portal/profile", None),
        ("portal.profile", "POST", "/portal/profile",
         {"email": "new-address@mail.example", "phone": "+254 700 111 222", "email_reminders": "y"}),
        ("portal.change_password", "POST", "/portal/profile/password",
         {"current_password": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}),
        ("portal.plan_change", "GET", "/portal/plan-change", None),
        ("portal.withdraw_plan_change", "POST", f"/portal/plan-change/{r.request}/withdraw", {}),  # before asking again
        ("portal.request_plan_change", "POST", "/portal/plan-change",
         {"subscription_id": r.subscription, "plan_id": r.other_plan, "note": "please"}),
        ("portal.pay", "GET", "/portal/pay", None),
        ("portal.pay_invoice", "POST", f"/portal/pay/{r.invoice}", {"provider": "stripe"}),
        ("portal.attempt_status", "GET", f"/portal/payments/attempt/{r.attempt}", None),
    ]


# Routes whose URL or form names one of the records: with B's ids they must answer 404.
NAMES_A_RECORD = {"portal.invoice", "portal.invoice_pdf", "portal.credit_note", "portal.usage_detail",
                  "portal.request_plan_change", "portal.withdraw_plan_change", "portal.pay_invoice",
                  "portal.attempt_status"}


def _restore_password(records) -> None:
    """Put the customer's password back (the password-change row changes it; each row signs in afresh)."""
    account = db.session.get(PortalAccount, records.account.id)
    if account.password_hash != _PASSWORD_HASH:
        account.password_hash = _PASSWORD_HASH
        db.session.commit()


def _call(client, method, path, data):
    return client.get(path) if method == "GET" else client.post(path, data=data or {})


def _traces(b) -> list[str]:
    """Text of B's that must never appear on A's pages."""
    return [b.customer.name, b.customer.account_number, b.customer.email, b.invoice_number, b.credit_note_number,
            b.payment_reference, b.attempt, "Router 1", "Goodwill for customer 1", "Faster please 1"]


def test_the_matrix_covers_every_portal_route(app, world):
    a, _ = world
    covered = {endpoint for endpoint, *_ in _routes(a)} | PUBLIC_ENDPOINTS
    portal = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint.startswith("portal.")}
    assert portal == covered
    assert all(getattr(app.view_functions[e], "access_permission", None) for e in portal)


def test_every_route_with_another_customers_ids_is_not_found_and_shows_nothing_of_theirs(app, make_app, world):
    a, b = world
    for endpoint, method, path, data in _routes(b):
        client = app.test_client()
        assert portal_sign_in(client, a.customer.account_number).status_code == 302
        response = _call(client, method, path, data)
        body = response.get_data(as_text=True)
        if endpoint in NAMES_A_RECORD:
            assert response.status_code == 404, (endpoint, response.status_code)
        else:
            assert response.status_code in (200, 302), (endpoint, response.status_code)
        for trace in _traces(b):
            assert trace not in body, (endpoint, trace)
        _restore_password(a)
    # Nothing of B's changed: their request still pending and theirs alone, no attempt started on their invoice.
    assert db.session.get(PlanChangeRequest, b.request).status == "pending"
    assert db.session.scalar(db.select(db.func.count()).select_from(PaymentAttempt)
                             .where(PaymentAttempt.customer_id == a.customer.id)) == 1
    assert db.session.scalar(db.select(db.func.count()).select_from(PlanChangeRequest)
                             .where(PlanChangeRequest.customer_id == a.customer.id)) == 1


def test_every_route_with_ones_own_ids_works(app, world):
    a, b = world
    for endpoint, method, path, data in _routes(a):
        client = app.test_client()
        assert portal_sign_in(client, a.customer.account_number).status_code == 302
        response = _call(client, method, path, data)
        assert response.status_code in (200, 302), (endpoint, response.status_code, response.data[:500])
        if response.status_code == 302:
            assert not response.headers["Location"].startswith("/portal/login"), endpoint
        if endpoint == "portal.invoice_pdf":
            assert response.mimetype == "application/pdf"
        if method == "GET" and endpoint != "portal.invoice_pdf":
            assert a.customer.account_number in response.get_data(as_text=True), endpoint
        _restore_password(a)


@pytest.mark.parametrize("staff", [False, True])
def test_signed_out_or_staff_is_sent_to_the_portal_sign_in(app, world, login, client, staff):
    a, _ = world
    if staff:
        login("admin")
        assert client.get("/").status_code == 200  # really signed in on the staff side
    for endpoint, method, path, data in _routes(a):
        response = _call(client, method, path, data)
        assert response.status_code == 302, endpoint
        assert response.headers["Location"].startswith("/portal/login"), endpoint
