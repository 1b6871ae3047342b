"""Portal sign-in: by account number or email, one answer for every failure, throttling, sessions apart from staff."""
from __future__ import annotations

import re

from werkzeug import security

from isp_admin.extensions import db
from isp_admin.models.portal import PortalAccount
from isp_admin.services.identity import users
from tests.factories import PASSWORD, CustomerFactory
from tests.portal.conftest import portal_customer, portal_sign_in
from tests.support.auth import unique_address

FAILED = "Invalid account number, email or password."


def _signed_in(client) -> bool:
    response = client.get("/portal/")
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/portal/login")
        return False
    assert response.status_code == 200
    return True


def test_sign_in_by_account_number_and_by_email(app):
    customer, _ = portal_customer(email="ann@mail.example")
    by_number, by_email = app.test_client(), app.test_client()
    assert portal_sign_in(by_number, customer.account_number.lower()).status_code == 302
    assert portal_sign_in(by_email, "ANN@mail.example").status_code == 302
    assert _signed_in(by_number) and _signed_in(by_email)
    page = by_email.get("/portal/").get_data(as_text=True)
    assert customer.account_number in page


def test_every_failure_gets_the_same_answer(app, client):
    customer, _ = portal_customer()
    no_password = CustomerFactory()
    db.session.add(PortalAccount(customer_id=no_password.id))
    db.session.commit()
    answers = [portal_sign_in(client, identifier, password)
               for identifier, password in [(customer.account_number, "wrong password here"),
                                            ("C99999999", PASSWORD), ("nobody@mail.example", PASSWORD),
                                            (no_password.account_number, PASSWORD)]]
    assert {a.status_code for a in answers} == {200}
    assert all(FAILED in a.get_data(as_text=True) for a in answers)
    assert not _signed_in(client)


def test_unknown_identifiers_check_a_dummy_hash_of_the_real_method(app, client, monkeypatch):
    checked = []
    real = security.check_password_hash

    def spy(pwhash, password):
        checked.append(pwhash.split("$", 1)[0])
        return real(pwhash, password)

    monkeypatch.setattr(users, "check_password_hash", spy)  # the one constant-time check staff sign-in uses too
    portal_sign_in(client, "C00000404", PASSWORD)
    portal_sign_in(client, "nobody@mail.example", PASSWORD)
    assert checked == [app.config["PASSWORD_HASH_METHOD"]] * 2


def test_failures_throttle_that_identifier_from_that_address_only(app):
    customer, _ = portal_customer()
    attacker, owner = app.test_client(), app.test_client()
    address = unique_address()
    for _ in range(app.config["MAX_FAILED_LOGINS"]):
        assert portal_sign_in(attacker, customer.account_number, "not the password at all", environ_base=address) \
            .status_code == 200
    held = portal_sign_in(attacker, customer.account_number, PASSWORD, environ_base=address)
    assert held.status_code == 429 and int(held.headers["Retry-After"]) >= 1
    assert not _signed_in(attacker)
    assert portal_sign_in(owner, customer.account_number).status_code == 302  # another address is not held


def test_a_password_change_ends_the_other_sessions(app):
    customer, _ = portal_customer()
    laptop, phone = app.test_client(), app.test_client()
    portal_sign_in(laptop, customer.account_number)
    portal_sign_in(phone, customer.account_number)
    new = "a brand new portal passphrase 42"
    changed = phone.post("/portal/profile/password",
                         data={"current_password": PASSWORD, "password": new, "confirm": new})
    assert changed.status_code == 302
    assert _signed_in(phone)
    assert not _signed_in(laptop)
    assert portal_sign_in(app.test_client(), customer.account_number, new).status_code == 302


def test_a_wrong_current_password_changes_nothing(app, client):
    customer, account = portal_customer()
    portal_sign_in(client, customer.account_number)
    new = "a brand new portal passphrase 42"
    refused = client.post("/portal/profile/password",
                          data={"current_password": "not it at all", "password": new, "confirm": new})
    assert refused.status_code == 422
    assert "The current password is wrong." in refused.get_data(as_text=True)
    assert db.session.get(PortalAccount, account.id).session_version == 1


def test_sign_out(app, client):
    customer, _ = portal_customer()
    portal_sign_in(client, customer.account_number)
    assert client.post("/portal/logout").status_code == 302
    assert not _signed_in(client)


def test_staff_and_portal_sessions_never_stand_in_for_each_other(app, client, login):
    login("admin")
    assert client.get("/").status_code == 200
    staff_cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value
    # The staff session is nobody on the portal, even under the portal cookie's name.
    assert not _signed_in(client)
    client.set_cookie(app.config["PORTAL_SESSION_COOKIE_NAME"], staff_cookie)
    assert not _signed_in(client)

    customer, _ = portal_customer()
    visitor = app.test_client()
    portal_sign_in(visitor, customer.account_number)
    assert _signed_in(visitor)
    portal_cookie = visitor.get_cookie(app.config["PORTAL_SESSION_COOKIE_NAME"]).value
    assert visitor.get("/").headers["Location"].startswith("/login")  # no staff session from a portal one
    visitor.set_cookie(app.config["SESSION_COOKIE_NAME"], portal_cookie)
    assert visitor.get("/").headers["Location"].startswith("/login")


def test_portal_pages_are_never_cached(app, client):
    customer, _ = portal_customer()
    portal_sign_in(client, customer.account_number)
    for path in ("/portal/", "/portal/invoices", "/portal/profile", "/portal/login"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path


def test_sign_in_goes_back_only_to_portal_pages(app, client):
    customer, _ = portal_customer()
    walled = client.get("/portal/pay")  # where the walled garden sends a suspended customer
    assert walled.status_code == 302
    assert walled.headers["Location"] == "/portal/login?next=/portal/pay"
    back = portal_sign_in(client, customer.account_number, query_string={"next": "/portal/pay"})
    assert back.headers["Location"] == "/portal/pay"
    for evil in ("https://evil.example/portal/", "//evil.example/portal", "/customers/", "/portal/../customers"):
        other = app.test_client()
        answer = portal_sign_in(other, customer.account_number, query_string={"next": evil})
        assert answer.headers["Location"] == "/portal/", evil


def test_csrf_is_required_on_portal_forms(make_app, app):
    guarded = make_app(WTF_CSRF_ENABLED=True)
    customer, _ = portal_customer()
    with guarded.app_context():
        client = guarded.test_client()
        assert client.post("/portal/login", data={"identifier": customer.account_number,
                                                  "password": PASSWORD}).status_code == 400
        assert client.post("/portal/password-link", data={"identifier": customer.account_number}).status_code == 400
        token = _csrf_token(client.get("/portal/login"))
        assert portal_sign_in(client, customer.account_number, data_extra={"csrf_token": token}).status_code == 302
        token = _csrf_token(client.get("/portal/profile"))  # signing in starts a fresh session, and a new token
        profile = {"email": "new@mail.example", "phone": ""}
        assert client.post("/portal/profile", data=profile).status_code == 400
        assert client.post("/portal/profile", data={**profile, "csrf_token": token}).status_code == 302


def _csrf_token(page) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def test_sign_in_and_link_requests_are_rate_limited_per_address(make_app, app):
    limited = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_LOGIN="2/minute", RATE_LIMIT_PASSWORD_RESET="2/minute")
    address = unique_address()
    with limited.app_context():
        client = limited.test_client()
        answers = [portal_sign_in(client, "C00000001", "wrong password", environ_base=address).status_code
                   for _ in range(3)]
        assert answers == [200, 200, 429]
        links = [client.post("/portal/password-link", data={"identifier": "C00000001"},
                             environ_base=address).status_code for _ in range(3)]
        assert links == [302, 302, 429]
